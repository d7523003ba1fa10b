"""Money from decimal text at the edges: an exponent far past any amount is refused as money, fast."""

from __future__ import annotations

import pytest

from app.core.money import Money, MoneyError


def test_an_amount_with_a_huge_exponent_is_a_money_error_not_a_crash():
    for text in ("1E+999990", "-1e400", "1E+19"):
        with pytest.raises(MoneyError, match="out of range"):
            Money.from_decimal(text, "USD")
    with pytest.raises(MoneyError, match="more decimal places"):
        Money.from_decimal("1E-999990", "USD")
    assert Money.from_decimal("999999999999.99", "USD").amount_minor == 99_999_999_999_999
