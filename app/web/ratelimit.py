"""A per-process limiter for sign-in attempts (and sign-in link requests).

NOTE: state lives in memory, so each gunicorn worker counts on its own and a restart forgets;
that bounds guessing to a few attempts per worker per window, which is the point.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta

from app.core.clock import Clock


class RateLimiter:
    """After `limit` hits on a key within `window`, the key is refused for `lockout`."""

    def __init__(
        self,
        clock: Clock,
        *,
        limit: int = 5,
        window: timedelta = timedelta(minutes=15),
        lockout: timedelta = timedelta(minutes=15),
        max_keys: int = 10_000,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.lockout = lockout
        self.max_keys = max_keys
        self._hits: dict[str, deque[datetime]] = {}
        self._locked_until: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def is_blocked(self, *keys: str) -> bool:
        now = self.clock.utc_now()
        with self._lock:
            return any(self._locked_until.get(k, now) > now for k in keys)

    def hit(self, *keys: str) -> None:
        """Count one failure (or one request) against every key."""
        now = self.clock.utc_now()
        with self._lock:
            if len(self._hits) > self.max_keys:
                self._prune(now)
            for key in keys:
                hits = self._hits.setdefault(key, deque())
                hits.append(now)
                while hits and hits[0] <= now - self.window:
                    hits.popleft()
                if len(hits) >= self.limit:
                    self._locked_until[key] = now + self.lockout
                    hits.clear()

    def reset(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._hits.pop(key, None)

    def _prune(self, now: datetime) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
