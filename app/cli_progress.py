"""A one-line progress bar for `cashloop sync` on a terminal (nothing is drawn when stderr is not one).

It is the `progress` callback of poll_psa.run: called with (object, records so far) after each
page, and told by `expect(object, total)` how many to expect when the PSA can count them; without
a total it shows the count and the rate only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 28


class ProgressBar:
    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._totals: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._current: str | None = None

    def expect(self, obj: str, total: int) -> None:
        self._totals[obj] = total

    def __call__(self, obj: str, done: int) -> None:
        now = self._clock()
        if obj != self._current:
            if self._current is not None:
                self._stream.write("\n")
            self._current = obj
            self._started[obj] = now
        self._stream.write("\r" + self.line(obj, done, now - self._started[obj]))
        self._stream.flush()

    def line(self, obj: str, done: int, elapsed: float) -> str:
        """The text drawn for `obj` after `elapsed` seconds with `done` records handled."""
        rate = done / elapsed if elapsed > 0 else 0.0
        total = self._totals.get(obj)
        if not total:
            return f"{obj:<10} {done:>10,} records  {rate:,.0f}/s"
        share = min(1.0, done / total)
        filled = int(share * WIDTH)
        eta = (total - done) / rate if rate and done < total else 0.0
        bar = "#" * filled + "." * (WIDTH - filled)
        return f"{obj:<10} [{bar}] {share:>4.0%} {done:>10,}/{total:,}  {rate:,.0f}/s  ETA {_duration(eta)}"

    def close(self) -> None:
        if self._current is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._current = None


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
