"""Payments the finance team records by hand: a check, a wire or cash, allocated across invoices.

One transaction writes the payment (succeeded), its allocations, what was typed (reference,
date received, note), the same outbox effects as a card payment (receipt, PSA write-back per
invoice, journal entry) and the audit entry. The form carries a random request key, so a
double submit records one payment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from app.core.audit import audit
from app.core.clock import Clock, local_today, to_db
from app.core.emails import money
from app.core.keys import derive_key, public_token
from app.core.payment_success import apply_success
from app.core.store import Store

MANUAL_METHODS = {"check": "Check", "wire": "Wire transfer", "cash": "Cash"}
IN_FLIGHT = ("submitted", "requires_action", "processing")
OLDEST = timedelta(days=366)


class ManualPaymentError(ValueError):
    """The payment cannot be recorded as typed; the message says what to fix. Nothing was written."""


@dataclass(frozen=True)
class Allocation:
    invoice_id: int
    amount_minor: int


@dataclass(frozen=True)
class RecordedPayment:
    payment_id: int
    token: str
    amount_minor: int
    currency: str
    is_new: bool


def _check_header(method: str, reference: str, received_on: date, today: date, amount_minor: int) -> None:
    if method not in MANUAL_METHODS:
        raise ManualPaymentError("Choose how the money came: check, wire or cash.")
    if method in ("check", "wire") and not reference.strip():
        what = "check number" if method == "check" else "wire reference"
        raise ManualPaymentError(f"Enter the {what}, so the payment can be found on the bank statement.")
    if received_on > today:
        raise ManualPaymentError(f"The date received ({received_on.isoformat()}) is in the future.")
    if received_on < today - OLDEST:
        raise ManualPaymentError(f"The date received ({received_on.isoformat()}) is more than a year ago.")
    if amount_minor <= 0:
        raise ManualPaymentError("The amount received must be more than zero.")


def record_manual_payment(
    store: Store,
    clock: Clock,
    *,
    client_id: int,
    method: str,
    amount_minor: int,
    allocations: Sequence[Allocation],
    reference: str,
    received_on: date,
    note: str,
    actor: str,
    request_key: str,
    base_url: str,
    timezone: ZoneInfo,
) -> RecordedPayment:
    """Record a succeeded manual payment and enqueue its effects. Idempotent per `request_key`.

    Every allocation must be positive, on an open invoice of this client, at most what the
    invoice still owes (less what payments in flight would take), all in one currency, and the
    allocations must add up to the amount received. Raises ManualPaymentError (writes nothing).
    """
    _check_header(method, reference, received_on, local_today(clock, timezone), amount_minor)
    items = [a for a in allocations if a.amount_minor != 0]
    if not items:
        raise ManualPaymentError("Allocate the payment to at least one invoice.")
    if len({a.invoice_id for a in items}) != len(items):
        raise ManualPaymentError("An invoice appears twice in the allocation.")
    idem_key = derive_key("manual-payment", request=request_key)
    with store.write() as db:
        existing = db.execute(
            "SELECT id, token, amount_minor, currency FROM payments WHERE idem_key = ?", (idem_key,)
        ).fetchone()
        if existing is not None:
            return RecordedPayment(
                existing["id"],
                existing["token"],
                existing["amount_minor"],
                existing["currency"],
                is_new=False,
            )
        marks = ",".join("?" * len(items))
        rows = {
            r["id"]: r
            for r in db.execute(
                f"SELECT i.id, i.number, i.kind, i.status, i.currency, b.balance_minor, "
                f"(SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a JOIN payments p "
                f" ON p.id = a.payment_id WHERE a.invoice_id = i.id AND p.status IN {IN_FLIGHT}) "
                f"AS reserved_minor "
                f"FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id "
                f"WHERE i.client_id = ? AND i.id IN ({marks})",
                (client_id, *[a.invoice_id for a in items]),
            )
        }
        if len(rows) != len(items):
            raise ManualPaymentError("One of the invoices does not belong to this client.")
        currencies = {r["currency"] for r in rows.values()}
        if len(currencies) != 1:
            raise ManualPaymentError("Invoices in different currencies need separate payments.")
        currency = currencies.pop()
        for a in items:
            inv = rows[a.invoice_id]
            if inv["status"] != "open" or inv["kind"] == "credit_memo":
                raise ManualPaymentError(f"Invoice {inv['number']} is not open for payment.")
            if a.amount_minor < 0:
                raise ManualPaymentError(f"The amount for invoice {inv['number']} cannot be negative.")
            available = inv["balance_minor"] - inv["reserved_minor"]
            if a.amount_minor > available:
                raise ManualPaymentError(
                    f"Invoice {inv['number']} has {money(max(available, 0), currency)} left to pay; "
                    f"{money(a.amount_minor, currency)} is more than that."
                )
        allocated = sum(a.amount_minor for a in items)
        if allocated != amount_minor:
            raise ManualPaymentError(
                f"The allocations add up to {money(allocated, currency)} but the payment is "
                f"{money(amount_minor, currency)}; allocate all of it."
            )
        now = to_db(clock.utc_now())
        token = public_token()
        cur = db.execute(
            "INSERT INTO payments (token, client_id, method, amount_minor, currency, status, processor, "
            "idem_key, initiated_by, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', 'manual', ?, ?, ?, ?)",
            (token, client_id, method, amount_minor, currency, idem_key, actor, now, now),
        )
        payment_id = int(cur.lastrowid)
        for a in items:
            db.execute(
                "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, kind, source_ref, "
                "created_at) VALUES (?, ?, ?, ?, 'payment', ?, ?)",
                (
                    payment_id,
                    a.invoice_id,
                    a.amount_minor,
                    currency,
                    f"payment-{payment_id}-{a.invoice_id}",
                    now,
                ),
            )
        db.execute(
            "INSERT INTO manual_payments (payment_id, reference, received_on, note, recorded_by) "
            "VALUES (?, ?, ?, ?, ?)",
            (payment_id, reference.strip()[:100], received_on.isoformat(), note.strip()[:500], actor),
        )
        payment = db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        apply_success(db, clock, payment, base_url=base_url, timezone=timezone)
        audit(
            db,
            clock,
            actor=actor,
            action="payment.recorded_manually",
            target=f"payment:{payment_id}",
            detail={
                "method": method,
                "reference": reference.strip(),
                "received_on": received_on.isoformat(),
                "amount_minor": amount_minor,
                "currency": currency,
                "allocations": {rows[a.invoice_id]["number"]: a.amount_minor for a in items},
            },
        )
    return RecordedPayment(payment_id, token, amount_minor, currency, is_new=True)
