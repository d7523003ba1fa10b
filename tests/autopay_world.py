"""Helpers for the payments-engine tests: a client with a saved card or bank account at a Stripe
double, autopay switched on, and ways to read what Stripe, the mail sink and the books hold."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import stripe

from app.core import autopay
from app.core.clock import to_db
from app.core.keys import derive_key
from app.services import Services, build_services
from tests.conftest import make_config


def engine_services(tmp_path: Path, clock: Any, double: Any, mail: Any, extra: str = "", *,
                    port: int = 8080) -> Services:
    """Services on `double` and the SMTP sink, with `extra` TOML (e.g. an [autopay] section); the
    portal's base URL is http://127.0.0.1:`port`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = make_config(tmp_path, port=port, stripe_base=double.api_base, smtp_port=mail.port if mail else 9,
                      extra=extra)
    return build_services(cfg, clock=clock)


def stripe_client(double: Any) -> stripe.StripeClient:
    return stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})


def _customer(services: Services, client_id: int) -> str:
    row = services.store.one("SELECT token, name, stripe_customer_id FROM clients WHERE id = ?", (client_id,))
    if row["stripe_customer_id"]:
        return str(row["stripe_customer_id"])
    customer = services.gateway.ensure_customer(
        customer_id=None,
        name=row["name"],
        email=None,
        client_token=row["token"],
        key=derive_key("stripe-customer", client=row["token"]),
    )
    with services.store.write() as db:
        db.execute("UPDATE clients SET stripe_customer_id = ? WHERE id = ?", (customer, client_id))
    return customer


def _save(services: Services, client_id: int, pm: Any) -> int:
    m = services.gateway.payment_method(pm.id)
    with services.store.write() as db:
        cur = db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "bank_name, routing_number, is_default, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (
                client_id,
                m.processor_ref,
                m.type,
                m.brand,
                m.last4,
                m.exp_month,
                m.exp_year,
                m.bank_name,
                m.routing_number,
                to_db(services.clock.utc_now()),
            ),
        )
    return int(cur.lastrowid)


def saved_card(
    services: Services,
    double: Any,
    client_id: int,
    number: str = "4242424242424242",
    *,
    exp_month: int = 12,
    exp_year: int = 2031,
) -> int:
    """A card saved for the client the way the portal saves one; returns payment_methods.id."""
    customer = _customer(services, client_id)
    pm = stripe_client(double).v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": exp_month, "exp_year": exp_year, "cvc": "123"},
        }
    )
    stripe_client(double).v1.payment_methods.attach(pm.id, params={"customer": customer})
    return _save(services, client_id, pm)


def saved_bank(services: Services, double: Any, client_id: int, account: str = "000123456789") -> int:
    """A verified US bank account (needs the extension's double); returns payment_methods.id."""
    customer = _customer(services, client_id)
    pm = stripe_client(double).v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "billing_details": {"name": "Accounts Payable"},
            "us_bank_account": {
                "account_number": account,
                "routing_number": "110000000",
                "account_holder_type": "company",
            },
        }
    )
    stripe_client(double).v1.payment_methods.attach(pm.id, params={"customer": customer})
    return _save(services, client_id, pm)


def enable(services: Services, client_id: int, method_id: int, **rule: Any) -> autopay.AutopayRule:
    return autopay.set_rule(
        services.store,
        services.clock,
        client_id,
        enabled=True,
        payment_method_id=method_id,
        actor="test",
        **rule,
    )


def intents(
    double: Any, *, payment_token: str | None = None, invoices: str | None = None
) -> list[dict[str, Any]]:
    """PaymentIntents at the double, filtered by our metadata."""
    out = []
    for pi in stripe_client(double).v1.payment_intents.list(params={"limit": 100}).auto_paging_iter():
        d = pi.to_dict()
        meta = d.get("metadata") or {}
        if payment_token is not None and meta.get("payment_token") != payment_token:
            continue
        if invoices is not None and meta.get("invoices") != invoices:
            continue
        out.append(d)
    return out


def succeeded_charges(double: Any, invoices: str) -> int:
    return sum(1 for pi in intents(double, invoices=invoices) if pi["status"] == "succeeded")


def events(double: Any, type_: str) -> list[dict[str, Any]]:
    return [
        e.to_dict()
        for e in stripe_client(double).v1.events.list(params={"type": type_, "limit": 100}).auto_paging_iter()
    ]


def signed(body: bytes, secret: str) -> str:
    t = int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def deliver(services: Services, event: dict[str, Any]) -> str:
    """Deliver an event to Cashloop's webhook handler, signed as Stripe signs it."""
    from app.checkout import handle_stripe_event

    body = json.dumps(event).encode()
    return handle_stripe_event(services, body, signed(body, str(services.config.stripe.webhook_secret)))


def wait_for_event(double: Any, type_: str, object_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events(double, type_):
            if e["data"]["object"]["id"] == object_id:
                return e
        time.sleep(0.05)
    raise AssertionError(f"no {type_} event for {object_id} at the double")


def mails(sink: Any, kind_subject: str) -> list[Any]:
    return [m for m in sink.messages if kind_subject in m["Subject"]]


def journal(services: Services) -> list[dict[str, str]]:
    path = services.config.journal_path
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def psa_lines(services: Services) -> list[dict[str, Any]]:
    path = Path(services.config.psa.files.path) / "payments.out.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def d(text: str) -> date:
    return date.fromisoformat(text)
