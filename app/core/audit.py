"""Audit log and the exceptions queue: what happened, and what a person must decide."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from app.core.clock import Clock, to_db


def audit(db: Database, clock: Clock, *, actor: str, action: str, target: str | None = None,
          detail: dict[str, Any] | None = None) -> None:
    db.execute(
        "INSERT INTO audit_log (at, actor, action, target, detail_json) VALUES (?, ?, ?, ?, ?)",
        (to_db(clock.utc_now()), actor, action, target, json.dumps(detail or {}, default=str)),
    )


def raise_exception(db: Database, clock: Clock, *, kind: str, ref: str, summary: str,
                    detail: dict[str, Any] | None = None) -> bool:
    """Open an exception for a person; returns False if the same (kind, ref) is already open."""
    cur = db.execute(
        "INSERT INTO exceptions (kind, ref, summary, detail_json, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, ref) DO NOTHING",
        (kind, ref, summary, json.dumps(detail or {}, default=str), to_db(clock.utc_now())),
    )
    return cur.rowcount == 1
