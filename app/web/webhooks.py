"""Stripe's webhook endpoints, one per entity: CSRF-exempt, authenticated by the Stripe-Signature header
instead (each entity's with its own signing secret)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request

from app.web import services

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


@bp.post("/stripe/webhook")
def stripe_webhook() -> Any:
    """The default entity's endpoint (the only one of a single-entity MSP)."""
    return _handle(services())


@bp.post("/webhooks/stripe/<key>")
def entity_stripe_webhook(key: str) -> Any:
    """Entity `key`'s endpoint: its events are verified with its own signing secret."""
    from app.entity_services import EntityError, for_key

    try:
        svc = for_key(services().entities.base, key)
    except EntityError:
        return jsonify(error="unknown endpoint"), 404
    return _handle(svc)


def _handle(svc: Any) -> Any:
    from app import checkout
    from sync.payments.stripe import BadSignature

    try:
        result = checkout.handle_stripe_event(
            svc, request.get_data(), request.headers.get("Stripe-Signature")
        )
    except BadSignature as exc:
        log.warning("Stripe webhook with a bad signature from %s: %s", request.remote_addr, exc)
        return jsonify(error=f"bad signature: {exc}"), 400
    except Exception:
        # A 500 makes Stripe deliver the event again later; the event row keeps the error.
        log.exception("Stripe webhook failed")
        return jsonify(error="internal error"), 500
    return jsonify(received=True, result=result), 200
