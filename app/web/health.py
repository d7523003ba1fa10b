"""/healthz for monitors: 200 when this process can do its job, 503 with the reasons when not.

Unhealthy (503): the database does not answer; the scheduler that make_app started is not running
(stopped, or waiting for the job lock another process holds); a job has been overdue or running
longer than `ops.health.job_stall_minutes`; an outbox entry has waited longer than
`ops.health.outbox_stuck_minutes`. Reported but still 200 (`warnings`): the last good PSA sync is
older than `ops.health.sync_stale_minutes`, or the last backup older than a day and a bit.
Cheap on purpose (a handful of indexed reads): monitors poll it, and benchmarks use it as the
trivial route.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, jsonify

from app.core.clock import from_db, to_db

log = logging.getLogger(__name__)
_STARTED = time.monotonic()
BACKUP_LATE = timedelta(hours=26)


def init_app(app: Flask) -> None:
    app.add_url_rule("/healthz", "healthz", healthz)


def _age(now, text: str | None) -> float | None:
    return None if not text else round((now - from_db(text)).total_seconds(), 1)


def report(services: Any, sched: Any, *, has_scheduler: bool) -> tuple[dict[str, Any], list[str]]:
    """The health document and its problems (empty: healthy). Reads only."""
    cfg = services.config
    limits = cfg.ops.health
    now = services.clock.utc_now()
    problems: list[str] = []
    warnings: list[str] = []
    doc: dict[str, Any] = {
        "process": {"pid": os.getpid(), "uptime_seconds": round(time.monotonic() - _STARTED, 1)},
        "now": to_db(now),
    }
    store = services.store
    try:
        store.scalar("SELECT 1")
        doc["db"] = "ok"
    except Exception as exc:
        log.exception("health check: database unavailable")
        doc["db"] = "error"
        problems.append(f"database: {type(exc).__name__}")
        return doc, problems

    doc["scheduler"] = _scheduler(sched, has_scheduler, limits, problems)

    # An entry parked until the accounting system is reconnected waits for a person, not for this
    # process: it is a warning (and an exception in the admin), never a reason to call us unhealthy.
    pending, oldest, parked = store.one(
        "SELECT COUNT(*), MIN(CASE WHEN parked_at IS NULL THEN created_at END), COUNT(parked_at) "
        "FROM outbox WHERE status IN ('pending', 'running')"
    )
    oldest_age = _age(now, oldest)
    doc["outbox"] = {"pending": pending, "oldest_pending_age_seconds": oldest_age}
    if oldest_age is not None and oldest_age > limits.outbox_stuck_minutes * 60:
        problems.append(f"outbox: an entry has waited {oldest_age / 60:.0f} min "
                        f"(limit {limits.outbox_stuck_minutes} min)")
    if parked:
        warnings.append(f"outbox: {parked} accounting entries wait for the accounting system to be "
                        "connected again (admin: Accounting)")

    last_sync = store.scalar(
        "SELECT CASE WHEN COUNT(*) = COUNT(last_success_at) THEN MIN(last_success_at) END FROM sync_state "
        "WHERE connector = ? AND object IN ('companies', 'contacts', 'invoices')",
        (cfg.psa.kind,),
    )
    sync_age = _age(now, last_sync)
    doc["sync"] = {"connector": cfg.psa.kind, "last_success_at": last_sync, "age_seconds": sync_age}
    if sync_age is None or sync_age > limits.sync_stale_minutes * 60:
        warnings.append("sync: no good PSA sync yet" if sync_age is None
                        else f"sync: last good PSA sync {sync_age / 60:.0f} min ago")

    last_backup = store.scalar("SELECT ok_at FROM job_runs WHERE job = 'backup'")
    backup_age = _age(now, last_backup)
    doc["backup"] = {"last_ok_at": last_backup, "age_seconds": backup_age}
    if cfg.ops.backup.enabled and has_scheduler and (
        backup_age is None or backup_age > BACKUP_LATE.total_seconds()
    ):
        warnings.append("backup: none in the last day" if backup_age is not None else "backup: none yet")
    doc["warnings"] = warnings
    return doc, problems


def _scheduler(sched: Any, has_scheduler: bool, limits: Any, problems: list[str]) -> dict[str, Any]:
    if not has_scheduler:
        return {"state": "not in this process"}
    if sched is None or not (sched.is_running or sched.is_waiting_for_lock):
        problems.append("scheduler: stopped")
        return {"state": "stopped"}
    if sched.is_waiting_for_lock:
        problems.append("scheduler: waiting for the job lock another Cashloop process holds")
        return {"state": "waiting for the job lock"}
    stall = timedelta(minutes=limits.job_stall_minutes)
    overdue, stalled = sched.overdue(stall), sched.stalled(stall)
    for job in overdue:
        problems.append(f"scheduler: job {job} is overdue by more than {limits.job_stall_minutes} min")
    for job in stalled:
        problems.append(f"scheduler: job {job} has run for more than {limits.job_stall_minutes} min")
    return {"state": "running", "running": sorted(sched.running), "overdue": overdue, "stalled": stalled}


def healthz() -> Any:
    extensions = current_app.extensions
    doc, problems = report(
        extensions["cashloop"],
        extensions.get("cashloop_scheduler"),
        has_scheduler="cashloop_scheduler" in extensions,
    )
    status = 503 if problems else 200
    return jsonify(status="ok" if not problems else "unhealthy", problems=problems, **doc), status
