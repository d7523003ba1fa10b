"""Outbox handler `accounting_deposit`: one Stripe payout booked as one deposit (app.core.payouts).

Each payment line names the accounting system's own record of that payment, read from
external_refs (kind 'journal_payment') when the entry is delivered, not when it was queued: the
payment may have been booked in between. A sink that needs it and finds none raises a retryable
error, so the deposit waits for the payment instead of being booked without it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from app.core.clock import to_db
from app.core.payment_refs import payment_reference
from app.entity_services import for_payment_id
from app.jobs import accounting_errors
from app.jobs.reversal_handlers import Handler
from app.services import Services
from sync.base import DepositLine, JournalDeposit


def _books(services: Services, payload: dict[str, Any]) -> Services:
    # A payout comes from one Stripe account, so any of its payments names the entity's books.
    paid = [ln["payment_id"] for ln in payload["lines"] if ln.get("payment_id")]
    return for_payment_id(services, paid[0]) if paid else services


def deposit(services: Services, payload: dict[str, Any], kind: str) -> JournalDeposit:
    """The payload as the sink sees it, with each payment's remote reference in the `kind` system."""

    def remote_ref(payment_id: int | None) -> str | None:
        if not payment_id:
            return None
        value = services.store.scalar(
            "SELECT remote_id FROM external_refs WHERE kind = 'journal_payment' AND local_id = ? "
            "AND system = ?",
            (payment_id, kind),
        )
        return str(value) if value is not None else None

    return JournalDeposit(
        payout_id=payload["payout_id"],
        arrival_on=date.fromisoformat(payload["arrival_on"]),
        currency=payload["currency"],
        amount_minor=payload["amount_minor"],
        fee_minor=payload["fee_minor"],
        lines=tuple(
            DepositLine(
                kind=ln["kind"],
                processor_ref=ln["processor_ref"],
                amount_minor=ln["amount_minor"],
                fee_minor=ln["fee_minor"],
                surcharge_minor=ln["surcharge_minor"],
                payment_token=ln["payment_token"],
                reference=ln["reference"],
                client_name=ln["client_name"],
                client_remote_id=ln["client_remote_id"],
                remote_payment_ref=remote_ref(ln["payment_id"]) if ln["kind"] == "payment" else None,
                payment_reference=payment_reference(ln["payment_id"]) if ln.get("payment_id") else "",
            )
            for ln in payload["lines"]
        ),
    )


def handler(services: Services) -> Handler:
    def handle(payload: dict[str, Any], key: str) -> str | None:
        books = _books(services, payload)
        with accounting_errors.booking(books):
            sink = books.accounting
            remote = sink.push_deposit(deposit(books, payload, sink.kind), key=key)
        with services.store.write() as db:
            db.execute(
                "INSERT INTO external_refs (kind, local_id, system, remote_id, created_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, local_id, system) DO UPDATE SET remote_id = excluded.remote_id",
                ("accounting_deposit", payload["payout_row_id"], sink.kind, remote,
                 to_db(services.clock.utc_now())),
            )
        return remote

    return handle
