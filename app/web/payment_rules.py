"""Which payment methods the portal offers for a set of invoices, and what a card surcharge would be.

Three things decide the methods: the TOML `[portal.methods]` list of each invoice kind (a set of
invoices gets what all of its kinds allow), the client's override set by the finance team, and
whether the processor can take bank (ACH) payments at all.
"""

from __future__ import annotations

from dataclasses import fields

from app.config import PortalMethodSettings
from app.services import Services

ORDER = ("card", "ach")
LABELS = {"card": "Card", "ach": "US bank account (ACH)"}
_KIND_FIELDS = {f.name for f in fields(PortalMethodSettings)}


def ach_available(services: Services) -> bool:
    """True when the gateway declares bank-account payments (Stripe us_bank_account)."""
    return getattr(services.gateway, "supports_ach", False) is True


def methods_for_kinds(services: Services, client_id: int, kinds: list[str]) -> tuple[str, ...]:
    """The methods every one of `kinds` may be paid with, for this client; () when none."""
    from app.core.client_overrides import get_overrides

    allowed = set(ORDER)
    table = services.config.portal.methods
    for kind in set(kinds):
        allowed &= set(getattr(table, kind if kind in _KIND_FIELDS else "other"))
    override = get_overrides(services.store.db, client_id).payment_methods
    if override is not None:
        allowed &= set(override)
    if not ach_available(services):
        allowed.discard("ach")
    return tuple(m for m in ORDER if m in allowed)


def pay_all_kinds(services: Services, client_id: int, kinds: list[str]) -> list[str]:
    """Those of `kinds` that "Pay all open invoices" takes: the kinds paid online at all, and only
    if one method serves all of them together (else none: each kind is then paid on its own)."""
    online = sorted(k for k in set(kinds) if methods_for_kinds(services, client_id, [k]))
    return online if online and methods_for_kinds(services, client_id, online) else []


def surcharge_minor(
    services: Services, client_id: int, *, amount_minor: int, currency: str, method: str
) -> int:
    """The card surcharge the payments engine would add (0 where none applies or none is configured)."""
    settings = getattr(services.config, "surcharge", None)
    if settings is None:
        return 0
    from app.core import surcharge

    region = surcharge.client_region(services.store.db, client_id)
    return surcharge.surcharge_for(
        settings, amount_minor=amount_minor, currency=currency, method=method, region=region
    )


def surcharge_terms(services: Services, client_id: int, currency: str) -> tuple[int, int | None] | None:
    """(basis points, cap in minor units or None) of the card surcharge this client would pay in
    `currency`, or None when none applies (off, or an excluded or unknown region). The pay page
    shows the fee live from these; the amount charged is always surcharge_minor's."""
    settings = getattr(services.config, "surcharge", None)
    if settings is None or not settings.enabled:
        return None
    from app.core import surcharge

    if surcharge.is_excluded(settings, *surcharge.client_region(services.store.db, client_id)):
        return None
    return settings.basis_points, surcharge.cap_minor(settings, currency)
