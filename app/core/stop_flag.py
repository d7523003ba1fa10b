"""The process-wide "please stop" that SIGTERM raises: jobs finish their unit of work, then return.

Each unit (a PSA page and its cursor, one charge, one outbox entry) is already one transaction or
one idempotent call, so stopping between units leaves nothing half-written; the next run goes on
from there. Set by the service's SIGTERM handler (app.server) and by job commands (app.cli).
"""

from __future__ import annotations

import threading

_requested = threading.Event()


def request() -> None:
    """Ask every job in this process to stop after its current unit of work."""
    _requested.set()


def requested() -> bool:
    """True once a stop was asked for; jobs check it between units of work."""
    return _requested.is_set()


def reset() -> None:
    """Clear the request (a new scheduler in the same process, and tests)."""
    _requested.clear()


class Stopped(Exception):
    """A job returned early because a stop was requested; what it committed stays, the rest waits."""
