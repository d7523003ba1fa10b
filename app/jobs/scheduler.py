"""Every schedule lives here. Jobs run in exactly one process, the holder of the scheduler lock.

gunicorn runs one worker; if someone starts a second worker or runs a CLI job at the same time,
the exclusive lock on `<data_dir>/scheduler.lock` keeps the schedules in one place. CLI job
commands take the same lock (`job_lock`), so a hand-run `cashloop outbox` never races the
scheduler's drain.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from app.services import Services

log = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    """Another process holds the job lock."""


def _lock_path(services: Services) -> Path:
    return services.config.data_path / "scheduler.lock"


def _try_lock(path: Path) -> IO[str] | None:
    fh = path.open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


@contextlib.contextmanager
def job_lock(services: Services) -> Iterator[None]:
    """Hold the job lock for a CLI run; raises LockBusy when the service (or another run) has it."""
    fh = _try_lock(_lock_path(services))
    if fh is None:
        raise LockBusy(f"another Cashloop process holds {_lock_path(services)}; its scheduler runs the jobs")
    try:
        yield
    finally:
        fh.close()


def _safe(name: str, fn):
    def run() -> None:
        try:
            fn()
        except Exception:  # the scheduler must keep running whatever one job does
            log.exception("job %s failed", name)

    return run


def start(services: Services) -> BackgroundScheduler | None:
    """Start the schedules unless another process already runs them; returns the scheduler or None."""
    fh = _try_lock(_lock_path(services))
    if fh is None:
        log.info("scheduler not started here: another process holds the job lock")
        return None
    from app import checkout
    from app.jobs import drain_outbox, poll_psa, send_reminders

    cfg = services.config
    sched = BackgroundScheduler(
        timezone=cfg.tz,
        daemon=True,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
    )
    sched.add_job(
        _safe("poll_psa", lambda: poll_psa.run(services)),
        "interval",
        minutes=cfg.psa.poll_minutes,
        id="poll_psa", name="poll_psa",
        next_run_time=services.clock.utc_now(),
    )
    sched.add_job(
        _safe("drain_outbox", lambda: drain_outbox.run(services)),
        "interval",
        seconds=cfg.outbox.interval_seconds,
        id="drain_outbox", name="drain_outbox",
    )
    sched.add_job(
        _safe("recover_payments", lambda: checkout.recover_submitted(services)),
        "interval",
        seconds=60,
        id="recover_payments", name="recover_payments",
    )
    # Reminders at the local send time (a cron trigger in the MSP's zone keeps 09:00 at 09:00
    # across DST), and once at start-up: a run missed while the service was down goes out once,
    # late. The job itself does nothing before the send time and never sends a step twice.
    hour, minute = (int(x) for x in cfg.reminders.send_time.split(":"))
    sched.add_job(
        _safe("send_reminders", lambda: send_reminders.run(services)),
        CronTrigger(hour=hour, minute=minute, timezone=cfg.tz),
        id="send_reminders", name="send_reminders",
        next_run_time=services.clock.utc_now(),
    )
    if cfg.autopay.enabled:
        _add_autopay(sched, services)
    # APScheduler logs every run at INFO; the jobs log what they did themselves.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    sched.start()
    sched._cashloop_lock = fh  # type: ignore[attr-defined]  # keep the fd open as long as we run
    log.info(
        "scheduler started: poll every %d min, outbox every %d s",
        cfg.psa.poll_minutes,
        cfg.outbox.interval_seconds,
    )
    return sched


def stop(sched: BackgroundScheduler | None) -> None:
    """Let running jobs finish (no half-written payment), then release the lock."""
    if sched is None:
        return
    sched.shutdown(wait=True)
    fh = getattr(sched, "_cashloop_lock", None)
    if fh is not None:
        fh.close()


def _add_autopay(sched: BackgroundScheduler, services: Services) -> None:
    """Autopay once a local day at `autopay.run_time` (DailyAtLocalTime: once, even on the night the
    clocks go back), plus once at start-up when today's time has passed (a run missed while the
    service was down happens once, late; a run is idempotent, so an extra one charges nothing
    twice). Unfinished attempts are settled every five minutes in between."""
    from app.jobs import run_autopay
    from app.jobs.daily_trigger import DailyAtLocalTime

    cfg = services.config
    trigger = DailyAtLocalTime(cfg.autopay.run_time, cfg.tz)
    now = services.clock.utc_now()
    missed = trigger.fire_time_on(now.astimezone(cfg.tz).date()) <= now
    sched.add_job(
        _safe("autopay", lambda: run_autopay.run(services)),
        trigger,
        id="autopay", name="autopay",
        misfire_grace_time=6 * 3600,
        **({"next_run_time": now} if missed else {}),
    )
    sched.add_job(
        _safe("autopay_recover", lambda: run_autopay.recover(services)),
        "interval",
        minutes=5,
        id="autopay_recover", name="autopay_recover",
    )
