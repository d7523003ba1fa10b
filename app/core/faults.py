"""Fault injection for the crash tests: `point(name)` kills this process there, on request.

A no-op unless the environment variable CASHLOOP_FAULT names the point. With
CASHLOOP_FAULT_AFTER=n the first n passes are let through and the next one is killed, so a test
can crash the run at its third charge rather than its first. SIGKILL, not an exception: nothing
(no `finally`, no atexit, no rollback by Python) runs, exactly like a power cut.

Points used by the payments engine, in the order one charge passes them:
- `before_claim`: the attempt and its pending payment are committed; nothing is claimed yet;
- `before_stripe`: the payment is claimed (submitted); Stripe has not been called;
- `after_stripe`: Stripe answered; nothing of its answer is recorded;
- `before_commit`: the answer and its outbox entries are written but not committed;
- `during_outbox`: an outbox entry is claimed (running) and its handler has not run.
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def point(name: str) -> None:
    """Kill the process with SIGKILL if CASHLOOP_FAULT == name (after CASHLOOP_FAULT_AFTER passes)."""
    if os.environ.get("CASHLOOP_FAULT") != name:
        return
    seen = _passes.get(name, 0)
    _passes[name] = seen + 1
    if seen >= int(os.environ.get("CASHLOOP_FAULT_AFTER") or 0):
        os.kill(os.getpid(), signal.SIGKILL)
