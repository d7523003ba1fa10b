"""The public door to a payment's success path, for payments that do not come from a processor.

`app.core.payments._succeed` marks the payment succeeded and writes the receipt, the PSA
write-backs and the journal entry to the outbox. Manual payments need exactly that, so they
call it through here rather than copying it (and payments.py keeps its private name).
"""

from __future__ import annotations

import sqlite3
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core import payments
from app.core.clock import Clock


def apply_success(
    db: Database, clock: Clock, payment: sqlite3.Row, *, base_url: str, timezone: ZoneInfo
) -> None:
    """Mark `payment` (a full `payments` row) succeeded and enqueue its effects, inside the caller's
    `store.write()`. The caller guarantees the payment is not already succeeded."""
    payments._succeed(db, clock, payment, now=clock.utc_now(), base_url=base_url, timezone=timezone)
