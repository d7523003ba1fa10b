"""Sending a payment's receipt again, on request of the finance team.

The receipt a payment's success enqueued is copied into a new outbox entry whose key is derived
from ("receipt-resend", payment, n), n counting the resends: each resend is one email, and a
retried delivery of that entry is still one.
"""

from __future__ import annotations

import json

from app.core.audit import audit
from app.core.clock import Clock
from app.core.keys import derive_key
from app.core.outbox import enqueue
from app.core.payment_refs import payment_reference
from app.core.store import Store


class ResendError(ValueError):
    """There is no receipt to send again; the message says why."""


def resend_receipt(store: Store, clock: Clock, payment_id: int, *, actor: str) -> int:
    """Enqueue receipt resend number n (returned) for a succeeded payment; raises ResendError."""
    with store.write() as db:
        pay = db.execute("SELECT status, token FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if pay is None:
            raise ResendError("No such payment.")
        if pay["status"] != "succeeded":
            raise ResendError("Only a succeeded payment has a receipt.")
        original = db.execute(
            "SELECT payload_json FROM outbox WHERE idem_key = ?", (derive_key("receipt", payment=payment_id),)
        ).fetchone()
        if original is None:
            raise ResendError("This payment had no receipt: its client has no billing contact with an email.")
        n = 1 + int(
            db.execute(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'payment.receipt_resent' AND target = ?",
                (f"payment:{payment_id}",),
            ).fetchone()[0]
        )
        payload = json.loads(original["payload_json"])
        # A receipt first queued before the reference was in emails gets it now.
        payload.setdefault("context", {}).setdefault("payment_reference", payment_reference(payment_id))
        enqueue(
            db,
            clock,
            kind="email",
            key=derive_key("receipt-resend", payment=payment_id, n=n),
            payload=payload,
        )
        audit(
            db,
            clock,
            actor=actor,
            action="payment.receipt_resent",
            target=f"payment:{payment_id}",
            detail={"n": n, "to": payload.get("to", [])},
        )
    return n
