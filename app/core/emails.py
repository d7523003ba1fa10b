"""Render the email templates in app/email_templates into subject, text and HTML.

Each email `<name>` is three Jinja files: `<name>.subject.txt`, `<name>.txt` and `<name>.html`.
Only `.html` is autoescaped. A file of the same name in the MSP's override folder replaces the
shipped one, including the shared `_layout.html` and `_footer.txt`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.core.money import Money, MoneyError, exponent

if TYPE_CHECKING:
    from app.config import BrandingSettings

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "email_templates"
LOCALE = "en_US"
_CURRENCY_PATTERN = Locale.parse(LOCALE).currency_formats["standard"]


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def money(amount_minor: int, currency: str) -> str:
    """Format minor units for display with exactly the currency's number of decimals.

    `money(125000, "USD")` is "$1,250.00", `money(10000, "JPY")` "¥10,000",
    `money(18600, "KWD")` "KWD18.600". Raises MoneyError for a non-int amount or an unknown
    currency.
    """
    value = Money(amount_minor, currency)
    # NOTE: Babel's own digit table disagrees with ours for a few currencies (HUF, IQD), so
    # the pattern is pinned to the exponent the amounts are stored in; nothing is rounded.
    pattern = copy.copy(_CURRENCY_PATTERN)
    places = exponent(value.currency)
    pattern.frac_prec = (places, places)
    return format_currency(
        value.to_decimal(), value.currency, format=pattern, locale=LOCALE, currency_digits=False
    )


def money_text(amount_minor: int, currency: str) -> str:
    """money() for texts about records that may be wrong (a quarantine reason, an exception):
    "$1,080.50", or "108050 minor units of XYZ" for a currency money() refuses."""
    try:
        return money(amount_minor, currency)
    except MoneyError:
        return f"{amount_minor} minor units of {currency}"


def date_long(value: date | str) -> str:
    """A calendar date as "March 31, 2016"; accepts a date or an ISO "YYYY-MM-DD" string.

    A datetime is refused: an instant has no calendar date until it is converted to the MSP's
    time zone, which is the caller's job.
    """
    if isinstance(value, datetime):
        raise TypeError("date_long takes a local date; convert the instant to the MSP's time zone first")
    if isinstance(value, str):
        value = date.fromisoformat(value)
    return format_date(value, format="long", locale=LOCALE)


@functools.lru_cache(maxsize=8)
def _environment(override_dir: str | None) -> Environment:
    search = [override_dir, str(TEMPLATE_DIR)] if override_dir else [str(TEMPLATE_DIR)]
    env = Environment(
        loader=FileSystemLoader(search),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        # A missing context key must fail the send, not mail "Hi ," to a client.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["date_long"] = date_long
    return env


def _absolute(url: str, base_url: str) -> str:
    return base_url + url if url.startswith("/") else url


def render(
    name: str,
    context: dict[str, Any],
    *,
    branding: BrandingSettings,
    base_url: str,
    override_dir: str | None = None,
) -> RenderedEmail:
    """Render email `name` with `context` plus `branding`, `base_url` (no trailing slash) and
    `logo_src` (the logo as an absolute URL, or "").

    Returns the subject on one line and both bodies. Raises jinja2.TemplateNotFound for an
    unknown name and jinja2.UndefinedError when the context lacks a key a template uses.
    Pure: the same inputs give the same output.
    """
    env = _environment(override_dir)
    base = base_url.rstrip("/")
    values = {
        **context,
        "branding": branding,
        "base_url": base,
        "logo_src": _absolute(branding.logo_url, base) if branding.logo_url else "",
    }
    subject = env.get_template(f"{name}.subject.txt").render(values)
    return RenderedEmail(
        subject=" ".join(subject.split()),
        text=env.get_template(f"{name}.txt").render(values).strip() + "\n",
        html=env.get_template(f"{name}.html").render(values),
    )
