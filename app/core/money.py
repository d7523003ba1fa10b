"""Money as integer minor units plus an ISO 4217 currency.

No float ever touches an amount. Vendor decimals enter through `Money.from_decimal`
and leave through `Money.to_decimal`; both use the exponent table below.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# Minor-unit exponents that differ from 2. Stripe's own list of zero-decimal currencies is
# used (it is what charges are denominated in); ISO agrees for all of these.
_ZERO_DECIMAL = {
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF",
    "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
}
_THREE_DECIMAL = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
_KNOWN = _ZERO_DECIMAL | _THREE_DECIMAL | {
    "AED", "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF",
    "ILS", "INR", "MXN", "NOK", "NZD", "PHP", "PLN", "RON", "SEK", "SGD", "THB", "TRY",
    "USD", "ZAR",
}


MAX_MINOR = 10**15  # ten trillion dollars in cents
# Minor units per major unit, by currency (what `exponent` works out, as one dict lookup).
_SCALE = {c: 10 ** (0 if c in _ZERO_DECIMAL else 3 if c in _THREE_DECIMAL else 2) for c in _KNOWN}
# Below 2**53 / 1000 a double's error after scaling stays far under half a minor unit.
_FAST_LIMIT = 1e12


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def check_currency(code: str) -> str:
    """Return the upper-case ISO code, or raise MoneyError for an unknown one."""
    if not isinstance(code, str):
        raise MoneyError(f"currency must be a 3-letter ISO code, got {code!r}")
    upper = code.strip().upper()
    if upper not in _KNOWN:
        raise MoneyError(f"unsupported currency {code!r}")
    return upper


def exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit."""
    c = check_currency(currency)
    if c in _ZERO_DECIMAL:
        return 0
    if c in _THREE_DECIMAL:
        return 3
    return 2


def minor_from_float(value: float, currency: str) -> int | None:
    """The minor units a JSON double means, when its shortest repr has no more places than the
    currency has (what `Money.from_vendor_number` accepts); None when that needs the exact path.

    Without formatting the repr: the double nearest to m / scale is `value` exactly when the
    repr of `value` is that decimal or a shorter one, and the scaled double rounds to m.
    """
    scale = _SCALE.get(currency)
    if scale is None or not -_FAST_LIMIT < value < _FAST_LIMIT:
        return None
    minor = round(value * scale)
    return minor if minor / scale == value else None


def card_chargeable(amount_minor: int, currency: str) -> bool:
    """Stripe requires three-decimal amounts to end in 0 (it charges to two places)."""
    return exponent(currency) != 3 or amount_minor % 10 == 0


@dataclass(frozen=True, order=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise MoneyError(f"amount_minor must be an int, got {self.amount_minor!r}")
        if abs(self.amount_minor) > MAX_MINOR:
            # Far beyond any invoice, and beyond what SQLite's INTEGER holds: a data error.
            raise MoneyError(f"amount {self.amount_minor} minor units is out of range")
        object.__setattr__(self, "currency", check_currency(self.currency))

    @classmethod
    def from_decimal(cls, value: Decimal | str | int, currency: str) -> Money:
        """Exact conversion: a value with more places than the currency has raises.

        Vendors send `10000.00` for yen and `18.600` for dinars; both are exact. A value such as
        `12.345` USD is rejected rather than rounded, because a silent rounding is a lost cent.
        """
        if isinstance(value, float):
            raise MoneyError("floats are not accepted for money; pass a str or Decimal")
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise MoneyError(f"not a number: {value!r}") from exc
        if not d.is_finite():
            raise MoneyError(f"not a finite amount: {value!r}")
        if d.adjusted() > 18:  # far past MAX_MINOR: refuse before int() of a huge exponent
            raise MoneyError(f"amount out of range: {str(value)[:40]}")
        scaled = d.scaleb(exponent(currency))
        if scaled != scaled.to_integral_value():
            raise MoneyError(f"{str(value)[:40]} has more decimal places than {currency.upper()} allows")
        return cls(int(scaled), currency)

    @classmethod
    def from_vendor_number(cls, value: object, currency: str) -> Money:
        """Vendor JSON numbers arrive as floats; go through their shortest repr, never binary."""
        if type(value) is float:
            minor = minor_from_float(value, currency)
            if minor is not None:
                return cls(minor, currency)
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise MoneyError(f"not an amount: {value!r}")
        return cls.from_decimal(repr(value) if isinstance(value, float) else value, currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-exponent(self.currency))

    def _same(self, other: Money) -> None:
        if self.currency != other.currency:
            raise MoneyError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)


def percent_of(amount_minor: int, basis_points: int) -> int:
    """The one rounding rule: basis points of an amount, half to even, in minor units."""
    exact = Decimal(amount_minor) * Decimal(basis_points) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
