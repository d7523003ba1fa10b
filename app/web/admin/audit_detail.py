"""An audit row's detail in words for the audit log page: "amount: $100.00", not
`{"amount_minor": 10000}`. The stored JSON stays as it is, and the CSV export keeps it raw.

Amounts are the keys ending in `_minor` (STYLE: money is integer minor units), plus the
invoice-number -> minor-amount maps some entries carry (`allocations`, `invoices`). Their
currency is the entry's own `currency` when it has one; otherwise that of what the entry is
about (`payment:`, `invoice:`, `payout:` or `client:` target), else the default entity's.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

from app.core.emails import money
from app.core.money import MoneyError
from app.core.store import Store

# Keys whose value maps invoice numbers to amounts in minor units.
_AMOUNT_MAPS = frozenset({"allocations", "invoices"})
_TARGET_CURRENCY = {
    "payment": "SELECT currency FROM payments WHERE id = ?",
    "invoice": "SELECT currency FROM invoices WHERE id = ?",
    "payout": "SELECT currency FROM payouts WHERE id = ?",
    "client": "SELECT e.currency FROM clients c JOIN entities e ON e.id = c.entity_id WHERE c.id = ?",
}


def target_currency(store: Store, target: str | None) -> str | None:
    """The currency of the payment, invoice, payout or client an audit target names, if any."""
    kind, _, ident = (target or "").partition(":")
    sql = _TARGET_CURRENCY.get(kind)
    if sql is None or not ident.isdigit():
        return None
    found = store.scalar(sql, (int(ident),))
    return str(found) if found else None


def _label(key: str) -> str:
    for suffix in ("_minor", "_json"):
        key = key.removesuffix(suffix)
    return key.replace("_", " ")


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{_label(str(k))}: {_plain(v)}" for k, v in value.items()) or "none"
    return str(value)


def _text(value: str) -> str:
    # JSON may carry a lone surrogate ("\ud800"), which no page can be encoded with.
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(key: str, value: Any, amount: Callable[[int], str]) -> str:
    if key.endswith("_minor") and _is_int(value):
        return amount(value)
    if key.endswith("_minor") and _looks_numeric(value):
        return f"{_plain(value)} (minor units)"  # as stored: "10000" must not read as $10,000
    if key in _AMOUNT_MAPS and isinstance(value, dict) and value:
        return ", ".join(f"{number} {amount(v) if _is_int(v) else _plain(v)}" for number, v in value.items())
    if key.endswith("_json") and isinstance(value, str):
        with contextlib.suppress(ValueError):  # not JSON after all: shown as the text it is
            value = json.loads(value)
    if key == "changed" and isinstance(value, dict):  # client overrides: {field: [before, after]}
        return "; ".join(
            f"{_label(str(k))}: {_change_side(k, v[0])} → {_change_side(k, v[1])}"
            if isinstance(v, list) and len(v) == 2 else f"{_label(str(k))}: {_plain(v)}"
            for k, v in value.items()
        )
    return _plain(value)


def _change_side(key: Any, value: Any) -> str:
    """One side of an override change; the approval threshold, [minor, currency], as money."""
    if (key == "approval_threshold" and isinstance(value, list) and len(value) == 2
            and _is_int(value[0]) and isinstance(value[1], str)):
        with contextlib.suppress(MoneyError):
            return money(value[0], value[1])
    return _plain(value)


def _looks_numeric(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and value.strip().removeprefix("-").replace(".", "", 1).isdigit()


def detail_items(detail_json: str | None, currency: str) -> list[tuple[str, str]]:
    """(label, text) pairs of an audit entry's detail, in stored order; amounts as money in
    `currency` unless the detail names its own. A detail that is not a JSON object is one pair."""
    if not detail_json:
        return []
    try:
        detail = json.loads(detail_json)
    except ValueError:
        return [("detail", detail_json)]
    if not isinstance(detail, dict):
        return [("detail", _plain(detail))]
    own = detail.get("currency")
    currency = own if isinstance(own, str) and own else currency

    def amount(minor: int) -> str:
        try:
            return money(minor, currency)
        except MoneyError:  # an unknown currency code: the number as stored, with the code
            return f"{minor} {currency} (minor units)"

    items = [(_text(_label(k)), _text(_value(k, v, amount))) for k, v in detail.items()]
    has_money = any(k.endswith("_minor") or k in _AMOUNT_MAPS for k in detail)
    # Once amounts are written with their symbol, a separate "currency: USD" says nothing new.
    return [(k, v) for k, v in items if not (k == "currency" and has_money)]
