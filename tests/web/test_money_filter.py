"""The portal's fast money formatting says exactly what Babel (the emails' formatter) says."""

from __future__ import annotations

import random

import pytest

from app.core.emails import money
from app.web.filters import fast_money, money_signed


@pytest.mark.parametrize("currency", ["USD", "EUR", "GBP", "JPY", "KRW", "KWD", "BHD", "CAD", "CHF", "INR"])
def test_fast_money_matches_babel_for_every_kind_of_currency(currency):
    rnd = random.Random(currency)
    amounts = [0, 1, 9, 10, 99, 100, 999, 1000, 100_000, 123_456_789, 10**15]
    amounts += [rnd.randrange(-(10**12), 10**12) for _ in range(300)]
    for amount in amounts:
        assert fast_money(amount, currency) == money(amount, currency), amount


def test_a_credit_is_shown_with_a_real_minus_sign():
    assert money_signed(-30_760, "USD") == "−$307.60"
    assert money_signed(30_760, "USD") == "$307.60"
