"""An APScheduler trigger that fires once per local calendar day at a local time, DST or not.

APScheduler's cron trigger fires twice on the night the clocks go back when the time falls in
the repeated hour (01:30 exists twice). A charging job must run once a day, so this trigger
picks the first occurrence of an ambiguous time and never fires twice on one local date; a time
skipped by the clocks going forward (02:30 on the spring night) fires an hour later instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger


class DailyAtLocalTime(BaseTrigger):
    def __init__(self, hhmm: str, tz: ZoneInfo) -> None:
        hour, minute = (int(p) for p in hhmm.split(":"))
        self.at = time(hour, minute)
        self.tz = tz

    def fire_time_on(self, day: object) -> datetime:
        # fold=0: the first of two equal local times; zoneinfo moves a skipped time forward.
        local = datetime.combine(day, self.at, tzinfo=self.tz)  # type: ignore[arg-type]
        return local.astimezone(UTC).astimezone(self.tz)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        start = now if previous_fire_time is None else max(now, previous_fire_time + timedelta(seconds=1))
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        for _ in range(4):
            candidate = self.fire_time_on(day)
            day += timedelta(days=1)
            if candidate < start:
                continue
            if previous_fire_time is not None and (
                candidate.astimezone(self.tz).date() == previous_fire_time.astimezone(self.tz).date()
            ):
                continue
            return candidate
        return None  # pragma: no cover - four consecutive days always contain one

    def __str__(self) -> str:
        return f"daily at {self.at:%H:%M} {self.tz.key}"
