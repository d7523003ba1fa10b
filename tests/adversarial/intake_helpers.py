"""Helpers of the attacks on the PSA intake (tests/adversarial/test_psa_intake_attacks*.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from app.core.keys import public_token
from app.jobs import poll_psa

OLD = "2026-03-01T00:00:00Z"  # before the frozen clock: an incremental poll does not read it again


def poll(services: Any, **kw: Any) -> poll_psa.PollReport:
    """One poll; a crash fails the test with its cause (no vendor answer may crash a poll)."""
    try:
        return poll_psa.run(services, **kw)
    except Exception as exc:
        pytest.fail(f"the poll crashed: {type(exc).__name__}: {str(exc)[:300]}")


def stamp_all(cw: Any, when: str = OLD) -> None:
    """Every record of the ConnectWise fake last changed at `when` (so the overlap does not re-read it)."""
    for table in (cw.companies, cw.contacts, cw.invoices):
        for rec in table:
            rec.setdefault("_info", {})["lastUpdated"] = when


def edit_json(edit: Callable[[Any], Any]) -> Callable[[bytes], bytes]:
    """A rewrite_next edit that works on the decoded body."""

    def apply(body: bytes) -> bytes:
        return json.dumps(edit(json.loads(body))).encode()

    return apply


def paid_through_cashloop(services: Any, remote_id: str, amount_minor: int = 500) -> None:
    """A succeeded Cashloop payment of `amount_minor` on the stored invoice `remote_id`."""
    now = "2026-03-05T12:00:00Z"
    with services.store.write() as db:
        inv = db.execute(
            "SELECT id, client_id, currency FROM invoices WHERE remote_id = ?", (remote_id,)
        ).fetchone()
        cur = db.execute(
            "INSERT INTO payments (token, client_id, method, amount_minor, currency, status, idem_key, "
            "initiated_by, created_at, updated_at, succeeded_at) "
            "VALUES (?, ?, 'card', ?, ?, 'succeeded', ?, 'test', ?, ?, ?)",
            (
                public_token(),
                inv["client_id"],
                amount_minor,
                inv["currency"],
                f"idem-{remote_id}",
                now,
                now,
                now,
            ),
        )
        db.execute(
            "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, source_ref, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (cur.lastrowid, inv["id"], amount_minor, inv["currency"], f"alloc-{remote_id}", now),
        )
