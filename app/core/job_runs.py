"""Job heartbeats: when each job last started, finished and succeeded (the `job_runs` table).

/healthz reads them to tell a scheduler that runs from one that is stuck; the admin may show them.
Each write is its own small transaction, never inside the job's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.core.clock import Clock, from_db, to_db
from app.core.store import Store


@dataclass(frozen=True)
class JobRun:
    job: str
    started_at: datetime
    finished_at: datetime | None
    ok_at: datetime | None
    error: str | None
    runs: int

    @property
    def is_running(self) -> bool:
        return self.finished_at is None or self.finished_at < self.started_at


def started(store: Store, clock: Clock, job: str) -> None:
    with store.write() as db:
        db.execute(
            "INSERT INTO job_runs (job, started_at, runs) VALUES (?, ?, 1) "
            "ON CONFLICT (job) DO UPDATE SET started_at = excluded.started_at, runs = runs + 1",
            (job, to_db(clock.utc_now())),
        )


def finished(store: Store, clock: Clock, job: str, *, error: str | None = None) -> None:
    """Record the end of a run; `error` None means it succeeded."""
    now = to_db(clock.utc_now())
    with store.write() as db:
        db.execute(
            "UPDATE job_runs SET finished_at = ?, error = ?, "
            "ok_at = CASE WHEN ? IS NULL THEN ? ELSE ok_at END WHERE job = ?",
            (now, error[:500] if error else None, error, now, job),
        )


def all_runs(store: Store) -> dict[str, JobRun]:
    """Every job's last run, by name. Read-only."""
    out = {}
    for r in store.all("SELECT * FROM job_runs"):
        out[r["job"]] = JobRun(
            job=r["job"],
            started_at=from_db(r["started_at"]),
            finished_at=from_db(r["finished_at"]) if r["finished_at"] else None,
            ok_at=from_db(r["ok_at"]) if r["ok_at"] else None,
            error=r["error"],
            runs=r["runs"],
        )
    return out
