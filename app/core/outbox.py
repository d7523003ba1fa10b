"""Everything that leaves the box goes through here.

A state change and the side effects it causes are written in one transaction (`enqueue` inside
the caller's `store.write()`). `drain` claims due rows one at a time with a conditional UPDATE,
runs the handler outside any transaction, and records the outcome. Handlers receive the entry's
idempotency key and must be safe to run again with it: a crash after the handler succeeded but
before `done` was written repeats the call, never loses it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlite_utils import Database

from app.core import faults, stop_flag
from app.core.audit import raise_exception
from app.core.clock import Clock, from_db, to_db
from app.core.store import Store

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], str], str | None]
STALE_CLAIM = timedelta(minutes=10)
# The longest a vendor's Retry-After may put an entry off (sync/http.py reads no more than this).
MAX_RETRY_AFTER_SECONDS = 6 * 3600


class PermanentError(Exception):
    """A handler failure that no retry will fix (bad address, validation error). The entry is dead
    and opens an exception of `exception_kind` (ref = the outbox id) that the queue can retry."""

    def __init__(self, message: str, *, exception_kind: str = "outbox_dead") -> None:
        super().__init__(message)
        self.exception_kind = exception_kind


class RetryableError(Exception):
    """A handler failure that a later attempt may fix (timeout, 5xx, rate limit)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ParkedError(Exception):
    """The entry cannot run until a person fixes something outside it (the accounting connection
    is revoked or was never made). It waits, pending, without using up an attempt, and is never
    dead; whoever fixes the cause makes the parked entries due (see `unpark`)."""


DEFAULT_PARK_SECONDS = 300


def enqueue(db: Database, clock: Clock, *, kind: str, key: str, payload: Mapping[str, Any]) -> bool:
    """Add an effect; a second enqueue with the same key is ignored. Returns True if added."""
    now = to_db(clock.utc_now())
    cur = db.execute(
        "INSERT INTO outbox (kind, payload_json, idem_key, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING",
        (kind, json.dumps(payload, sort_keys=True, default=str), key, now, now),
    )
    return cur.rowcount == 1


@dataclass
class DrainReport:
    done: int = 0
    retried: int = 0
    dead: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempts: int, base_seconds: int, cap_seconds: int = 6 * 3600) -> timedelta:
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1)))


def _claim(store: Store, clock: Clock, row_id: int) -> bool:
    now = clock.utc_now()
    with store.write() as db:
        cur = db.execute(
            "UPDATE outbox SET status = 'running', claimed_at = ?, attempts = attempts + 1 "
            "WHERE id = ? AND (status = 'pending' OR (status = 'running' AND claimed_at < ?))",
            (to_db(now), row_id, to_db(now - STALE_CLAIM)),
        )
        return cur.rowcount == 1


def drain(store: Store, clock: Clock, handlers: Mapping[str, Handler], *, max_attempts: int,
          base_delay_seconds: int, limit: int = 100,
          park_seconds: int = DEFAULT_PARK_SECONDS) -> DrainReport:
    """Run due outbox entries. Safe to run concurrently with itself: a row is claimed by one runner."""
    report = DrainReport()
    now = clock.utc_now()
    due = store.all(
        "SELECT id FROM outbox WHERE (status = 'pending' AND next_attempt_at <= ?) "
        "OR (status = 'running' AND claimed_at < ?) ORDER BY id LIMIT ?",
        (to_db(now), to_db(now - STALE_CLAIM), limit),
    )
    for (row_id,) in due:
        if stop_flag.requested():  # SIGTERM: the entries not claimed yet wait for the next drain
            break
        if not _claim(store, clock, row_id):
            continue
        row = store.one("SELECT * FROM outbox WHERE id = ?", (row_id,))
        assert row is not None
        faults.point("during_outbox")  # claimed, not delivered: the crash tests kill here
        handler = handlers.get(row["kind"])
        try:
            if handler is None:
                raise PermanentError(f"no handler for outbox kind {row['kind']!r}")
            try:
                handler(json.loads(row["payload_json"]), row["idem_key"])
            except (PermanentError, RetryableError, ParkedError):
                raise
            except Exception as exc:
                # A bug or an unforeseen failure in one entry must not stop the run: it is retried
                # with backoff and, if it keeps failing, ends in the exceptions queue.
                log.exception("outbox %s #%s raised", row["kind"], row_id)
                raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        except ParkedError as exc:
            with store.write() as db:
                db.execute(
                    "UPDATE outbox SET status = 'pending', attempts = attempts - 1, next_attempt_at = ?, "
                    "last_error = ?, parked_at = COALESCE(parked_at, ?) WHERE id = ?",
                    (to_db(clock.utc_now() + timedelta(seconds=park_seconds)), str(exc)[:1000],
                     to_db(clock.utc_now()), row_id),
                )
            report.parked += 1
            log.info("outbox %s #%s waits: %s", row["kind"], row_id, exc)
        except PermanentError as exc:
            _finish_dead(store, clock, row, str(exc), exception_kind=exc.exception_kind)
            report.dead += 1
            report.errors.append(f"{row['kind']} #{row_id}: {exc}")
        except RetryableError as exc:
            if row["attempts"] >= max_attempts:
                _finish_dead(store, clock, row, f"gave up after {row['attempts']} attempts: {exc}")
                report.dead += 1
            else:
                delay = backoff(row["attempts"], base_delay_seconds)
                if exc.retry_after and math.isfinite(exc.retry_after):
                    delay = max(delay, timedelta(seconds=min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)))
                with store.write() as db:
                    db.execute(
                        "UPDATE outbox SET status = 'pending', next_attempt_at = ?, last_error = ?, "
                        "parked_at = NULL WHERE id = ?",
                        (to_db(clock.utc_now() + delay), str(exc)[:1000], row_id),
                    )
                report.retried += 1
            report.errors.append(f"{row['kind']} #{row_id}: {exc}")
            log.warning("outbox %s #%s failed (attempt %s): %s", row["kind"], row_id, row["attempts"], exc)
        else:
            with store.write() as db:
                db.execute(
                    "UPDATE outbox SET status = 'done', done_at = ?, last_error = NULL, parked_at = NULL "
                    "WHERE id = ?",
                    (to_db(clock.utc_now()), row_id),
                )
            report.done += 1
    return report


def _finish_dead(store: Store, clock: Clock, row: Any, error: str, *,
                 exception_kind: str = "outbox_dead") -> None:
    log.error("outbox %s #%s is dead: %s", row["kind"], row["id"], error)
    with store.write() as db:
        db.execute(
            "UPDATE outbox SET status = 'dead', last_error = ?, done_at = ?, parked_at = NULL WHERE id = ?",
            (error[:1000], to_db(clock.utc_now()), row["id"]),
        )
        raise_exception(db, clock, kind=exception_kind, ref=str(row["id"]),
                        summary=f"{row['kind']} could not be delivered: {error[:200]}")


def unpark(db: Database, clock: Clock, kinds: tuple[str, ...]) -> int:
    """Make the parked entries of `kinds` due now (their cause was fixed); returns how many."""
    marks = ", ".join("?" for _ in kinds)
    cur = db.execute(
        f"UPDATE outbox SET next_attempt_at = ? WHERE status = 'pending' AND parked_at IS NOT NULL "
        f"AND kind IN ({marks})",
        (to_db(clock.utc_now()), *kinds),
    )
    return cur.rowcount


def oldest_pending_age(store: Store, clock: Clock) -> timedelta | None:
    created = store.scalar("SELECT MIN(created_at) FROM outbox WHERE status IN ('pending', 'running')")
    return None if created is None else clock.utc_now() - from_db(created)
