"""drain_outbox: deliver queued effects (email, PSA write-back, journal entries)."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from app.core import outbox
from app.core.clock import to_db
from app.core.outbox import DrainReport, PermanentError, RetryableError
from app.core.payment_refs import payment_reference
from app.entity_services import for_email, for_payment_token
from app.jobs import accounting_deposit, accounting_errors, dispute_notes, method_detach, reversal_handlers
from app.jobs.deliver_email import send_email
from app.services import Services
from sync.base import ConnectorError, JournalPayment, PaymentWriteBack

log = logging.getLogger(__name__)


def _record_ref(services: Services, kind: str, local_id: int, system: str, remote_id: str) -> None:
    with services.store.write() as db:
        db.execute(
            "INSERT INTO external_refs (kind, local_id, system, remote_id, created_at) "
            "VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, local_id, system) DO UPDATE SET remote_id = excluded.remote_id",
            (kind, local_id, system, remote_id, to_db(services.clock.utc_now())),
        )


def _vendor(exc: ConnectorError) -> Exception:
    if exc.retryable:
        return RetryableError(str(exc), retry_after=exc.retry_after)
    return PermanentError(str(exc))


def psa_payment(services: Services):
    def handle(payload: dict[str, Any], key: str) -> str | None:
        source = services.psa
        if not source.supports_payment_writeback:
            return None
        try:
            remote = source.record_payment(
                PaymentWriteBack(
                    invoice_remote_id=payload["invoice_remote_id"],
                    amount_minor=payload["amount_minor"],
                    currency=payload["currency"],
                    paid_on=date.fromisoformat(payload["paid_on"]),
                    reference=payload["reference"],
                ),
                key=key,
            )
        except ConnectorError as exc:
            raise _vendor(exc) from exc
        _record_ref(services, "psa_payment", payload["allocation_id"], source.kind, remote)
        return remote

    return handle


def journal_payment(services: Services):
    def handle(payload: dict[str, Any], key: str) -> str | None:
        books = for_payment_token(services, payload["payment_token"])  # the books of the payment's entity
        with accounting_errors.booking(books):
            sink = books.accounting
            remote = sink.push_payment(
                JournalPayment(
                    payment_token=payload["payment_token"],
                    processor_ref=payload["processor_ref"],
                    method=payload["method"],
                    received_on=date.fromisoformat(payload["received_on"]),
                    currency=payload["currency"],
                    amount_minor=payload["amount_minor"],
                    client_name=payload["client_name"],
                    client_remote_id=payload["client_remote_id"],
                    allocations=tuple((n, a) for n, a in payload["allocations"]),
                    surcharge_minor=payload.get("surcharge_minor", 0),
                    allocation_clients=tuple((c, r) for c, r in payload.get("allocation_clients", [])),
                    payment_reference=payment_reference(payload["payment_id"]),
                ),
                key=key,
            )
        _record_ref(services, "journal_payment", payload["payment_id"], sink.kind, remote)
        return remote

    return handle


def handlers(services: Services) -> dict[str, Any]:
    return {
        "email": reversal_handlers.unless_moot(
            services, lambda p, key: send_email(for_email(services, p), p, key)  # in its entity's name
        ),
        **reversal_handlers.handlers(services),
        "psa_payment": psa_payment(services),
        "journal_payment": journal_payment(services),
        "accounting_deposit": accounting_deposit.handler(services),
        "psa_dispute_note": dispute_notes.handler(services),
        "stripe_detach_method": method_detach.handler(services),
    }


def run(services: Services, *, limit: int = 100) -> DrainReport:
    """Deliver what is due. Safe to run twice and concurrently: each entry is claimed by one runner."""
    cfg = services.config.outbox
    report = outbox.drain(
        services.store,
        services.clock,
        handlers(services),
        max_attempts=cfg.max_attempts,
        base_delay_seconds=cfg.base_delay_seconds,
        limit=limit,
        park_seconds=cfg.park_seconds,
    )
    if report.done or report.retried or report.dead or report.parked:
        log.info("outbox: %d done, %d retried, %d dead, %d waiting", report.done, report.retried, report.dead,
                 report.parked)
    return report
