"""Every schedule lives here. Jobs run in exactly one process, the holder of the scheduler lock.

gunicorn runs one worker; if someone starts a second worker or runs a CLI job at the same time,
the exclusive lock on `<data_dir>/scheduler.lock` keeps the schedules in one place. CLI job
commands take the same lock (`job_lock`), so a hand-run `cashloop outbox` never races the
scheduler's drain. A service that starts while another process holds the lock tries again every
LOCK_RETRY_SECONDS and takes the schedules over when it gets it. Each run records a heartbeat
(app.core.job_runs) and its start in `Scheduler.running`, which /healthz reads; `stop` asks the jobs
to stop between units of work (app.core.stop_flag) and waits for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from app.core import job_runs, stop_flag
from app.services import Services

log = logging.getLogger(__name__)
LOCK_RETRY_SECONDS = 30.0


class LockBusy(RuntimeError):
    """Another process holds the job lock."""


def lock_path(data_path: Path) -> Path:
    """The job lock of the data directory `data_path`."""
    return Path(data_path) / "scheduler.lock"


def _lock_path(services: Services) -> Path:
    return lock_path(services.config.data_path)


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
    with job_lock_at(services.config.data_path):
        yield


@contextlib.contextmanager
def job_lock_at(data_path: Path) -> Iterator[None]:
    """The job lock of a data directory, without opening its database (restore needs exactly that)."""
    path = lock_path(data_path)
    fh = _try_lock(path)
    if fh is None:
        raise LockBusy(f"another Cashloop process holds {path}; its scheduler runs the jobs")
    try:
        yield
    finally:
        fh.close()


@dataclass
class Scheduler:
    """This process's schedules: running once it holds the job lock, waiting for it otherwise.

    `running` maps each job in flight to when it started (this process only: a job killed in
    another process must not look stuck here forever); /healthz reads it and the APScheduler jobs.
    """

    services: Services
    apscheduler: BackgroundScheduler
    running: dict[str, datetime] = field(default_factory=dict)
    lock: IO[str] | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _waiter: threading.Thread | None = None

    @property
    def is_running(self) -> bool:
        return self.lock is not None and self.apscheduler.running and not self._stopped.is_set()

    @property
    def is_waiting_for_lock(self) -> bool:
        return self.lock is None and not self._stopped.is_set()

    def overdue(self, grace: timedelta) -> list[str]:
        """Jobs whose next run is more than `grace` in the past: the scheduler is not running them."""
        # NOTE: APScheduler fires by the system clock, so that is the clock its next_run_time is
        # compared with here (not services.clock, which tests freeze).
        now = datetime.now(UTC)
        return [
            job.id for job in self.apscheduler.get_jobs()
            if job.next_run_time is not None and now - job.next_run_time > grace
        ]

    def stalled(self, limit: timedelta) -> list[str]:
        """Jobs of this process that have been running longer than `limit`."""
        now = self.services.clock.utc_now()
        return [name for name, since in dict(self.running).items() if now - since > limit]


def _job(sched: Scheduler, name: str, fn: Callable[[], Any]) -> Callable[[], None]:
    services = sched.services

    def run() -> None:
        if stop_flag.requested():
            return
        sched.running[name] = services.clock.utc_now()
        error: str | None = None
        try:
            job_runs.started(services.store, services.clock, name)
            result = fn()
            report_error = getattr(result, "error", None)
            error = report_error if isinstance(report_error, str) and report_error else None
        except Exception as exc:  # the scheduler must keep running whatever one job does
            log.exception("job %s failed", name)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            sched.running.pop(name, None)
            try:
                job_runs.finished(services.store, services.clock, name, error=error)
            except Exception:  # a heartbeat must never take a job down with it
                log.exception("job %s: could not record its heartbeat", name)

    return run


def start(services: Services) -> Scheduler:
    """The schedules of this process, started now if it wins the job lock, else as soon as it does.

    A second worker or a CLI job holding the lock at start-up only delays the schedules: the lock is
    tried again every LOCK_RETRY_SECONDS, so the service takes over when the other process ends.
    """
    stop_flag.reset()
    cfg = services.config
    sched = Scheduler(
        services,
        BackgroundScheduler(
            timezone=cfg.tz,
            daemon=True,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        ),
    )
    fh = _try_lock(_lock_path(services))
    if fh is not None:
        _begin(sched, fh)
        return sched
    log.warning("scheduler waiting: another process holds the job lock %s", _lock_path(services))

    def wait_for_lock() -> None:
        while not sched._stopped.wait(LOCK_RETRY_SECONDS):
            got = _try_lock(_lock_path(services))
            if got is not None:
                _begin(sched, got)
                return

    sched._waiter = threading.Thread(target=wait_for_lock, name="scheduler-lock-wait", daemon=True)
    sched._waiter.start()
    return sched


def _begin(sched: Scheduler, fh: IO[str]) -> None:
    from app import checkout
    from app.jobs import drain_outbox, poll_psa, reconcile_payouts, send_reminders

    services = sched.services
    cfg = services.config
    aps = sched.apscheduler
    # APScheduler logs every run at INFO; the jobs log what they did themselves.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    aps.add_job(
        _job(sched, "poll_psa", lambda: poll_psa.run(services)),
        "interval",
        minutes=cfg.psa.poll_minutes,
        id="poll_psa", name="poll_psa",
        next_run_time=services.clock.utc_now(),
    )
    aps.add_job(
        _job(sched, "drain_outbox", lambda: drain_outbox.run(services)),
        "interval",
        seconds=cfg.outbox.interval_seconds,
        id="drain_outbox", name="drain_outbox",
    )
    aps.add_job(
        _job(sched, "recover_payments", lambda: checkout.recover_submitted(services)),
        "interval",
        seconds=60,
        id="recover_payments", name="recover_payments",
    )
    # Payouts a webhook did not bring (box down, delivery given up) are booked from Stripe's list.
    aps.add_job(
        _job(sched, "reconcile_payouts", lambda: reconcile_payouts.run(services)),
        "interval",
        minutes=cfg.stripe.payout_reconcile_minutes,
        id="reconcile_payouts", name="reconcile_payouts",
    )
    # Reminders at the local send time (a cron trigger in the MSP's zone keeps 09:00 at 09:00
    # across DST), and once at start-up: a run missed while the service was down goes out once,
    # late. The job itself does nothing before the send time and never sends a step twice.
    hour, minute = (int(x) for x in cfg.reminders.send_time.split(":"))
    aps.add_job(
        _job(sched, "send_reminders", lambda: send_reminders.run(services)),
        CronTrigger(hour=hour, minute=minute, timezone=cfg.tz),
        id="send_reminders", name="send_reminders",
        next_run_time=services.clock.utc_now(),
    )
    # Monthly statements on the 1st at the same local time, and once at start-up (a 1st missed
    # while down sends once, late; a month is decided once per client).
    from app.jobs import send_statements

    aps.add_job(
        _job(sched, "send_statements", lambda: send_statements.run(services)),
        CronTrigger(day=1, hour=hour, minute=minute, timezone=cfg.tz),
        id="send_statements", name="send_statements",
        next_run_time=services.clock.utc_now(),
    )
    if cfg.autopay.enabled:
        _add_autopay(sched)
    if cfg.ops.backup.enabled:
        _add_backup(sched)
    _add_tieout(sched)
    sched.lock = fh  # keep the fd open as long as we run: closing it releases the lock
    aps.start()
    log.info(
        "scheduler started: poll every %d min, outbox every %d s",
        cfg.psa.poll_minutes,
        cfg.outbox.interval_seconds,
    )


def stop(sched: Scheduler | None) -> None:
    """Ask the running jobs to stop after their unit of work, wait for them (no half-written
    payment), then release the lock. Safe to call twice, and on a scheduler still waiting."""
    if sched is None:
        return
    stop_flag.request()
    sched._stopped.set()
    if sched._waiter is not None:  # it may be starting the schedules this very moment: let it finish
        sched._waiter.join()
    if sched.apscheduler.running:
        sched.apscheduler.shutdown(wait=True)
    if sched.lock is not None:
        sched.lock.close()
        sched.lock = None
    stop_flag.reset()  # every job has returned; a later scheduler (or job) in this process starts clean
    log.info("scheduler stopped")


def _add_autopay(sched: Scheduler) -> None:
    """Autopay once a local day at `autopay.run_time` (DailyAtLocalTime: once, even on the night the
    clocks go back), plus once at start-up when today's time has passed (a run missed while the
    service was down happens once, late; a run is idempotent, so an extra one charges nothing
    twice). Unfinished attempts are settled every five minutes in between."""
    from app.jobs import run_autopay
    from app.jobs.daily_trigger import DailyAtLocalTime

    services = sched.services
    cfg = services.config
    trigger = DailyAtLocalTime(cfg.autopay.run_time, cfg.tz)
    now = services.clock.utc_now()
    missed = trigger.fire_time_on(now.astimezone(cfg.tz).date()) <= now
    sched.apscheduler.add_job(
        _job(sched, "autopay", lambda: run_autopay.run(services)),
        trigger,
        id="autopay", name="autopay",
        misfire_grace_time=6 * 3600,
        **({"next_run_time": now} if missed else {}),
    )
    sched.apscheduler.add_job(
        _job(sched, "autopay_recover", lambda: run_autopay.recover(services)),
        "interval",
        minutes=5,
        id="autopay_recover", name="autopay_recover",
    )


def _add_tieout(sched: Scheduler) -> None:
    """The tie-out of yesterday once a local day at `ops.tieout_time` (read-only towards every
    system; a day missed while down is not made up: `cashloop tieout --from` runs any period)."""
    from app.jobs import tie_out
    from app.jobs.daily_trigger import DailyAtLocalTime

    cfg = sched.services.config
    sched.apscheduler.add_job(
        _job(sched, "tieout", lambda: tie_out.run(sched.services)),
        DailyAtLocalTime(cfg.ops.tieout_time, cfg.tz),
        id="tieout", name="tieout",
        misfire_grace_time=6 * 3600,
    )


BACKUP_CATCH_UP_DELAY = timedelta(minutes=2)


def _add_backup(sched: Scheduler) -> None:
    """The nightly backup at `ops.backup.time` (local). A night missed while the service was down
    is made up once, two minutes after start-up (not at once: the start-up poll comes first)."""
    from app.jobs import back_up_db
    from app.jobs.daily_trigger import DailyAtLocalTime

    services = sched.services
    cfg = services.config
    trigger = DailyAtLocalTime(cfg.ops.backup.time, cfg.tz)
    now = services.clock.utc_now()
    due = trigger.fire_time_on(now.astimezone(cfg.tz).date())
    if due > now:
        due = trigger.fire_time_on(now.astimezone(cfg.tz).date() - timedelta(days=1))
    last = job_runs.all_runs(services.store).get("backup")
    missed = last is None or last.ok_at is None or last.ok_at < due
    sched.apscheduler.add_job(
        _job(sched, "backup", lambda: back_up_db.run(services)),
        trigger,
        id="backup", name="backup",
        misfire_grace_time=6 * 3600,
        **({"next_run_time": now + BACKUP_CATCH_UP_DELAY} if missed else {}),
    )
