"""Resumable sweeps: the cursor a connector hands out between the pages of one read.

A sweep reads everything changed since `since` (None: everything) in ascending id order. The pages
of a sweep do not come in change order, so the change cursor may only move once the sweep is done.
Until then each page carries a `Sweep` position instead: where the sweep started, the last id it
committed and the newest change time seen so far. poll_psa stores it with the page, so a killed
poll (or a killed `cashloop sync --full`) goes on after the last committed page instead of starting
again, and still ends with the same change cursor as an uninterrupted run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from app.core.clock import vendor_instant

PREFIX = "sweep1:"


@dataclass(frozen=True)
class Sweep:
    since: str | None  # change cursor the sweep reads after (None = a full sweep)
    after: int = 0  # last id whose page is committed
    newest: str | None = None  # newest change time seen so far (ISO-8601 UTC)
    page: int = 0  # pages committed, for vendors that page by number

    @property
    def is_full(self) -> bool:
        return self.since is None

    def encode(self) -> str:
        data = {"since": self.since, "after": self.after, "newest": self.newest, "page": self.page}
        return PREFIX + json.dumps(data, sort_keys=True, separators=(",", ":"))

    def advance(self, *, after: int, newest: datetime | None, page: int | None = None) -> Sweep:
        return replace(
            self,
            after=after,
            newest=format_time(newest) if newest else self.newest,
            page=self.page + 1 if page is None else page,
        )

    def final_cursor(self, newest: datetime | None) -> str | None:
        """The change cursor once the sweep is done: the newest change seen, else where it began."""
        best = newest or parse_time(self.newest)
        return format_time(best) if best else self.since


def decode(cursor: str | None) -> Sweep | None:
    """The Sweep in `cursor`, or None for a plain change cursor (or none). Raises ValueError if garbled."""
    if not cursor or not cursor.startswith(PREFIX):
        return None
    data = json.loads(cursor[len(PREFIX) :])
    if not isinstance(data, dict):
        raise ValueError(f"garbled sweep cursor {cursor!r}")
    return Sweep(
        since=data.get("since"),
        after=int(data.get("after") or 0),
        newest=data.get("newest"),
        page=int(data.get("page") or 0),
    )


def begin(cursor: str | None) -> Sweep:
    """Resume the sweep in `cursor`, or start one reading after the change cursor `cursor`."""
    found = decode(cursor)
    return found if found is not None else Sweep(since=cursor or None)


def newer(current: datetime | None, seen: datetime | None, now: datetime) -> datetime | None:
    """The later of two change times, a time after `now` counting as `now`.

    A record stamped in the future (a PSA clock ahead of ours, a typo) must not drag the change
    cursor past the poll: the next poll would start after edits made since, and with every poll
    moving it on again, they would never be read. Such a record is read again each poll instead.
    """
    if seen is None:
        return current
    seen = min(seen, now)
    return seen if current is None or seen > current else current


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return vendor_instant(value)
    except ValueError:
        return None


def format_time(when: datetime) -> str:
    """ISO-8601 UTC with Z, to the second (what ConnectWise conditions and our cursors use)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
