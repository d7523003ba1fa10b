"""What follows when a payment changes state, beyond the payment itself.

Called by app.core.payments.record_intent inside the same transaction as the change, so a crash
can never leave the payment moved and its consequences missing (or the reverse):
- an autopay attempt follows its payment (retry scheduled or given up, notice queued);
- a bank (ACH) payment that fails after it was under way tells the billing contacts once;
- a success calls off autopay retries of invoices it paid.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core.clock import Clock
from app.core.keys import derive_key
from app.core.payment_refs import payment_reference


def after_change(
    db: Database,
    clock: Clock,
    pay: Any,
    status: str,
    failure: str | None,
    *,
    base_url: str,
    timezone: ZoneInfo,
) -> None:
    """`pay` is the payment row as it was before the change; `status` is what it is now."""
    from app.core import autopay_attempts
    from app.core.notices import enqueue_notice

    attempt = db.execute("SELECT * FROM autopay_attempts WHERE payment_id = ?", (pay["id"],)).fetchone()
    if attempt is not None:
        autopay_attempts.on_payment_status(
            db, clock, attempt, pay, status, failure, base_url=base_url, timezone=timezone
        )
    elif status == "failed" and pay["method"] == "ach":
        invoices = db.execute(
            "SELECT i.id, i.number, a.amount_minor FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
            "WHERE a.payment_id = ? AND a.kind = 'payment' ORDER BY i.number",
            (pay["id"],),
        ).fetchall()
        enqueue_notice(
            db,
            clock,
            template="ach_returned",
            client_id=pay["client_id"],
            key=derive_key("ach-returned", payment=pay["id"]),
            context={
                "amount_minor": pay["amount_minor"],
                "currency": pay["currency"],
                "reason": (failure or "your bank returned the payment").rstrip("."),
                "payment_token": pay["token"],
                "payment_reference": payment_reference(pay["id"]),
                "invoices": [{"number": r["number"], "amount_minor": r["amount_minor"]} for r in invoices],
                "pay_url": f"{base_url.rstrip('/')}/invoices",
            },
        )
    if status == "succeeded":
        autopay_attempts.close_paid_retries(db, clock, pay["id"])
