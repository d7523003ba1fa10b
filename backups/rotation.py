"""Which backups to keep: the newest of each of the last N days, W weeks and M months.

Only files named like a backup (`cashloop-YYYYmmddTHHMMSSZ[-n].sqlite3[.enc]`) are ever looked at
or removed; anything else in the folder is left alone. Days, weeks (ISO) and months are those of the
MSP's time zone. Every backup of the last 24 hours is kept too (the one `install.sh --upgrade` takes
before migrating must survive that night's backup), and the newest is kept whatever the counts say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

RECENT = timedelta(hours=24)
NAME = re.compile(r"^(?P<stem>[A-Za-z0-9_]+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.sqlite3(?:\.enc)?$")


@dataclass(frozen=True)
class BackupFile:
    path: Path
    taken_at: datetime
    n: int

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.taken_at, self.n)


def parse(path: Path) -> BackupFile | None:
    """The backup `path` names, or None for a file that is not a backup."""
    match = NAME.match(path.name)
    if match is None:
        return None
    taken = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return BackupFile(path, taken, int(match["n"] or 1))


def backups_in(folder: Path) -> list[BackupFile]:
    """The backups in `folder`, newest first."""
    if not folder.is_dir():
        return []
    found = [b for b in (parse(p) for p in folder.iterdir() if p.is_file()) if b is not None]
    return sorted(found, key=lambda b: b.order, reverse=True)


def to_keep(files: list[BackupFile], *, daily: int, weekly: int, monthly: int, tz: ZoneInfo) -> set[Path]:
    """The paths a grandfather-father-son policy keeps (pure: decides, removes nothing)."""
    newest_first = sorted(files, key=lambda b: b.order, reverse=True)
    keep: set[Path] = {newest_first[0].path} if newest_first else set()
    if newest_first:
        keep |= {b.path for b in newest_first if newest_first[0].taken_at - b.taken_at < RECENT}
    periods = (
        (daily, lambda d: d.date()),
        (weekly, lambda d: d.isocalendar()[:2]),
        (monthly, lambda d: (d.year, d.month)),
    )
    for count, period_of in periods:
        seen: list[object] = []
        for b in newest_first:
            period = period_of(b.taken_at.astimezone(tz))
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            keep.add(b.path)
    return keep


def rotate(folder: Path, *, daily: int, weekly: int, monthly: int, tz: ZoneInfo) -> list[Path]:
    """Remove the backups in `folder` the policy does not keep; returns what was removed."""
    files = backups_in(folder)
    keep = to_keep(files, daily=daily, weekly=weekly, monthly=monthly, tz=tz)
    removed = []
    for b in files:
        if b.path not in keep:
            b.path.unlink(missing_ok=True)
            removed.append(b.path)
    return removed
