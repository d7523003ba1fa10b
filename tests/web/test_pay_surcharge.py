"""The card surcharge in the portal checkout, and which methods the pay page offers.

The surcharge is disclosed on the pay page before anything is charged, written on the card payment
by the checkout (from app.core.surcharge, the rule autopay uses, never from the page), never on a
bank payment, and not at all for a client billed in an excluded region. Bank accounts are offered
only where the gateway can take them. Stripe is unreachable here: nothing gets past begin_checkout.
(Charging it at Stripe, the receipt and the journal line: tests/e2e/test_portal_ach.py.)
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from app.services import build_services
from app.web import create_app
from tests.web import factories as f
from tests.web.conftest import post, sign_in, web_config

SURCHARGE = '\n[surcharge]\nenabled = true\nbasis_points = 300\ncap = "25.00"\nexcluded_regions = ["US-CT"]\n'


def _portal(tmp_path, clock, *, ach: bool = True, state: str | None = "IL"):
    cfg = web_config(tmp_path, extra=SURCHARGE)
    if ach:
        cfg = dataclasses.replace(cfg, stripe=dataclasses.replace(cfg.stripe, ach_enabled=True))
    svc = build_services(cfg, clock=clock)
    acme = f.make_client(svc, "Acme Dental LLC")
    if state:
        raw = {"state": state, "country": {"id": 1, "identifier": "US", "name": "United States"}}
        with svc.store.write() as db:
            db.execute("UPDATE clients SET raw_json = ? WHERE id = ?", (json.dumps(raw), acme.id))
    f.make_person(svc, acme, "dana@acme.example")
    client = create_app(svc).test_client()
    sign_in(client, "dana@acme.example")
    return svc, acme, client


def _text(html: str, element_id: str) -> str | None:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    return match.group(1).strip() if match else None


def _checkout(client, invoice, amount: str, method: str):
    return post(
        client,
        "/pay",
        {
            "invoice": [invoice.token],
            f"amount-{invoice.token}": amount,
            "action": "checkout",
            "method": method,
        },
    )


def test_the_pay_page_shows_the_card_surcharge_and_the_total_before_paying(tmp_path, clock):
    svc, acme, client = _portal(tmp_path, clock)
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    html = client.get(f"/pay?invoice={inv.token}").get_data(as_text=True)
    assert _text(html, "pay-invoices-total") == "$100.00"
    assert _text(html, "pay-surcharge") == "$3.00"
    assert _text(html, "pay-total") == "$103.00"
    assert 'data-surcharge-bp="300"' in html and 'data-surcharge-cap="2500"' in html
    assert "Card surcharge\n      (3%, at most $25.00)" in html
    assert "No surcharge when you pay by bank account." in html
    # Chosen as the bank (a reload of the form with the method), the total is the invoices' alone.
    html = client.get(f"/pay?invoice={inv.token}&method=ach").get_data(as_text=True)
    assert _text(html, "pay-total") == "$100.00"
    assert re.search(r'id="pay-surcharge-line" hidden', html)


@pytest.mark.parametrize(
    ("amount", "surcharge"),
    [("100.00", 300), ("40.00", 120), ("1000.00", 2500)],  # 3%, capped at 25.00
)
def test_a_card_checkout_carries_the_surcharge_worked_out_on_the_amounts_paid(
    tmp_path, clock, amount, surcharge
):
    svc, acme, client = _portal(tmp_path, clock)
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=100_000)
    assert _checkout(client, inv, amount, "card").status_code == 302
    pay = svc.store.one("SELECT * FROM payments WHERE status = 'pending'")
    paid = int(float(amount) * 100)
    assert (pay["method"], pay["surcharge_minor"], pay["amount_minor"]) == (
        "card",
        surcharge,
        paid + surcharge,
    )
    assert (
        svc.store.scalar("SELECT SUM(amount_minor) FROM allocations WHERE payment_id = ?", (pay["id"],))
        == paid
    )


def test_a_bank_checkout_never_has_a_surcharge(tmp_path, clock):
    svc, acme, client = _portal(tmp_path, clock)
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    assert _checkout(client, inv, "100.00", "ach").status_code == 302
    pay = svc.store.one("SELECT * FROM payments WHERE status = 'pending'")
    assert (pay["method"], pay["surcharge_minor"], pay["amount_minor"]) == ("ach", 0, 10_000)


def test_a_client_in_an_excluded_region_sees_and_pays_no_surcharge(tmp_path, clock):
    svc, acme, client = _portal(tmp_path, clock, state="CT")
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    html = client.get(f"/pay?invoice={inv.token}").get_data(as_text=True)
    assert _text(html, "pay-total") == "$100.00"
    assert "pay-surcharge" not in html and "data-surcharge-bp" not in html
    assert _checkout(client, inv, "100.00", "card").status_code == 302
    pay = svc.store.one("SELECT * FROM payments WHERE status = 'pending'")
    assert (pay["method"], pay["surcharge_minor"], pay["amount_minor"]) == ("card", 0, 10_000)


def test_an_unknown_billing_address_is_not_surcharged_while_regions_are_excluded(tmp_path, clock):
    svc, acme, client = _portal(tmp_path, clock, state=None)
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    assert _checkout(client, inv, "100.00", "card").status_code == 302
    assert svc.store.scalar("SELECT surcharge_minor FROM payments WHERE status = 'pending'") == 0


def test_bank_accounts_are_not_offered_where_the_processor_cannot_take_them(tmp_path, clock):
    svc, acme, client = _portal(tmp_path, clock, ach=False)
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    html = client.get(f"/pay?invoice={inv.token}").get_data(as_text=True)
    assert 'id="method-ach"' not in html and "You pay by card" in html
    response = _checkout(client, inv, "100.00", "ach")  # a hand-made form is refused, nothing written
    assert response.status_code == 400
    assert "Choose how to pay: Card." in response.get_data(as_text=True)
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0
    methods_page = client.get("/payment-methods").get_data(as_text=True)
    assert 'id="add-card"' in methods_page and 'id="add-bank"' not in methods_page
    adding = client.get("/payment-methods?add=bank").get_data(as_text=True)
    assert 'id="add-method-form"' not in adding and 'id="methods-error"' not in adding  # Stripe not asked


def test_with_ach_the_methods_page_offers_a_bank_account(tmp_path, clock):
    _, _, client = _portal(tmp_path, clock)
    html = client.get("/payment-methods").get_data(as_text=True)
    assert 'id="add-bank"' in html
