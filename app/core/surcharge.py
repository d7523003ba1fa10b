"""The card surcharge (convenience fee): how much, and whether it applies at all.

One rule: `basis_points` of the amount, rounded half to even in minor units (money.percent_of),
capped at `cap`; never on a bank (ACH) payment; never for a client billed in an excluded region.
When regions are excluded and a client's billing address cannot be told, no surcharge is added:
charging a fee where it may be forbidden is worse than not charging it.

The region comes from the PSA's company record (ConnectWise shape: `state` and `country`
{identifier, name}), kept verbatim in `clients.raw_json`.
"""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from app.core.money import exponent, percent_of

if TYPE_CHECKING:
    from app.config import SurchargeSettings

_COUNTRY_NAMES = {
    "UNITED STATES": "US",
    "UNITED STATES OF AMERICA": "US",
    "USA": "US",
    "CANADA": "CA",
    "UNITED KINGDOM": "GB",
    "GREAT BRITAIN": "GB",
    "AUSTRALIA": "AU",
    "NEW ZEALAND": "NZ",
    "IRELAND": "IE",
    "GERMANY": "DE",
    "FRANCE": "FR",
    "PUERTO RICO": "PR",
    "MEXICO": "MX",
}


def region_of(raw: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(country ISO code, state/province code) from a PSA company record; None where unknown."""
    if not isinstance(raw, dict):
        return None, None
    country = raw.get("country")
    code: str | None = None
    if isinstance(country, dict):
        ident = str(country.get("identifier") or "").strip().upper()
        name = str(country.get("name") or "").strip().upper()
        code = ident if len(ident) == 2 else _COUNTRY_NAMES.get(name) or _COUNTRY_NAMES.get(ident)
    elif isinstance(country, str):
        text = country.strip().upper()
        code = text if len(text) == 2 else _COUNTRY_NAMES.get(text)
    state = str(raw.get("state") or "").strip().upper() or None
    return code, state


def client_region(db: Any, client_id: int) -> tuple[str | None, str | None]:
    row = db.execute("SELECT raw_json FROM clients WHERE id = ?", (client_id,)).fetchone()
    if row is None or not row["raw_json"]:
        return None, None
    try:
        return region_of(json.loads(row["raw_json"]))
    except ValueError:
        return None, None


def is_excluded(settings: SurchargeSettings, country: str | None, state: str | None) -> bool:
    """True when the client's region is listed, or unknown while any region is listed."""
    if not settings.excluded_regions:
        return False
    if country is None:
        return True
    listed = set(settings.excluded_regions)
    return country in listed or (state is not None and f"{country}-{state}" in listed)


def cap_minor(settings: SurchargeSettings, currency: str) -> int | None:
    """The cap in the currency's minor units (a cap finer than the currency allows is rounded down)."""
    if not settings.cap:
        return None
    scaled = Decimal(settings.cap).scaleb(exponent(currency))
    return int(scaled.to_integral_value(rounding=ROUND_DOWN))


def surcharge_for(
    settings: SurchargeSettings,
    *,
    amount_minor: int,
    currency: str,
    method: str,
    region: tuple[str | None, str | None],
) -> int:
    """The surcharge in minor units to add to a payment of `amount_minor` by `method` ("card" or "ach").

    0 when surcharging is off, for ACH, for an excluded (or, with exclusions, unknown) region, and
    for a non-positive amount. Pure; the portal shows this figure before the person pays.
    """
    if not settings.enabled or method != "card" or amount_minor <= 0:
        return 0
    if is_excluded(settings, *region):
        return 0
    fee = percent_of(amount_minor, settings.basis_points)
    cap = cap_minor(settings, currency)
    if cap is not None:
        fee = min(fee, cap)
    if exponent(currency) == 3:
        # Stripe charges three-decimal currencies to two places: keep the total chargeable.
        fee -= fee % 10
    return max(0, fee)
