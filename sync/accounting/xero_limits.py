"""Xero's per-tenant limits, kept on our side: 60 calls in any minute and 5 at a time.

Xero answers a call over the limit with 429, and a tenant that keeps hitting it is throttled for
longer, so the connector waits before sending instead. A sliding 60-second window of our own call
times is the first guard; `X-MinLimit-Remaining` on each response (which also counts calls made by
other apps on the same tenant) and a 429's `Retry-After` pause the tenant when Xero says so.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PER_MINUTE = 60
CONCURRENT = 5
WINDOW_SECONDS = 60.0


class _Tenant:
    def __init__(self, concurrent: int) -> None:
        self.calls: deque[float] = deque()
        self.paused_until = 0.0
        self.slots = threading.BoundedSemaphore(concurrent)


class RateLimiter:
    """One per process (see `shared_limiter`); `now`/`sleep` are injectable so tests run at once."""

    def __init__(
        self,
        *,
        per_minute: int = PER_MINUTE,
        concurrent: int = CONCURRENT,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.concurrent = concurrent
        self._now = now
        self._sleep = sleep
        self._tenants: dict[str, _Tenant] = {}
        self._lock = threading.Lock()
        self.waited: deque[float] = deque(maxlen=1000)  # the latest waits, for diagnostics and tests

    @contextmanager
    def slot(self, tenant_id: str) -> Iterator[None]:
        """Hold one of the tenant's concurrent slots for one call, after waiting for the window."""
        tenant = self._tenant(tenant_id)
        with tenant.slots:
            self._wait_turn(tenant)
            yield

    def note_remaining(self, tenant_id: str, header: str | None) -> None:
        """Xero's X-MinLimit-Remaining: at zero, nothing more is sent for a whole window."""
        if header is None:
            return
        try:
            remaining = int(header.strip())
        except ValueError:
            return
        if remaining <= 0:
            self.pause(tenant_id, WINDOW_SECONDS)

    def pause(self, tenant_id: str, seconds: float) -> None:
        tenant = self._tenant(tenant_id)
        with self._lock:
            tenant.paused_until = max(tenant.paused_until, self._now() + max(0.0, seconds))

    def _tenant(self, tenant_id: str) -> _Tenant:
        with self._lock:
            found = self._tenants.get(tenant_id)
            if found is None:
                found = self._tenants[tenant_id] = _Tenant(self.concurrent)
            return found

    def _wait_turn(self, tenant: _Tenant) -> None:
        while True:
            with self._lock:
                now = self._now()
                while tenant.calls and tenant.calls[0] <= now - WINDOW_SECONDS:
                    tenant.calls.popleft()
                if tenant.paused_until > now:
                    wait = tenant.paused_until - now
                elif len(tenant.calls) >= self.per_minute:
                    wait = tenant.calls[0] + WINDOW_SECONDS - now
                else:
                    tenant.calls.append(now)
                    return
            wait = max(wait, 0.001)
            self.waited.append(wait)
            self._sleep(wait)


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter() -> RateLimiter:
    """The process-wide limiter: every Xero connector instance of a tenant counts against one window."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RateLimiter()
        return _shared
