"""Stripe disputes (chargebacks, and ACH debits returned after they succeeded).

Stripe takes the disputed amount back when a dispute opens (needs_response, under_review) and
gives it back if the dispute is won. The ledger follows: on the first sight of a dispute that
holds the funds, the allocations are reversed (app.core.reversals) and the invoice reopens; when
it is won they are reinstated. Inquiries (warning_*) move no money and are only recorded. Every
dispute opens an exception for a person. `apply_dispute` is idempotent and takes the dispute's
current state, so duplicated or reordered webhooks end in the same place.
"""

from __future__ import annotations

from typing import Any

from app.core.audit import audit, raise_exception
from app.core.clock import Clock, local_today, to_db
from app.core.reversals import Line, reinstate, retained_minor, reverse
from app.core.store import Store

FUNDS_WITHDRAWN = ("needs_response", "under_review", "lost")


def apply_dispute(
    store: Store,
    clock: Clock,
    *,
    payment_id: int,
    dispute_id: str,
    charge_id: str,
    amount_minor: int,
    currency: str,
    status: str,
    reason: str,
    timezone: Any,
) -> str:
    """Bring our record of dispute `dispute_id` to Stripe's current `status`; returns what changed:
    "withdrawn", "reinstated", "recorded" or "unchanged"."""
    today = local_today(clock, timezone).isoformat()
    now = to_db(clock.utc_now())
    with store.write() as db:
        pay = db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        row = db.execute("SELECT * FROM disputes WHERE processor_ref = ?", (dispute_id,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO disputes (processor_ref, payment_id, charge_ref, amount_minor, currency, "
                "reason, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dispute_id, payment_id, charge_id, amount_minor, currency, reason, status, now, now),
            )
            raise_exception(
                db,
                clock,
                kind="dispute",
                ref=f"dispute:{dispute_id}",
                summary=f"payment {pay['token']} is disputed ({reason or 'no reason given'}): "
                f"{amount_minor} {currency} minor units; answer it in Stripe",
            )
            row = db.execute("SELECT * FROM disputes WHERE processor_ref = ?", (dispute_id,)).fetchone()
            changed = "recorded"
        else:
            changed = "unchanged" if row["status"] == status else "recorded"
            db.execute(
                "UPDATE disputes SET status = ?, updated_at = ? WHERE id = ?", (status, now, row["id"])
            )
        if status in FUNDS_WITHDRAWN and row["withdrawn_minor"] == 0 and pay["status"] == "succeeded":
            take = min(amount_minor, retained_minor(db, pay))
            if take > 0:
                _, surcharge_part = reverse(
                    db,
                    clock,
                    pay,
                    amount_minor=take,
                    kind="dispute",
                    ref=dispute_id,
                    occurred_on=today,
                    actor="stripe",
                    processor_ref=charge_id,
                )
                db.execute(
                    "UPDATE disputes SET withdrawn_minor = ?, surcharge_minor = ? WHERE id = ?",
                    (take, surcharge_part, row["id"]),
                )
                changed = "withdrawn"
        elif status == "won" and row["withdrawn_minor"] > 0 and not row["is_reinstated"]:
            lines = [
                Line(r["invoice_id"], r["number"], -r["amount_minor"])
                for r in db.execute(
                    "SELECT a.invoice_id, a.amount_minor, i.number FROM allocations a JOIN invoices i "
                    "ON i.id = a.invoice_id WHERE a.payment_id = ? AND a.kind = 'dispute' AND a.source_ref "
                    "LIKE ?",
                    (payment_id, f"dispute-{dispute_id}-%"),
                )
            ]
            reinstate(
                db,
                clock,
                pay,
                lines,
                row["surcharge_minor"],
                ref=dispute_id,
                occurred_on=today,
                actor="stripe",
                processor_ref=charge_id,
            )
            db.execute("UPDATE disputes SET is_reinstated = 1 WHERE id = ?", (row["id"],))
            changed = "reinstated"
        if changed != "unchanged":
            audit(
                db,
                clock,
                actor="stripe",
                action=f"dispute.{status}",
                target=f"payment:{payment_id}",
                detail={"dispute": dispute_id, "amount_minor": amount_minor, "result": changed},
            )
        return changed
