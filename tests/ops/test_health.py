"""/healthz, as a monitor sees it: 200 while the scheduler runs and the outbox moves, 503 with the
reason when the scheduler stops, waits for the lock, a job is overdue or stuck, or the outbox is."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from app.core.clock import FrozenClock, SystemClock
from app.core.outbox import enqueue
from app.jobs import scheduler
from app.jobs.scheduler import job_lock
from app.services import build_services
from app.web import create_app
from tests.conftest import make_config


def _app(tmp_path, clock):
    services = build_services(make_config(tmp_path), clock=clock)
    app = create_app(services)
    return services, app


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_healthz_is_200_while_the_scheduler_runs_and_503_once_it_has_stopped(tmp_path):
    services, app = _app(tmp_path, SystemClock())
    sched = scheduler.start(services)
    app.extensions["cashloop_scheduler"] = sched
    try:
        _wait(lambda: services.store.scalar("SELECT ok_at FROM job_runs WHERE job = 'poll_psa'"))
        ok = app.test_client().get("/healthz")
        body = ok.get_json()
        assert ok.status_code == 200, body
        assert body["scheduler"]["state"] == "running" and body["problems"] == []
        assert body["sync"]["age_seconds"] is not None and body["sync"]["age_seconds"] < 60
        assert body["db"] == "ok" and body["process"]["pid"] > 0
    finally:
        scheduler.stop(sched)
    stopped = app.test_client().get("/healthz")
    assert stopped.status_code == 503
    assert stopped.get_json()["problems"] == ["scheduler: stopped"]


def test_healthz_fails_while_another_process_holds_the_job_lock_and_recovers_when_it_is_released(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(scheduler, "LOCK_RETRY_SECONDS", 0.1)
    services, app = _app(tmp_path, SystemClock())
    with job_lock(services):  # a `cashloop sync --full` still running when the service starts
        sched = scheduler.start(services)
        app.extensions["cashloop_scheduler"] = sched
        waiting = app.test_client().get("/healthz")
        assert waiting.status_code == 503
        assert waiting.get_json()["scheduler"]["state"] == "waiting for the job lock"
    try:
        _wait(lambda: sched.is_running)
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        scheduler.stop(sched)


def test_healthz_fails_when_a_job_is_overdue_because_the_scheduler_no_longer_fires(tmp_path):
    services, app = _app(tmp_path, SystemClock())
    sched = scheduler.start(services)
    app.extensions["cashloop_scheduler"] = sched
    try:
        sched.apscheduler.pause()  # the scheduler thread alive but firing nothing, as when it hangs
        sched.apscheduler.modify_job("drain_outbox", next_run_time=datetime.now(UTC) - timedelta(minutes=31))
        response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert response.get_json()["problems"] == [
            "scheduler: job drain_outbox is overdue by more than 30 min"
        ]
    finally:
        scheduler.stop(sched)


def test_healthz_fails_when_a_job_has_been_running_longer_than_the_stall_limit(tmp_path):
    clock = FrozenClock(datetime.now(UTC))
    services, app = _app(tmp_path, clock)
    sched = scheduler.start(services)
    app.extensions["cashloop_scheduler"] = sched
    release = threading.Event()
    try:
        sched.apscheduler.add_job(scheduler._job(sched, "slow_job", lambda: release.wait(30)), id="slow_job",
                                  next_run_time=datetime.now(UTC))
        _wait(lambda: "slow_job" in sched.running)
        assert app.test_client().get("/healthz").status_code == 200
        clock.advance(timedelta(minutes=31))
        response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert "scheduler: job slow_job has run for more than 30 min" in response.get_json()["problems"]
    finally:
        release.set()
        scheduler.stop(sched)
    assert services.store.scalar("SELECT error FROM job_runs WHERE job = 'slow_job'") is None


def test_healthz_fails_when_an_outbox_entry_has_waited_past_the_threshold(tmp_path, frozen_clock):
    services, app = _app(tmp_path, frozen_clock)
    with services.store.write() as db:
        enqueue(db, frozen_clock, kind="email", key="k-stuck", payload={"to": "ap@example.com"})
    fresh = app.test_client().get("/healthz").get_json()
    assert fresh["status"] == "ok" and fresh["outbox"] == {"pending": 1, "oldest_pending_age_seconds": 0.0}
    frozen_clock.advance(timedelta(minutes=59))
    assert app.test_client().get("/healthz").status_code == 200
    frozen_clock.advance(timedelta(minutes=2))
    stuck = app.test_client().get("/healthz")
    assert stuck.status_code == 503
    assert stuck.get_json()["problems"] == ["outbox: an entry has waited 61 min (limit 60 min)"]
    with services.store.write() as db:
        db.execute("UPDATE outbox SET status = 'done'")
    assert app.test_client().get("/healthz").status_code == 200


def test_the_outbox_threshold_comes_from_the_config(tmp_path, frozen_clock):
    services = build_services(make_config(tmp_path, extra="\n[ops.health]\noutbox_stuck_minutes = 5\n"),
                              clock=frozen_clock)
    app = create_app(services)
    with services.store.write() as db:
        enqueue(db, frozen_clock, kind="email", key="k-5", payload={})
    frozen_clock.advance(timedelta(minutes=6))
    assert app.test_client().get("/healthz").get_json()["problems"] == [
        "outbox: an entry has waited 6 min (limit 5 min)"
    ]
