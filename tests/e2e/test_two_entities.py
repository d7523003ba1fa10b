"""Two entities, end to end: Northwind US (USD, the default) and Northwind Canada (CAD, [[entities]]).

A client of each pays by card. The Stripe double's request log shows each charge made with its own
entity's secret key; each payment is booked in its own entity's journal; each receipt carries its
entity's name, colours, logo and sender; a webhook signed with the other entity's secret is refused;
the portal pages wear the client's entity's branding.
"""

from __future__ import annotations

import csv
import json
import re

import stripe

from app import checkout
from app.core import entities
from app.core.payment_refs import payment_reference
from app.entity_services import for_key
from app.jobs import drain_outbox
from app.services import build_services
from app.web import create_app
from tests.autopay_world import signed, wait_for_event
from tests.e2e.entity_world import (
    CA_COLOR,
    CA_FROM,
    CA_LOGO,
    CA_SECRET,
    CA_WEBHOOK_SECRET,
    US_FROM,
    US_SECRET,
    two_entity_config,
)
from tests.web import factories as f
from tests.web.conftest import sign_in


def _card(double) -> str:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    pm = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031,
                                         "cvc": "123"}}
    )
    return str(pm.id)


def _pay(svc, double, client, email: str, invoice) -> checkout.ConfirmResult:
    co = checkout.begin_checkout(svc, client_id=client.id, login_email=email,
                                 items=[(invoice.token, _balance(svc, invoice))])
    return checkout.confirm_checkout(svc, client_id=client.id, payment_token=co.payment_token,
                                     payment_method=_card(double), save=False)


def _balance(svc, invoice) -> int:
    sql = "SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?"
    return int(svc.store.scalar(sql, (invoice.id,)))


def _journal(path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _html(message) -> str:
    part = message.get_body(preferencelist=("html",))
    return part.get_content()


def test_two_entities_charge_book_and_mail_each_through_its_own(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    svc = build_services(
        two_entity_config(tmp_path, stripe_base=double.api_base, smtp_port=mail.port), clock=frozen_clock)
    us = f.make_client(svc, "Contoso Dental Inc")
    ca = f.make_client(svc, "Maple Leaf Dental Ltd")
    entities.move_client(svc.store, svc.clock, client_id=ca.id, entity_key="ca", actor="admin:ops@northwind")
    us_person = f.make_person(svc, us, "ap@contoso.example")
    ca_person = f.make_person(svc, ca, "ap@mapleleaf.example")
    us_inv = f.make_invoice(svc, us, "US-1001", total_minor=125_000)
    ca_inv = f.make_invoice(svc, ca, "CA-2001", total_minor=80_050, currency="CAD")

    assert _pay(svc, double, us, us_person, us_inv).status == "succeeded"
    assert _pay(svc, double, ca, ca_person, ca_inv).status == "succeeded"

    pays = {r["client_id"]: r for r in svc.store.all("SELECT * FROM payments")}
    assert (pays[us.id]["amount_minor"], pays[us.id]["currency"]) == (125_000, "USD")
    assert (pays[ca.id]["amount_minor"], pays[ca.id]["currency"]) == (80_050, "CAD")
    # On the processor's side: each PaymentIntent was created with its own entity's secret key.
    creates = {r["key"]: r["api_key"] for r in stripe_ext.requests() if r["path"] == "/v1/payment_intents"}
    assert creates[pays[us.id]["idem_key"]] == US_SECRET
    assert creates[pays[ca.id]["idem_key"]] == CA_SECRET
    customers = [r["api_key"] for r in stripe_ext.requests() if r["path"] == "/v1/customers"]
    assert sorted(customers) == sorted([US_SECRET, CA_SECRET])

    for _ in range(3):
        drain_outbox.run(svc)
    assert svc.store.scalar("SELECT COUNT(*) FROM outbox WHERE status != 'done'") == 0

    # Each payment is booked in its own entity's books, and only there.
    us_rows = _journal(tmp_path / "journal.csv")
    ca_rows = _journal(tmp_path / "journal-ca.csv")
    assert us_rows and ca_rows
    assert {r["payment_reference"] for r in us_rows} == {payment_reference(pays[us.id]["id"])}
    assert {r["payment_reference"] for r in ca_rows} == {payment_reference(pays[ca.id]["id"])}
    assert "CA-2001" in json.dumps(ca_rows) and "CA-2001" not in json.dumps(us_rows)

    # Each receipt in its own entity's name, sender, colours and logo.
    receipts = {m["To"]: m for m in mail.messages if "Receipt" in m["Subject"] or "receipt" in m["Subject"]}
    ca_mail, us_mail = receipts[ca_person], receipts[us_person]
    assert CA_FROM in ca_mail["From"] and "Northwind Canada Billing" in ca_mail["From"]
    assert US_FROM in us_mail["From"] and "Canada" not in us_mail["From"]
    ca_html, us_html = _html(ca_mail), _html(us_mail)
    assert "Northwind Canada" in ca_html and CA_LOGO in ca_html and CA_COLOR in ca_html
    assert "Northwind Canada" not in us_html and CA_LOGO not in us_html and "Northwind US" in us_html
    assert "$800.50" in ca_html or "CA$800.50" in ca_html
    assert "$1,250.00" in us_html

    # Webhooks: each entity's endpoint verifies with its own secret; the other's is refused.
    event = wait_for_event(double, "payment_intent.succeeded", pays[ca.id]["processor_ref"])
    body = json.dumps(event).encode()
    web = create_app(svc).test_client()
    refused = web.post("/webhooks/stripe/ca", data=body,
                       headers={"Stripe-Signature": signed(body, str(svc.config.stripe.webhook_secret))})
    assert refused.status_code == 400 and "bad signature" in refused.get_json()["error"]
    assert web.post("/stripe/webhook", data=body,
                    headers={"Stripe-Signature": signed(body, CA_WEBHOOK_SECRET)}).status_code == 400
    assert web.post("/webhooks/stripe/uk", data=body,
                    headers={"Stripe-Signature": signed(body, CA_WEBHOOK_SECRET)}).status_code == 404
    accepted = web.post("/webhooks/stripe/ca", data=body,
                        headers={"Stripe-Signature": signed(body, CA_WEBHOOK_SECRET)})
    assert accepted.status_code == 200 and accepted.get_json()["result"] == "succeeded"
    # The default account's endpoint never touches the Canadian payment, even signed correctly.
    us_event = dict(event, id=event["id"] + "_us")
    us_body = json.dumps(us_event).encode()
    ours = web.post("/stripe/webhook", data=us_body,
                    headers={"Stripe-Signature": signed(us_body, str(svc.config.stripe.webhook_secret))})
    assert ours.status_code == 200 and ours.get_json()["result"] == "not ours"

    # The portal: each client's pages and stylesheet are its entity's.
    ca_web = create_app(svc).test_client()
    sign_in(ca_web, ca_person)
    page = ca_web.get("/invoices").get_data(as_text=True)
    assert "Northwind Canada" in page and "Northwind US" not in page
    assert re.search(r'href="/theme\.css\?entity=ca"', page)
    assert CA_COLOR in ca_web.get("/theme.css?entity=ca").get_data(as_text=True)
    us_web = create_app(svc).test_client()
    sign_in(us_web, us_person)
    us_page = us_web.get("/invoices").get_data(as_text=True)
    assert "Northwind US" in us_page and "Northwind Canada" not in us_page
    assert 'href="/theme.css"' in us_page
    assert for_key(svc, "ca").config.stripe.publishable_key == "pk_test_northwind_ca"


def test_a_charge_through_the_other_entity_is_refused_before_stripe(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    svc = build_services(
        two_entity_config(tmp_path, stripe_base=double.api_base, smtp_port=mail.port), clock=frozen_clock)
    us = f.make_client(svc, "Contoso Dental Inc")
    ca = f.make_client(svc, "Maple Leaf Dental Ltd")
    entities.move_client(svc.store, svc.clock, client_id=ca.id, entity_key="ca", actor="admin:ops@northwind")
    with svc.store.write() as db:  # a holding company in the US paying for a Canadian branch
        db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (us.id, ca.id))
    us_inv = f.make_invoice(svc, us, "US-1", total_minor=10_000)
    ca_inv = f.make_invoice(svc, ca, "CA-1", total_minor=20_000, currency="CAD")
    from app.core.payments import PayItem, PaymentRequestError, start_payment

    stripe_ext.reset()
    try:
        start_payment(svc.store, svc.clock, client_id=us.id, for_children=True, allow_partial=True,
                      minimum_partial="1.00", initiated_by="login:ap@contoso.example",
                      items=[PayItem(us_inv.id, 10_000), PayItem(ca_inv.id, 20_000)])
    except PaymentRequestError as exc:
        assert "different companies of ours" in str(exc) or "not available for payment" in str(exc)
    else:
        raise AssertionError("a payment across two entities was accepted")
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0
    assert stripe_ext.requests() == []
