"""Aware UTC instants inside, local calendar dates at the edges.

Code asks a Clock for the time; tests pass a FrozenClock. `to_db`/`from_db` are the only
way instants enter and leave the store.
"""

from __future__ import annotations

import functools
import re
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
    # The same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ"), in half the time (a backfill writes 100,000).
    return dt.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def from_db(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def local_today(clock: Clock, tz: ZoneInfo) -> date:
    """The calendar date at the MSP right now: due dates are compared against this, never UTC."""
    return clock.utc_now().astimezone(tz).date()


# The calendar years a vendor's dates may name: anything outside is a typo or a placeholder
# ("9999-12-31"), and date arithmetic on it (a due date plus grace days) would overflow.
VENDOR_YEARS = range(1900, 2200)


def parse_vendor_time(value: str) -> datetime:
    """A vendor timestamp; one without an offset is taken as UTC (ConnectWise sends Z)."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def vendor_instant(value: str) -> datetime:
    """A vendor timestamp as an aware UTC instant; raises ValueError for an unreadable one,
    including one that UTC would push off the calendar (9999-12-31T23:00-05:00)."""
    try:
        return parse_vendor_time(value).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"not a time on the calendar: {value!r}") from None


@functools.lru_cache(maxsize=4096)  # a backfill reads a few hundred distinct dates 200,000 times
def parse_vendor_date(value: str) -> date:
    """A calendar date from a vendor field that may carry a midnight time (`2025-03-31T00:00:00Z`).

    The date part is what the vendor means; converting the instant to another zone would move it
    a day (the classic due-date-a-day-early bug), so the time part is dropped, not converted. What
    follows the date must be a valid time (not cut off and ignored), and the year a real one.
    """
    text = value.strip().upper()  # RFC 3339 allows a lower-case "t" and "z"
    if len(text) < 10:
        raise ValueError(f"not a date: {value!r}")
    day = date.fromisoformat(text[:10])
    rest = text[10:]
    if rest and not (_ZONE.fullmatch(rest) or (rest[0] in "T " and _is_time(text))):
        raise ValueError(f"not a date: {value!r}")
    if day.year not in VENDOR_YEARS:
        raise ValueError(f"year {day.year} is outside {VENDOR_YEARS.start}-{VENDOR_YEARS.stop - 1}")
    return day


# A date may carry its zone alone (xsd:date: "2026-03-31Z", "2026-03-31+02:00").
_ZONE = re.compile(r"Z|[+-]\d{2}:\d{2}")


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
