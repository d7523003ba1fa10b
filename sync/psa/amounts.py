"""Vendor decimals on invoice lines, for PSAs that keep more places on a line than the currency has.

Invoice totals are taken exactly (Money.from_vendor_number rejects a stray fraction of a cent).
Line amounts are rounded to the currency's minor unit with one rule (half to even); the small
remainder that per-line rounding leaves becomes a "Rounding" line, so the lines still sum to the
subtotal exactly; a remainder larger than a minor unit per rounded line (any remainder, when no
line had places to round) is a wrong invoice, not rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from app.core.emails import money_text
from app.core.money import Money, MoneyError, exponent, minor_from_float
from sync.base import RecordError, RemoteLine


@functools.lru_cache(maxsize=64)
def _places(currency: str) -> int:
    return exponent(currency)


def exact_minor(value: Any, currency: str) -> int:
    """What Money.from_vendor_number(value, currency).amount_minor gives (and raises), faster.

    A backfill converts ten amounts per invoice: JSON doubles that are plain decimals (no exponent,
    no more places than the currency has) are converted from their shortest repr by string
    arithmetic; everything else goes through Money, which raises MoneyError with the reason.
    """
    if type(value) is float and (minor := minor_from_float(value, currency)) is not None:
        return minor
    if type(value) is float and -1e12 < value < 1e12:
        text = repr(value)
        whole, dot, frac = text.partition(".")
        places = _places(currency)
        frac = frac.rstrip("0")
        if dot and "e" not in frac and len(frac) <= places:
            return int(whole + frac.ljust(places, "0"))
    elif type(value) is int and -(10**12) < value < 10**12:
        return value * 10 ** _places(currency)
    return Money.from_vendor_number(value, currency).amount_minor


def rounded_minor(value: Any, currency: str, where: str, *, default: int | None = None) -> int:
    """`value` (a JSON number or numeric string) in minor units, rounded half to even.

    Blank gives `default`; raises RecordError naming `where` when it is missing and has no
    default, or is not a finite number.
    """
    if value is None or value == "":
        if default is None:
            raise RecordError(f"{where} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RecordError(f"{where} {value!r} is not a number")
    try:
        d = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise RecordError(f"{where} {value!r} is not a number") from None
    if not d.is_finite():
        raise RecordError(f"{where} {value!r} is not a number")
    if d and d.adjusted() > 15:  # past MAX_MINOR in any currency; checked before the arithmetic overflows
        raise RecordError(f"{where} {value!r} is beyond any real invoice")
    return int(d.scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def was_rounded(value: Any, currency: str) -> bool:
    """Whether rounded_minor(value) dropped places: the vendor's number has more decimals than the
    currency (Autotask keeps four on a line)."""
    try:
        d = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        return False
    return d.is_finite() and d != d.quantize(Decimal(1).scaleb(-_places(currency)), rounding=ROUND_HALF_EVEN)


def settle(
    lines: list[RemoteLine], subtotal_minor: int, currency: str, *, rounded: int
) -> tuple[tuple[RemoteLine, ...], str | None]:
    """The lines, plus a Rounding line for the remainder that rounding `rounded` of their amounts
    left (at most a minor unit each); or the reason to reject. Lines in whole minor units must sum
    to the subtotal exactly."""
    rest = subtotal_minor - sum(line.amount_minor for line in lines)
    if rest and abs(rest) <= rounded:
        return (*lines, RemoteLine("Rounding", "1", rest, rest)), None
    return tuple(lines), lines_mismatch(lines, subtotal_minor, currency)


def lines_mismatch(lines: Iterable[RemoteLine], subtotal_minor: int, currency: str) -> str | None:
    """The reason to reject an invoice whose lines do not add up to its subtotal, else None."""
    total = sum(line.amount_minor for line in lines)
    if total == subtotal_minor:
        return None
    return (
        f"lines sum to {money_text(total, currency)} but subtotal is {money_text(subtotal_minor, currency)}"
    )


def field_minor(raw: Mapping[str, Any], key: str, currency: str, problems: list[str]) -> int:
    """`raw[key]` exactly in minor units; 0 when absent, and a problem noted when it is not exact."""
    value = raw.get(key)
    if value is None:
        return 0
    try:
        return exact_minor(value, currency)
    except MoneyError as exc:
        problems.append(f"{key}: {exc}")
        return 0
