"""A vendor's Retry-After puts an outbox entry off, but never past six hours and never by a value
that is not a number of seconds (an infinite one used to crash the drain)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from app.core import outbox
from app.core.clock import from_db


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        (120.0, timedelta(seconds=120)),
        (1e9, timedelta(hours=6)),
        (math.inf, timedelta(seconds=30)),  # no answer: the drain's own backoff
        (math.nan, timedelta(seconds=30)),
    ],
)
def test_retry_after_puts_the_entry_off_within_bounds(services, retry_after, wait):
    with services.store.write() as db:
        outbox.enqueue(db, services.clock, kind="psa_payment", key="k-1", payload={"x": 1})

    def refuse(payload, key):
        raise outbox.RetryableError("HTTP 429", retry_after=retry_after)

    report = outbox.drain(
        services.store, services.clock, {"psa_payment": refuse}, max_attempts=8, base_delay_seconds=30
    )

    row = services.store.one("SELECT status, attempts, next_attempt_at FROM outbox WHERE idem_key = 'k-1'")
    assert (report.retried, row["status"], row["attempts"]) == (1, "pending", 1)
    assert from_db(row["next_attempt_at"]) - services.clock.utc_now() == wait
