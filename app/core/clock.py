"""Aware UTC instants inside, local calendar dates at the edges.

Code asks a Clock for the time; tests pass a FrozenClock. `to_db`/`from_db` are the only
way instants enter and leave the store.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def utc_now(self) -> datetime: ...


class SystemClock:
    def utc_now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to (tests, the fault-injection harness)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def utc_now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)


def to_db(dt: datetime) -> str:
    """UTC ISO-8601 with a Z; a naive datetime is a bug and raises."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime passed to to_db")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def local_today(clock: Clock, tz: ZoneInfo) -> date:
    """The calendar date at the MSP right now: due dates are compared against this, never UTC."""
    return clock.utc_now().astimezone(tz).date()


def parse_vendor_time(value: str) -> datetime:
    """A vendor timestamp; one without an offset is taken as UTC (ConnectWise sends Z)."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_vendor_date(value: str) -> date:
    """A calendar date from a vendor field that may carry a midnight time (`2025-03-31T00:00:00Z`).

    The date part is what the vendor means; converting the instant to another zone would move it
    a day (the classic due-date-a-day-early bug), so the time part is dropped, not converted.
    """
    text = value.strip()
    if len(text) < 10:
        raise ValueError(f"not a date: {value!r}")
    return date.fromisoformat(text[:10])
