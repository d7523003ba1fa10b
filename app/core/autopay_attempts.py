"""Autopay attempts: written before Stripe is called, moved by what the payment becomes.

`start_attempt` writes, in one transaction, the pending payment with its allocations and the
attempt row. (invoice_set, attempt_no) is UNIQUE and the idempotency key is derived from it, so
a second run (or a restarted one) cannot make a second attempt of the same number: the insert
fails and nothing is charged. `on_payment_status` is called by app.core.payments.record_intent,
inside its transaction, whenever the attempt's payment changes state; it schedules the retry or
gives up, and queues the notice, in that same transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core import autopay
from app.core.audit import audit, raise_exception
from app.core.clock import Clock, local_today, to_db
from app.core.emails import date_long
from app.core.keys import derive_key
from app.core.notices import enqueue_notice
from app.core.payment_refs import payment_reference
from app.core.payments import PayItem, PaymentRequestError, start_payment
from app.core.store import Store

log = logging.getLogger(__name__)


def attempt_key(invoice_ids: Sequence[int], attempt_no: int) -> str:
    """The idempotency key of an attempt: the same invoices and number always give the same key."""
    return derive_key("autopay", invoices=sorted(invoice_ids), attempt=attempt_no)


def start_attempt(
    store: Store,
    clock: Clock,
    charge: autopay.PlannedCharge,
    *,
    retry_days: Sequence[int],
    run_time: str,
    tz: ZoneInfo,
    approval_threshold: str = "",
) -> int | None:
    """Write the attempt and its pending payment; returns the payment id, or None when another run
    already made this attempt or the invoices can no longer be charged (nothing is written then)."""
    try:
        with store.write() as db:
            prev = None
            if charge.retry_of is not None:
                prev = db.execute(
                    "SELECT * FROM autopay_attempts WHERE id = ? AND status = 'failed' AND next_retry_at IS "
                    "NOT NULL",
                    (charge.retry_of,),
                ).fetchone()
                if prev is None:
                    return None  # already retried or closed by someone else
            plan = start_payment(
                store,
                clock,
                client_id=charge.client_id,
                items=[PayItem(it.invoice_id, it.amount_minor) for it in charge.items],
                initiated_by="autopay",
                allow_partial=True,
                minimum_partial="0",
                method=charge.method.payment_method,
                surcharge_minor=charge.surcharge_minor,
                payment_method_ref=charge.method.processor_ref,
                approval_threshold=approval_threshold,  # the engine refuses an unapproved invoice too
            )
            attempt_no = (
                1
                + db.execute(
                    "SELECT COALESCE(MAX(attempt_no), 0) FROM autopay_attempts WHERE invoice_set = ?",
                    (charge.invoice_set,),
                ).fetchone()[0]
            )
            key = attempt_key(charge.invoice_ids, attempt_no)
            db.execute("UPDATE payments SET idem_key = ? WHERE id = ?", (key, plan.payment_id))
            now = to_db(clock.utc_now())
            db.execute(
                "INSERT INTO autopay_attempts (client_id, invoice_set, attempt_no, idem_key, payment_id, "
                "payment_method_id, prev_attempt_id, retry_no, chain_started_on, retry_plan_json, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    charge.client_id,
                    charge.invoice_set,
                    attempt_no,
                    key,
                    plan.payment_id,
                    charge.method.id,
                    prev["id"] if prev else None,
                    prev["retry_no"] + 1 if prev else 0,
                    prev["chain_started_on"] if prev else local_today(clock, tz).isoformat(),
                    prev["retry_plan_json"]
                    if prev
                    else json.dumps({"retry_days": list(retry_days), "run_time": run_time}),
                    now,
                    now,
                ),
            )
            if prev is not None:
                db.execute(
                    "UPDATE autopay_attempts SET next_retry_at = NULL, updated_at = ? WHERE id = ?",
                    (now, prev["id"]),
                )
            audit(
                db,
                clock,
                actor="autopay",
                action="autopay.attempt_started",
                target=f"payment:{plan.payment_id}",
                detail={
                    "invoices": [it.number for it in charge.items],
                    "attempt": attempt_no,
                    "amount_minor": plan.amount_minor,
                    "currency": plan.currency,
                },
            )
            return plan.payment_id
    except (PaymentRequestError, sqlite3.IntegrityError) as exc:
        log.info("autopay: not starting %s for client %s: %s", charge.invoice_set, charge.client_id, exc)
        return None


def mark_submitted(db: Database, clock: Clock, payment_id: int) -> None:
    db.execute(
        "UPDATE autopay_attempts SET status = 'submitted', updated_at = ? WHERE payment_id = ? "
        "AND status = 'pending'",
        (to_db(clock.utc_now()), payment_id),
    )


def _invoices(db: Database, payment_id: int) -> list[Any]:
    return db.execute(
        "SELECT i.id, i.number, i.token, a.amount_minor, b.balance_minor FROM allocations a "
        "JOIN invoices i ON i.id = a.invoice_id JOIN invoice_balances b ON b.invoice_id = i.id "
        "WHERE a.payment_id = ? AND a.kind = 'payment' ORDER BY i.number",
        (payment_id,),
    ).fetchall()


def _context(db: Database, pay: Any, invoices: list[Any]) -> dict[str, Any]:
    method = db.execute(
        "SELECT * FROM payment_methods WHERE processor_ref = ?", (pay["payment_method_ref"],)
    ).fetchone()
    return {
        "amount_minor": pay["amount_minor"],
        "surcharge_minor": pay["surcharge_minor"],
        "currency": pay["currency"],
        "method_label": autopay.method_view(method).label if method else "your saved payment method",
        "is_bank": pay["method"] == "ach",
        "payment_token": pay["token"],
        "payment_reference": payment_reference(pay["id"]),
        "invoices": [{"number": r["number"], "amount_minor": r["amount_minor"]} for r in invoices],
    }


def on_payment_status(
    db: Database,
    clock: Clock,
    attempt: Any,
    pay: Any,
    status: str,
    failure: str | None,
    *,
    base_url: str,
    timezone: ZoneInfo,
) -> None:
    """Follow the attempt's payment to `status` (inside record_intent's transaction)."""
    now = to_db(clock.utc_now())
    invoices = _invoices(db, pay["id"])
    ids = [r["id"] for r in invoices]
    if status in ("submitted", "processing", "succeeded", "canceled"):
        db.execute(
            "UPDATE autopay_attempts SET status = ?, next_retry_at = NULL, updated_at = ? WHERE id = ?",
            (status, now, attempt["id"]),
        )
        return
    if status == "requires_action":
        db.execute(
            "UPDATE autopay_attempts SET status = 'requires_action', updated_at = ? WHERE id = ?",
            (now, attempt["id"]),
        )
        enqueue_notice(
            db,
            clock,
            template="autopay_action_required",
            client_id=pay["client_id"],
            key=derive_key("autopay-action", attempt=attempt["id"]),
            unless_paid=ids,
            context={
                **_context(db, pay, invoices),
                "complete_url": f"{base_url.rstrip('/')}/payments/{pay['token']}/authenticate",
            },
        )
        return
    # failed
    still_open = [r for r in invoices if r["balance_minor"] > 0]
    plan = json.loads(attempt["retry_plan_json"])
    retry_days: list[int] = plan["retry_days"]
    base = {"status": "failed", "failure_reason": failure, "updated_at": now}
    if not still_open:
        _update(db, attempt["id"], **base, closed_reason="paid otherwise")
        return
    context = {**_context(db, pay, invoices), "reason": (failure or "the payment was declined").rstrip(".")}
    if attempt["retry_no"] < len(retry_days):
        retry_on = date.fromisoformat(attempt["chain_started_on"]) + timedelta(
            days=retry_days[attempt["retry_no"]]
        )
        retry_on = max(retry_on, local_today(clock, timezone) + timedelta(days=1))
        retry_at = autopay.local_run_at(retry_on, plan["run_time"], timezone)
        _update(db, attempt["id"], **base, next_retry_at=to_db(retry_at))
        enqueue_notice(
            db,
            clock,
            template="autopay_failed",
            client_id=pay["client_id"],
            key=derive_key("autopay-failed", attempt=attempt["id"]),
            unless_paid=ids,
            context={
                **context,
                "retry_on": date_long(retry_on),
                "pay_url": f"{base_url.rstrip('/')}/invoices",
            },
        )
        return
    _update(db, attempt["id"], **base, is_final=1, closed_reason="retries exhausted")
    for r in still_open:
        raise_exception(
            db,
            clock,
            kind="autopay_exhausted",
            ref=f"invoice:{r['id']}:attempt:{attempt['id']}",
            summary=f"autopay gave up on invoice {r['number']} after {attempt['retry_no'] + 1} attempts: "
            f"{failure or 'declined'}; it is back on normal reminders",
        )
    enqueue_notice(
        db,
        clock,
        template="autopay_final",
        client_id=pay["client_id"],
        key=derive_key("autopay-final", attempt=attempt["id"]),
        unless_paid=ids,
        context={**context, "pay_url": f"{base_url.rstrip('/')}/invoices"},
    )
    audit(
        db,
        clock,
        actor="autopay",
        action="autopay.exhausted",
        target=f"payment:{pay['id']}",
        detail={"invoices": [r["number"] for r in still_open]},
    )


def _update(db: Database, attempt_id: int, **values: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE autopay_attempts SET {cols} WHERE id = ?", (*values.values(), attempt_id))


def close_paid_retries(db: Database, clock: Clock, payment_id: int) -> int:
    """After `payment_id` succeeded: retries scheduled for invoices now all paid are called off."""
    rows = db.execute(
        "SELECT DISTINCT t.id, t.payment_id FROM autopay_attempts t JOIN allocations a ON a.payment_id = "
        "t.payment_id "
        "WHERE t.next_retry_at IS NOT NULL AND a.invoice_id IN "
        "(SELECT invoice_id FROM allocations WHERE payment_id = ?)",
        (payment_id,),
    ).fetchall()
    closed = 0
    for t in rows:
        if all(r["balance_minor"] <= 0 for r in _invoices(db, t["payment_id"])):
            _update(
                db,
                t["id"],
                next_retry_at=None,
                closed_reason="paid otherwise",
                updated_at=to_db(clock.utc_now()),
            )
            closed += 1
    return closed


def close_unretriable(store: Store, clock: Clock, attempt_id: int, reason: str) -> None:
    """Stop a scheduled retry that has nothing left to charge (paid, voided, autopay turned off)."""
    with store.write() as db:
        _update(db, attempt_id, next_retry_at=None, closed_reason=reason, updated_at=to_db(clock.utc_now()))


def stale_retries(db: Database) -> list[Any]:
    """Scheduled retries whose invoices are all paid or void: nothing is left for them to charge."""
    return db.execute(
        "SELECT t.id FROM autopay_attempts t WHERE t.next_retry_at IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "JOIN invoice_balances b ON b.invoice_id = i.id WHERE a.payment_id = t.payment_id "
        "AND a.kind = 'payment' AND i.status = 'open' AND b.balance_minor > 0)"
    ).fetchall()
