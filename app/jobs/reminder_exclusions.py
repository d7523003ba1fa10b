"""Why an invoice whose reminder step has come gets no reminder after all.

Each check takes the write transaction's database, the candidate invoice row and the MSP's local
date, and returns a reason or None. Paid, void, unapproved and in-flight invoices are already
left out by the candidate query; these cover what other parts of Cashloop decide.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from sqlite_utils import Database

from app.core.line_disputes import is_in_dispute
from app.core.payments import reminder_hold

Check = Callable[[Database, Any, date], str | None]


def _disputed(db: Database, invoice: Any, today: date) -> str | None:
    # A disputed line pauses that invoice only; the client's other invoices are still reminded.
    return "a line is in dispute" if is_in_dispute(db, invoice["id"]) else None


def _held(db: Database, invoice: Any, today: date) -> str | None:
    # Processing payments and autopay-covered invoices (those get the upcoming-charge notice).
    return reminder_hold(db, invoice["id"], today=today)


CHECKS: list[Check] = [_disputed, _held]
