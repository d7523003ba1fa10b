"""Small helpers shared by the adversarial tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any

import stripe

from tests.web.conftest import CSRF_META


def stripe_client(double) -> stripe.StripeClient:
    return stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})


def card(double, number: str = "4242424242424242") -> str:
    pm = stripe_client(double).v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}}
    )
    return str(pm.id)


def intents_for(double, payment_token: str) -> list[dict[str, Any]]:
    client = stripe_client(double)
    return [
        pi.to_dict()
        for pi in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if (pi.to_dict().get("metadata") or {}).get("payment_token") == payment_token
    ]


def create_intent_at_stripe(
    double,
    *,
    amount: int,
    currency: str,
    payment_token: str,
    number: str = "4242424242424242",
    confirm: bool = True,
) -> dict[str, Any]:
    """A PaymentIntent carrying our token, made directly at the double (a charge Cashloop never saw)."""
    client = stripe_client(double)
    customer = client.v1.customers.create(params={"name": "crash window"})
    pi = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": currency.lower(),
            "customer": customer.id,
            "payment_method": card(double, number),
            "payment_method_types": ["card"],
            "confirm": confirm,
            "metadata": {"payment_token": payment_token},
        }
    )
    return pi.to_dict()


def sign(body: bytes, secret: str, *, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def event(event_id: str, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "api_version": "2026-10-28.endive",
        "data": {"object": obj},
    }


def event_body(event_id: str, type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(event(event_id, type_, obj)).encode()


def csrf_from(html: str) -> str:
    match = CSRF_META.search(html)
    assert match, "no csrf meta tag"
    return match.group(1)


def sign_in_requests(session, base: str, email: str, password: str) -> None:
    """Sign in through a real HTTP session (requests), as a browser would."""
    page = session.get(f"{base}/login", timeout=10)
    token = csrf_from(page.text)
    r = session.post(
        f"{base}/login",
        data={"email": email, "password": password, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text[:2000]


def outbox(services, kind: str) -> list[dict[str, Any]]:
    return [
        json.loads(r[0])
        for r in services.store.all("SELECT payload_json FROM outbox WHERE kind = ? ORDER BY id", (kind,))
    ]


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", html)
