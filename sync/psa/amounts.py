"""Vendor decimals on invoice lines, for PSAs that keep more places on a line than the currency has.

Invoice totals are taken exactly (Money.from_vendor_number rejects a stray fraction of a cent).
Line amounts are rounded to the currency's minor unit with one rule (half to even); the small
remainder that per-line rounding leaves becomes a "Rounding" line, so the lines still sum to the
subtotal exactly; a remainder larger than a minor unit per line is a wrong invoice, not rounding.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from app.core.money import exponent
from sync.base import RecordError, RemoteLine
from sync.psa.connectwise import check_lines_sum


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
    return int(d.scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def settle(
    lines: list[RemoteLine], subtotal_minor: int, currency: str
) -> tuple[tuple[RemoteLine, ...], str | None]:
    """The lines, plus a Rounding line for a per-line rounding remainder; or the reason to reject."""
    rest = subtotal_minor - sum(line.amount_minor for line in lines)
    if rest and abs(rest) <= max(1, len(lines)):
        return (*lines, RemoteLine("Rounding", "1", rest, rest)), None
    return tuple(lines), check_lines_sum(tuple(lines), subtotal_minor, currency)
