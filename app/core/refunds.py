"""Refunds, full or partial, started by an admin or found at Stripe.

Same order as a charge: the refund row is written (pending) before Stripe is called, with a
derived idempotency key; only the caller that flips it to submitted calls Stripe; Stripe's
answer is recorded by `record_refund`, which reverses the allocations (app.core.reversals) and
queues the journal and PSA notices in the same transaction. A refund made directly at Stripe
(the dashboard) arrives as `charge.refunded` and is recorded by `record_external_refund`.

`refund(services, ...)` is the admin console's entry point; it is the only function here that
calls the processor (through `services.gateway`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from app.core.audit import audit, raise_exception
from app.core.clock import Clock, from_db, local_today, to_db
from app.core.keys import derive_key, public_token
from app.core.reversals import ReversalError, retained_minor, reverse
from app.core.store import Store

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)
OPEN_DISPUTE = ("needs_response", "under_review", "warning_needs_response", "warning_under_review")
KEY_LIFETIME_SECONDS = 23 * 3600  # Stripe forgets idempotency keys after about 24 h


class RefundError(ValueError):
    """The refund cannot be made as asked; the message says why, for the admin. Nothing was sent."""


@dataclass(frozen=True)
class RefundPlan:
    refund_id: int
    token: str
    payment_id: int
    intent_id: str
    amount_minor: int
    currency: str
    idem_key: str


@dataclass(frozen=True)
class RefundResult:
    refund_token: str
    status: str  # succeeded | submitted (outcome not known yet; resolved later) | failed
    message: str = ""


def _payment(db: Database, payment_token: str) -> Any:
    return db.execute("SELECT * FROM payments WHERE token = ?", (payment_token,)).fetchone()


def refundable_minor(db: Database, pay: Any) -> int:
    """What may still be refunded: what the payment holds less refunds not yet recorded."""
    in_flight = db.execute(
        "SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE payment_id = ? AND status IN ('pending', "
        "'submitted')",
        (pay["id"],),
    ).fetchone()[0]
    return max(0, retained_minor(db, pay) - in_flight)


def start_refund(
    store: Store, clock: Clock, *, payment_token: str, amount_minor: int, actor: str, reason: str = ""
) -> RefundPlan:
    """Write a pending refund after checking it; raises RefundError (nothing written)."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise RefundError("Enter a refund amount greater than zero.")
    with store.write() as db:
        pay = _payment(db, payment_token)
        if pay is None:
            raise RefundError("No such payment.")
        if pay["status"] != "succeeded":
            raise RefundError(f"Only a succeeded payment can be refunded; this one is {pay['status']}.")
        if not pay["processor_ref"] or pay["processor"] != "stripe" or pay["method"] not in ("card", "ach"):
            raise RefundError("This payment did not go through Stripe; refund it the way it was paid.")
        if db.execute(
            f"SELECT 1 FROM disputes WHERE payment_id = ? AND status IN {OPEN_DISPUTE}", (pay["id"],)
        ).fetchone():
            raise RefundError("This payment is disputed; it cannot be refunded while the dispute is open.")
        left = refundable_minor(db, pay)
        if amount_minor > left:
            raise RefundError(f"At most {left} minor units of this payment can still be refunded.")
        n = 1 + db.execute("SELECT COUNT(*) FROM refunds WHERE payment_id = ?", (pay["id"],)).fetchone()[0]
        key = derive_key("refund", payment=pay["id"], n=n)
        token, now = public_token(), to_db(clock.utc_now())
        cur = db.execute(
            "INSERT INTO refunds (token, payment_id, amount_minor, currency, status, idem_key, reason, "
            "actor, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
            (token, pay["id"], amount_minor, pay["currency"], key, reason, actor, now, now),
        )
        audit(
            db,
            clock,
            actor=actor,
            action="refund.started",
            target=f"payment:{pay['id']}",
            detail={"amount_minor": amount_minor, "reason": reason},
        )
        return RefundPlan(
            int(cur.lastrowid), token, pay["id"], pay["processor_ref"], amount_minor, pay["currency"], key
        )


def claim_refund(store: Store, clock: Clock, refund_id: int) -> bool:
    """pending -> submitted; True for exactly one caller, who alone may call the processor."""
    with store.write() as db:
        cur = db.execute(
            "UPDATE refunds SET status = 'submitted', updated_at = ? WHERE id = ? AND status = 'pending'",
            (to_db(clock.utc_now()), refund_id),
        )
        return cur.rowcount == 1


def record_refund(
    store: Store,
    clock: Clock,
    refund_id: int,
    *,
    processor_ref: str | None,
    processor_status: str,
    timezone: Any,
    failure: str | None = None,
) -> str:
    """Apply Stripe's answer to our refund; idempotent. Returns the refund's status afterwards.

    Stripe's succeeded and pending (on its way back) both reverse the allocations now.
    """
    with store.write() as db:
        row = db.execute("SELECT * FROM refunds WHERE id = ?", (refund_id,)).fetchone()
        if row is None or row["status"] in ("succeeded", "failed"):
            return row["status"] if row else "unknown"
        if processor_status in ("failed", "canceled"):
            db.execute(
                "UPDATE refunds SET status = 'failed', processor_ref = COALESCE(?, processor_ref), "
                "failure_reason = ?, updated_at = ? WHERE id = ?",
                (processor_ref, failure or processor_status, to_db(clock.utc_now()), refund_id),
            )
            return "failed"
        pay = db.execute("SELECT * FROM payments WHERE id = ?", (row["payment_id"],)).fetchone()
        _, surcharge_part = reverse(
            db,
            clock,
            pay,
            amount_minor=row["amount_minor"],
            kind="refund",
            ref=row["token"],
            occurred_on=local_today(clock, timezone).isoformat(),
            actor=row["actor"],
            processor_ref=processor_ref,
        )
        db.execute(
            "UPDATE refunds SET status = 'succeeded', processor_ref = ?, surcharge_minor = ?, updated_at = ? "
            "WHERE id = ?",
            (processor_ref, surcharge_part, to_db(clock.utc_now()), refund_id),
        )
        return "succeeded"


def record_external_refund(
    store: Store, clock: Clock, *, payment_id: int, processor_ref: str, amount_minor: int, timezone: Any
) -> bool:
    """Record a refund made at Stripe without Cashloop (the dashboard). Idempotent by processor_ref.

    Returns True if it was new. A refund Stripe made beyond what the payment holds is capped at
    what it holds and an exception is opened for a person.
    """
    with store.write() as db:
        if db.execute("SELECT 1 FROM refunds WHERE processor_ref = ?", (processor_ref,)).fetchone():
            return False
        pay = db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        token, now = public_token(), to_db(clock.utc_now())
        cur = db.execute(
            "INSERT INTO refunds (token, payment_id, amount_minor, currency, status, processor_ref, "
            "idem_key, "
            "reason, actor, created_at, updated_at) VALUES (?, ?, ?, ?, 'submitted', ?, ?, 'made at Stripe', "
            "'stripe', ?, ?)",
            (
                token,
                payment_id,
                amount_minor,
                pay["currency"],
                processor_ref,
                f"external-{processor_ref}",
                now,
                now,
            ),
        )
        refund_id = int(cur.lastrowid)
        try:
            record_refund(
                store,
                clock,
                refund_id,
                processor_ref=processor_ref,
                processor_status="succeeded",
                timezone=timezone,
            )
        except ReversalError as exc:
            db.execute(
                "UPDATE refunds SET status = 'failed', failure_reason = ? WHERE id = ?", (str(exc), refund_id)
            )
            raise_exception(
                db,
                clock,
                kind="refund_mismatch",
                ref=f"refund:{processor_ref}",
                summary=f"Stripe refund {processor_ref} of {amount_minor} is more than payment "
                f"{pay['token']} holds in Cashloop: {exc}",
            )
        return True


# ------------------------------------------------------------------------------- with Stripe


def refund(
    services: Services, payment_token: str, amount_minor: int, actor: str, reason: str = ""
) -> RefundResult:
    """Refund `amount_minor` (minor units) of a payment at Stripe and reverse its allocations.

    For the admin console. Raises RefundError for a refund that cannot be made (nothing sent).
    A network failure leaves the refund submitted; `resolve_refunds` asks Stripe later and never
    refunds twice. Each call is a new refund, so the admin form guards a double click itself;
    the refundable amount is re-checked inside the write transaction, so two racing calls can
    never refund more than the payment holds.
    """
    plan = start_refund(
        services.store,
        services.clock,
        payment_token=payment_token,
        amount_minor=amount_minor,
        actor=actor,
        reason=reason,
    )
    if not claim_refund(services.store, services.clock, plan.refund_id):
        return RefundResult(plan.token, "submitted", "already being sent")
    return _send(services, plan.refund_id)


def _send(services: Services, refund_id: int) -> RefundResult:
    row = services.store.one(
        "SELECT r.*, p.processor_ref AS intent_id FROM refunds r JOIN payments p ON p.id = r.payment_id "
        "WHERE r.id = ?",
        (refund_id,),
    )
    from app.entity_services import for_payment_id

    services = for_payment_id(services, row["payment_id"])  # back through the account that charged
    try:
        state = services.gateway.create_refund(
            intent_id=row["intent_id"],
            amount_minor=row["amount_minor"],
            metadata={"refund_token": row["token"]},
            key=row["idem_key"],
        )
    except Exception as exc:  # the gateway's ConnectorError: retryable means "outcome unknown"
        if getattr(exc, "retryable", True):
            log.warning("refund %s: Stripe call failed, left for recovery: %s", row["token"], exc)
            return RefundResult(
                row["token"], "submitted", "Stripe did not answer; the refund will be checked."
            )
        status = record_refund(
            services.store,
            services.clock,
            refund_id,
            processor_ref=None,
            processor_status="failed",
            timezone=services.config.tz,
            failure=str(exc),
        )
        return RefundResult(row["token"], status, str(exc))
    status = record_refund(
        services.store,
        services.clock,
        refund_id,
        processor_ref=state.refund_id,
        processor_status=state.status,
        timezone=services.config.tz,
    )
    return RefundResult(row["token"], status)


def resolve_refunds(services: Services, *, older_than_seconds: int = 120) -> int:
    """Settle refunds left pending or submitted by a crash or timeout, by asking Stripe first.

    A refund Stripe has (found by our token in its metadata) is recorded; one it does not have is
    sent again with the same idempotency key while Stripe still remembers keys, else failed.
    """
    store, clock, done = services.store, services.clock, 0
    for row in store.all(
        "SELECT r.*, p.processor_ref AS intent_id FROM refunds r JOIN payments p "
        "ON p.id = r.payment_id WHERE r.status IN ('pending', 'submitted') ORDER BY r.id"
    ):
        age = (clock.utc_now() - from_db(row["updated_at"])).total_seconds()
        if age < older_than_seconds:
            continue
        try:
            from app.entity_services import for_payment_id

            found = [
                r
                for r in for_payment_id(services, row["payment_id"]).gateway.list_refunds(
                    intent_id=row["intent_id"])
                if r.metadata.get("refund_token") == row["token"]
            ]
        except Exception as exc:
            log.warning("refund %s: recovery postponed: %s", row["token"], exc)
            continue
        if found:
            record_refund(
                store,
                clock,
                row["id"],
                processor_ref=found[0].refund_id,
                processor_status=found[0].status,
                timezone=services.config.tz,
            )
        elif (clock.utc_now() - from_db(row["created_at"])).total_seconds() < KEY_LIFETIME_SECONDS:
            if row["status"] == "pending" and not claim_refund(store, clock, row["id"]):
                continue
            _send(services, row["id"])
        else:
            record_refund(
                store,
                clock,
                row["id"],
                processor_ref=None,
                processor_status="failed",
                timezone=services.config.tz,
                failure="never reached Stripe",
            )
        done += 1
    return done
