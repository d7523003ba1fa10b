"""Jinja filters of the portal; money and dates reuse the email formatting so both agree."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from babel.dates import format_date, format_time
from flask import Flask
from markupsafe import Markup, escape

from app.config import Config
from app.core.clock import from_db
from app.core.emails import LOCALE, date_long, money
from app.core.method_names import method_name
from app.core.money import Money, exponent
from app.core.payment_refs import payment_reference  # the "PAY-000123" filter

KIND_LABELS = {
    "agreement": "Agreement",
    "project": "Project",
    "time_and_materials": "T&M",
    "product": "Product",
    "credit_memo": "Credit memo",
    "other": "Other",
}


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())




_SOFT_BREAK = re.compile(r"(?<=[:/])(?=\w)|(?<=\w)(?=[@.])")


def soft_breaks(value: object) -> Markup:
    """Text with a line-break opportunity (<wbr>) after ":" and "/" and before "@" and ".":
    an address, an actor ("login:ana@acme.example"), an action name or a URL wraps at its natural
    joints instead of breaking mid-word or pushing a phone's page sideways."""
    text = "" if value is None else str(value)
    return Markup("<wbr>").join(escape(part) for part in _SOFT_BREAK.split(text))


def method_label(p: Mapping[str, Any]) -> str:
    """ "Visa •••• 4242", "Chase •••• 6789 (ACH)", or the plain method when the details are unknown."""
    keys = p.keys() if hasattr(p, "keys") else ()
    brand = p["brand"] if "brand" in keys else None
    last4 = p["last4"] if "last4" in keys else None
    bank = p["bank_name"] if "bank_name" in keys else None
    return method_name(p["method"], brand=brand, last4=last4, bank_name=bank)


@functools.lru_cache(maxsize=8192)
def date_short(value: date | str | None) -> str:
    """A calendar date for a table cell: "Sep 24, 2026" (never wraps mid-date with .nowrap)."""
    if not value:
        return ""
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return format_date(day, format="medium", locale=LOCALE)


@functools.lru_cache(maxsize=8192)
def _date_long(value: date | str) -> str:
    return date_long(value)


@functools.lru_cache(maxsize=64)
def currency_prefix(currency: str) -> str:
    """What the display puts before the digits: "$" for USD, "KWD" for KWD (for the live total)."""
    shown = money(0, currency)
    return shown[: next(i for i, ch in enumerate(shown) if ch.isdigit())]


def fast_money(amount_minor: int, currency: str) -> str:
    """The same text as app.core.emails.money (Babel, en_US), built without Babel per call.

    A page of 50 invoices formats a few hundred amounts, and Babel's pattern machinery was most
    of the list's time; the currency's symbol comes from Babel once, the digits are grouped here.
    tests/web/test_money_filter.py checks both agree.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        return money(amount_minor, currency)  # raises MoneyError like the original
    places = exponent(currency)
    whole, frac = divmod(abs(amount_minor), 10**places)
    digits = f"{whole:,}" + (f".{frac:0{places}d}" if places else "")
    return ("-" if amount_minor < 0 else "") + currency_prefix(currency) + digits


def money_signed(amount_minor: int, currency: str) -> str:
    """A credit shown as "−$307.60" (a real minus sign), anything else as fast_money."""
    if amount_minor < 0:
        return "−" + fast_money(-amount_minor, currency)
    return fast_money(amount_minor, currency)


def amount_input(amount_minor: int, currency: str) -> str:
    """Minor units as the plain decimal a person would type: 125000 USD -> "1250.00"."""
    return format(Money(amount_minor, currency).to_decimal(), "f")


def wall_clock(moment: datetime) -> str:
    """An aware instant as the wall-clock time of its own zone: "3:04 PM CDT"."""
    # NOTE: CLDR puts a narrow no-break space before AM/PM; a plain space reads and copies better.
    clock_text = format_time(moment, format="short", locale=LOCALE).replace("\u202f", " ")
    return f"{clock_text} {moment.strftime('%Z')}"


def register_filters(app: Flask, config: Config) -> None:
    tz = config.tz

    def local_date(instant: str | None) -> date | None:
        """A stored UTC instant as the MSP's calendar date."""
        return None if not instant else from_db(instant).astimezone(tz).date()

    def local_date_long(instant: str | None) -> str:
        day = local_date(instant)
        return "" if day is None else date_long(day)

    def local_date_short(instant: str | None) -> str:
        return date_short(local_date(instant))

    def local_time(instant: str | None) -> str:
        """A stored UTC instant as the MSP's wall-clock time with its zone: "3:04 PM CDT"."""
        return wall_clock(from_db(instant).astimezone(tz)) if instant else ""

    app.jinja_env.filters.update(
        money=fast_money,
        money_signed=money_signed,
        date_long=_date_long,
        local_date=local_date,
        local_date_long=local_date_long,
        local_date_short=local_date_short,
        local_time=local_time,
        date_short=date_short,
        payment_reference=payment_reference,
        method_label=method_label,
        kind_label=kind_label,
        amount_input=amount_input,
        currency_prefix=currency_prefix,
        currency_places=exponent,
        soft_breaks=soft_breaks,
    )
    app.jinja_env.globals.update(branding=config.branding, kind_labels=KIND_LABELS)
