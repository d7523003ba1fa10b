"""When autopay runs: once per local day at the configured time, across both DST changes, and once
at start-up when the day's time has passed while the service was down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from app.config import ConfigError
from app.core.clock import FrozenClock
from app.jobs.daily_trigger import DailyAtLocalTime
from app.jobs.scheduler import Scheduler, _add_autopay
from app.services import build_services
from tests.conftest import make_config

CHICAGO = ZoneInfo("America/Chicago")


def _fires(trigger: DailyAtLocalTime, start: datetime, n: int) -> list[datetime]:
    out, prev, now = [], None, start
    for _ in range(n):
        prev = trigger.get_next_fire_time(prev, now)
        out.append(prev)
        now = prev
    return out


def test_the_run_happens_once_on_the_night_the_clocks_go_back():
    fires = _fires(DailyAtLocalTime("01:30", CHICAGO), datetime(2026, 10, 31, 12, 0, tzinfo=CHICAGO), 3)
    assert [f.astimezone(UTC).isoformat() for f in fires] == [
        "2026-11-01T06:30:00+00:00",  # 01:30 CDT, the first of the two 01:30s
        "2026-11-02T07:30:00+00:00",
        "2026-11-03T07:30:00+00:00",
    ]


def test_a_time_the_clocks_skip_runs_an_hour_later_that_day_and_on_time_after():
    fires = _fires(DailyAtLocalTime("02:30", CHICAGO), datetime(2026, 3, 7, 12, 0, tzinfo=CHICAGO), 3)
    assert [f.astimezone(CHICAGO).strftime("%m-%d %H:%M %Z") for f in fires] == [
        "03-08 03:30 CDT",
        "03-09 02:30 CDT",
        "03-10 02:30 CDT",
    ]


@pytest.mark.parametrize(("now_local", "runs_at_start"), [(5, False), (7, True)])
def test_a_run_missed_while_the_service_was_down_happens_once_at_start_up(tmp_path, now_local, runs_at_start):
    clock = FrozenClock(datetime(2026, 3, 10, now_local, 0, tzinfo=CHICAGO))
    s = build_services(make_config(tmp_path, extra='\n[autopay]\nrun_time = "06:00"\n'), clock=clock)
    sched = Scheduler(services=s, apscheduler=BackgroundScheduler(timezone=CHICAGO))
    _add_autopay(sched)
    job = sched.apscheduler.get_job("autopay")
    assert str(job.trigger) == "daily at 06:00 America/Chicago"
    assert (getattr(job, "next_run_time", None) == clock.utc_now()) is runs_at_start
    assert sched.apscheduler.get_job("autopay_recover").trigger.interval == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('run_time = "6am"', "autopay.run_time: must be a 24-hour local time"),
        ("retry_days = [3, 1]", "autopay.retry_days: must be at most 10 increasing"),
        ('retry_days = ["1"]', "autopay.retry_days: expected a list of whole numbers"),
        ("notify_days_before = 90", "autopay.notify_days_before: must be 0-60"),
    ],
)
def test_a_bad_autopay_setting_names_its_key(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, extra=f"\n[autopay]\n{setting}\n")
