"""Money.from_vendor_number: JSON doubles are read through their shortest repr, exactly; the fast
path for plain decimals (minor_from_float) gives the same answer as the exact path, or none."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from app.core.money import Money, MoneyError, minor_from_float


def _exact(value: float, currency: str) -> int | None:
    try:
        return Money.from_decimal(repr(value), currency).amount_minor
    except MoneyError:
        return None


def _doubles() -> list[float]:
    rnd = random.Random(11)
    values = [0.0, -0.0, 0.1, 0.3, 0.1 + 0.2, 1.005, 2.675, 68.73, 18.6, 0.125, 1e-05, 5e-324, 10000.0,
              -12.34, 999_999_999_999.99, 123_456_789_012.345, 1e11 + 0.01]
    for _ in range(20_000):
        minor = rnd.randrange(-(10**14), 10**14) if rnd.random() < 0.3 else rnd.randrange(-(10**7), 10**7)
        values.append(float(Decimal(minor).scaleb(-rnd.choice([0, 1, 2, 3, 4, 5]))))
        values.append(rnd.uniform(-1e6, 1e6))
    return values


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_the_fast_path_agrees_with_the_exact_path_on_every_double(currency: str) -> None:
    for value in _doubles():
        fast = minor_from_float(value, currency)
        exact = _exact(value, currency)
        if abs(value) < 1e12:
            assert fast == exact, (value, currency)
        else:
            assert fast is None, value  # left to the exact path
        if exact is not None:
            assert Money.from_vendor_number(value, currency) == Money(exact, currency)


def test_vendor_numbers_keep_their_exact_meaning() -> None:
    assert Money.from_vendor_number(68.73, "USD") == Money(6873, "USD")
    assert Money.from_vendor_number(10000.0, "JPY") == Money(10000, "JPY")
    assert Money.from_vendor_number(18.6, "KWD") == Money(18600, "KWD")
    assert Money.from_vendor_number(-0.0, "USD") == Money(0, "USD")
    for value, currency in ((0.1 + 0.2, "USD"), (12.345, "USD"), (0.5, "JPY"), (1e-05, "USD")):
        with pytest.raises(MoneyError, match="more decimal places"):
            Money.from_vendor_number(value, currency)
    assert minor_from_float(1.5, "XXX") is None  # an unknown currency is the exact path's to refuse
    with pytest.raises(MoneyError, match="unsupported currency"):
        Money.from_vendor_number(1.5, "XXX")
