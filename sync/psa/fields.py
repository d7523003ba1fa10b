"""Vendor ids, timestamps and dates as every PSA mapping reads them, with the reasons quarantine shows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from app.core.clock import parse_vendor_date, vendor_instant
from sync.base import RecordError


def optional_time(value: Any) -> datetime | None:
    """An aware UTC instant, or None when absent or unparseable (change stamps are advisory)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return vendor_instant(value)
    except ValueError:
        return None


def required_date(raw: Mapping[str, Any], key: str, problems: list[str]) -> date | None:
    """The calendar date in `raw[key]`; a missing or unparseable one is added to `problems`."""
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"missing {key}")
        return None
    try:
        return parse_vendor_date(str(value))
    except ValueError as exc:
        why = f" ({exc})" if str(exc).startswith("year") else ""
        problems.append(f"unparseable {key} {value!r}{why}")
        return None


def record_id(raw: Any) -> str:
    """A vendor record's `id` as text. Every PSA here counts ids from 1: a float, zero or a
    negative id is refused (a write-back could never name that record)."""
    if not isinstance(raw, Mapping):
        raise RecordError("record is not a JSON object")
    value = raw.get("id")
    if type(value) is float:
        raise RecordError(f"id {value!r} is not a whole number")
    if type(value) is int and value <= 0:
        raise RecordError(f"id {value} is not a positive number")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise RecordError("missing id")
    return str(value).strip()


def text_or_none(value: Any) -> str | None:
    """A vendor field as trimmed text; None for absent or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
