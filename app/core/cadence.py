"""When a reminder step falls: calendar dates in the MSP's time zone, quiet days skipped.

A step is a whole number of days relative to the due date (-5 = five days before, 0 = on the
day, +3 = three days late). Steps after the due date wait `grace_days` more. A step that lands
on a quiet day (a weekend when weekends are quiet, or a listed holiday) moves to the next day
that is not quiet. Everything here is pure: dates in, dates out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta


@dataclass(frozen=True)
class QuietDays:
    weekends: bool = False
    holidays: frozenset[date] = field(default_factory=frozenset)

    def is_quiet(self, day: date) -> bool:
        return (self.weekends and day.weekday() >= 5) or day in self.holidays

    def next_open(self, day: date) -> date:
        """`day` itself, or the first day after it that is not quiet (at most a few weeks on)."""
        for _ in range(60):
            if not self.is_quiet(day):
                return day
            day += timedelta(days=1)
        raise ValueError("sixty quiet days in a row: check the holiday list")


def step_date(due_on: date, step: int, *, grace_days: int = 0, quiet: QuietDays | None = None) -> date:
    """The local date a step is sent for an invoice due on `due_on`."""
    day = due_on + timedelta(days=step + (grace_days if step > 0 else 0))
    return (quiet or QuietDays()).next_open(day)


def due_step(
    due_on: date,
    today: date,
    steps: Sequence[int],
    *,
    grace_days: int = 0,
    quiet: QuietDays | None = None,
    already: Iterable[int] = (),
) -> int | None:
    """The step to send today, if any: the latest step whose date has come and that was not sent.

    Only the latest is sent: after an outage that spanned several steps the client gets one
    message, late, not a burst (the earlier ones are skipped for good by the caller).
    """
    done = set(already)
    reached = [s for s in sorted(steps) if step_date(due_on, s, grace_days=grace_days, quiet=quiet) <= today]
    if not reached:
        return None
    latest = reached[-1]
    if latest in done or any(s in done for s in reached if s > latest):
        return None
    return latest
