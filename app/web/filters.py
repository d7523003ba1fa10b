"""Jinja filters of the portal; money and dates reuse the email formatting so both agree."""

from __future__ import annotations

from datetime import date

from flask import Flask

from app.config import Config
from app.core.clock import from_db
from app.core.emails import date_long, money
from app.core.money import Money

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


def amount_input(amount_minor: int, currency: str) -> str:
    """Minor units as the plain decimal a person would type: 125000 USD -> "1250.00"."""
    return format(Money(amount_minor, currency).to_decimal(), "f")


def register_filters(app: Flask, config: Config) -> None:
    tz = config.tz

    def local_date(instant: str | None) -> date | None:
        """A stored UTC instant as the MSP's calendar date."""
        return None if not instant else from_db(instant).astimezone(tz).date()

    def local_date_long(instant: str | None) -> str:
        day = local_date(instant)
        return "" if day is None else date_long(day)

    app.jinja_env.filters.update(
        money=money,
        date_long=date_long,
        local_date=local_date,
        local_date_long=local_date_long,
        kind_label=kind_label,
        amount_input=amount_input,
    )
    app.jinja_env.globals.update(branding=config.branding, kind_labels=KIND_LABELS)
