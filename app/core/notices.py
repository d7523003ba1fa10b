"""Emails to a client's billing contacts about its payments (autopay, bank returns), via the outbox.

`enqueue_notice` is called inside the transaction of the change it announces. A notice may name
the invoices it is about (`unless_paid`); when all of them are paid by the time the outbox gets
to it, it is dropped (`is_moot`): nobody is told "your autopay failed" after they paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from app.core import entities
from app.core.audit import raise_exception
from app.core.clock import Clock
from app.core.outbox import enqueue


def billing_recipients(db: Database, client_id: int) -> list[str]:
    return [
        r["email"]
        for r in db.execute(
            "SELECT DISTINCT email FROM contacts WHERE client_id = ? AND role = 'billing' AND is_active = 1 "
            "AND email IS NOT NULL ORDER BY email",
            (client_id,),
        )
    ]


def enqueue_notice(
    db: Database,
    clock: Clock,
    *,
    template: str,
    client_id: int,
    key: str,
    context: dict[str, Any],
    unless_paid: Sequence[int] = (),
) -> bool:
    """Queue email `template` to the client's billing contacts once per `key`.

    Adds `client_name` and `contact_first_name` to `context`. With no billing contact, opens an
    exception instead (someone must reach the client). Returns True if queued now.
    """
    to = billing_recipients(db, client_id)
    client = db.execute("SELECT name FROM clients WHERE id = ?", (client_id,)).fetchone()
    if not to:
        raise_exception(
            db,
            clock,
            kind="notice_undeliverable",
            ref=f"{template}:{key}",
            summary=f"{client['name'] if client else client_id}: no active billing contact for a {template} "
                    "email",
        )
        return False
    first = db.execute(
        "SELECT first_name FROM contacts WHERE client_id = ? AND email = ? LIMIT 1", (client_id, to[0])
    ).fetchone()
    payload = {
        **entities.email_tag(db, client_id),  # sent in the client's entity's name
        "template": template,
        "to": to,
        "kind": template,
        "context": {
            "client_name": client["name"] if client else "",
            "contact_first_name": first["first_name"] if first else "",
            **context,
        },
    }
    if unless_paid:
        payload["unless_paid"] = sorted(set(unless_paid))
    return enqueue(db, clock, kind="email", key=key, payload=payload)


def is_moot(db: Database, payload: dict[str, Any]) -> bool:
    """True for a notice whose invoices (`unless_paid`) are all paid now."""
    ids = payload.get("unless_paid") or []
    if not ids:
        return False
    marks = ",".join("?" * len(ids))
    open_count = db.execute(
        f"SELECT COUNT(*) FROM invoice_balances WHERE invoice_id IN ({marks}) AND balance_minor > 0", ids
    ).fetchone()[0]
    return open_count == 0
