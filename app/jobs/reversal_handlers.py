"""Outbox handlers of the payments engine: reversing entries in the books and the PSA, and the guard
that drops a payment notice made moot by a payment (see app.core.notices.is_moot).

A PSA connector that can record a negative payment says so with `supports_payment_reversal`;
for one that cannot (ConnectWise: an InvoicePayment cannot be negative), the reversal becomes
an exception for a person, with the amount and invoice to correct by hand, and the entry is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any

from app.core.audit import raise_exception
from app.core.notices import is_moot
from app.core.outbox import PermanentError, RetryableError
from app.core.payment_refs import payment_reference
from app.jobs import accounting_errors
from app.services import Services
from sync.base import ConnectorError, JournalReversal, PaymentWriteBack

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any], str], Any]


def _vendor(exc: ConnectorError) -> Exception:
    if exc.retryable:
        return RetryableError(str(exc), retry_after=exc.retry_after)
    return PermanentError(str(exc))


def _reference(payload: dict[str, Any]) -> str:
    # Entries queued before payment ids were in the payload keep the token.
    return payment_reference(payload["payment_id"]) if payload.get("payment_id") else ""


def journal_reversal(services: Services) -> Handler:
    def handle(payload: dict[str, Any], key: str) -> str | None:
        from app.entity_services import for_payment_token

        books = for_payment_token(services, payload["payment_token"])  # the books of the payment's entity
        with accounting_errors.booking(books):
            sink = books.accounting
            return sink.push_reversal(
                JournalReversal(
                    kind=payload["kind"],
                    reference=payload["reference"],
                    payment_token=payload["payment_token"],
                    processor_ref=payload["processor_ref"],
                    method=payload["method"],
                    occurred_on=date.fromisoformat(payload["occurred_on"]),
                    currency=payload["currency"],
                    amount_minor=payload["amount_minor"],
                    surcharge_minor=payload["surcharge_minor"],
                    payment_reference=_reference(payload),
                    client_name=payload["client_name"],
                    client_remote_id=payload["client_remote_id"],
                    allocations=tuple((n, a) for n, a in payload["allocations"]),
                ),
                key=key,
            )

    return handle


def psa_reversal(services: Services) -> Handler:
    def handle(payload: dict[str, Any], key: str) -> str | None:
        source = services.psa
        if not source.supports_payment_writeback:
            return None
        if not getattr(source, "supports_payment_reversal", False) and payload["amount_minor"] < 0:
            with services.store.write() as db:
                raise_exception(
                    db,
                    services.clock,
                    kind="psa_reversal_by_hand",
                    ref=key,
                    summary=f"{source.kind}: reduce the payments of invoice {payload['invoice_number']} by "
                    f"{-payload['amount_minor']} {payload['currency']} minor units "
                    f"({payload['reference']}); this PSA cannot record it automatically",
                )
            return None
        try:
            return source.record_payment(
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

    return handle


def unless_moot(services: Services, send: Handler) -> Handler:
    """Wrap the email handler: a notice whose invoices are all paid by now is not sent."""

    def handle(payload: dict[str, Any], key: str) -> Any:
        if is_moot(services.store.db, payload):
            log.info("outbox: %s email %s dropped: its invoices are paid", payload.get("kind"), key)
            return None
        return send(payload, key)

    return handle


def handlers(services: Services) -> dict[str, Handler]:
    return {"journal_reversal": journal_reversal(services), "psa_reversal": psa_reversal(services)}
