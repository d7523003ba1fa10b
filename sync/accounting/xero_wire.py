"""Xero's wire format: JSON numbers written from exact decimals, its two date forms, `where` filters.

Xero takes and returns amounts as JSON numbers. They are written here from `Decimal` digit for
digit (`18.600`, `10000`) and read back with `parse_float=Decimal`, so no amount ever passes
through a binary float. Dates come back either as `/Date(1552429813667+0000)/` (milliseconds since
the epoch, UTC) or as ISO text (`2019-02-22T00:00:00`); both mean a calendar date.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.core.money import Money

MAX_IDEMPOTENCY_KEY = 128  # Xero's documented limit
_NUMBER_MARK = "\x1fdecimal:"  # cannot occur in our own strings: control characters are never sent
_MARKED = re.compile(r'"\\u001fdecimal:(-?\d+(?:\.\d+)?)"')
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def to_json(body: Any) -> bytes:
    """`body` as JSON, every Decimal written as a JSON number with exactly its digits."""

    def mark(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"not a finite amount: {value}")
            return f"{_NUMBER_MARK}{value:f}"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mark(v) for v in value]
        if isinstance(value, float):
            raise TypeError("floats are not sent to Xero; pass a Decimal")
        return value

    return _MARKED.sub(r"\1", json.dumps(mark(body), ensure_ascii=True)).encode()


def from_json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def amount(minor: int, currency: str) -> Decimal:
    """Minor units as the decimal Xero takes (`100.00`, `10000` yen, `18.600` dinars)."""
    return Money(minor, currency).to_decimal()


def minor(value: Any, currency: str) -> int:
    """A Xero amount (Decimal or int from `from_json`) as exact minor units."""
    if value is None:
        return 0
    return Money.from_decimal(
        value if isinstance(value, Decimal) else Decimal(str(value)), currency
    ).amount_minor


def parse_date(value: str) -> date:
    """A Xero date in either form; `/Date(ms±hhmm)/` is an instant in UTC whose date is meant."""
    text = value.strip()
    found = _MS_DATE.match(text)
    if found:
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(found.group(1)))
        return instant.date()
    if len(text) < 10:
        raise ValueError(f"not a Xero date: {value!r}")
    return date.fromisoformat(text[:10])


def idempotency_key(outbox_key: str, part: str = "") -> str:
    """The Idempotency-Key of one request: the outbox key (plus which part of the push it is), or a
    digest of it when that would exceed Xero's 128 characters. Same inputs, same header."""
    text = f"{outbox_key}/{part}" if part else outbox_key
    if len(text) <= MAX_IDEMPOTENCY_KEY:
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()


def quoted(text: str) -> str:
    """A string literal for a `where` filter."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def where_date(day: date) -> str:
    return f"DateTime({day.year},{day.month:02d},{day.day:02d})"
