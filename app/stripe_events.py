"""Stripe events about money going back (charge.refunded, charge.dispute.*) and payouts (payout.paid,
payout.failed, booked by app.core.payouts).

Like the PaymentIntent events, the event's own copy is not trusted: the refunds of the charge
and the dispute are read back from Stripe and their current state applied, so duplicates, late
deliveries and any order end in the same place. Called by app.checkout.handle_stripe_event
(which stores each event once and verifies its signature).
"""

from __future__ import annotations

import logging
from typing import Any

from app.core import disputes, payouts, refunds
from app.entity_services import owns_client
from app.services import Services

log = logging.getLogger(__name__)
HANDLED = ("charge.refunded", "charge.refund.updated", "charge.dispute.", "payout.paid", "payout.failed")


def handles(event_type: str) -> bool:
    return event_type.startswith(HANDLED)


def _payment_for_charge(services: Services, charge_id: str, intent_id: str | None) -> Any:
    pay = services.store.one("SELECT * FROM payments WHERE charge_ref = ?", (charge_id,))
    if pay is None:
        intent_id = intent_id or services.gateway.charge_intent(charge_id)
        if intent_id:
            pay = services.store.one("SELECT * FROM payments WHERE processor_ref = ?", (intent_id,))
    if pay is not None and not owns_client(services, pay["client_id"]):
        return None  # another entity's payment: an event of this account never touches it
    return pay


def dispatch(services: Services, event: dict[str, Any]) -> str:
    obj = event["data"]["object"]
    if event["type"].startswith("payout."):
        return payouts.sync_payout(services, obj["id"])
    if event["type"].startswith("charge.dispute."):
        return _dispute(services, obj["id"])
    charge_id = obj["id"] if obj.get("object") == "charge" else obj.get("charge")
    intent = obj.get("payment_intent")
    return sync_refunds(services, charge_id, intent if isinstance(intent, str) else None)


def sync_refunds(services: Services, charge_id: str, intent_id: str | None = None) -> str:
    """Record every refund Stripe has for the charge: ours by their token, others as made at Stripe."""
    pay = _payment_for_charge(services, charge_id, intent_id)
    if pay is None:
        return "not ours"
    found = 0
    for r in services.gateway.list_refunds(charge_id=charge_id):
        if r.status in ("failed", "canceled"):
            continue
        ours = services.store.one(
            "SELECT id FROM refunds WHERE processor_ref = ? OR token = ?",
            (r.refund_id, r.metadata.get("refund_token")),
        )
        if ours is not None:
            refunds.record_refund(
                services.store,
                services.clock,
                ours["id"],
                processor_ref=r.refund_id,
                processor_status=r.status,
                timezone=services.config.tz,
            )
        elif refunds.record_external_refund(
            services.store,
            services.clock,
            payment_id=pay["id"],
            processor_ref=r.refund_id,
            amount_minor=r.amount_minor,
            timezone=services.config.tz,
        ):
            found += 1
    return f"refunds synced ({found} new from Stripe)"


def sync_dispute(services: Services, dispute_id: str) -> str:
    """Record dispute `dispute_id` as Stripe has it now (a payout may hold one whose events were missed)."""
    return _dispute(services, dispute_id)


def _dispute(services: Services, dispute_id: str) -> str:
    d = services.gateway.retrieve_dispute(dispute_id)
    if not d.charge_id:
        return "not ours"
    pay = _payment_for_charge(services, d.charge_id, d.intent_id)
    if pay is None:
        return "not ours"
    return disputes.apply_dispute(
        services.store,
        services.clock,
        payment_id=pay["id"],
        dispute_id=d.dispute_id,
        charge_id=d.charge_id,
        amount_minor=d.amount_minor,
        currency=d.currency,
        status=d.status,
        reason=d.reason,
        timezone=services.config.tz,
    )
