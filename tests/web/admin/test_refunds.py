"""Refunding a card payment from the admin (app/core/refunds.py does the work, against localstripe)."""

from __future__ import annotations

import re

import stripe

from app.web import create_app
from tests.core.test_payments_cases import _pay, _token
from tests.factories import balance, make_client, make_invoice
from tests.web.admin.helpers import make_admin, post, sign_in


def _stripe_refunds(double, intent_id: str) -> list[int]:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    return [r.amount for r in client.v1.refunds.list(params={"payment_intent": intent_id}).auto_paging_iter()]


def test_a_partial_refund_from_the_payment_page_refunds_once_at_stripe_even_if_posted_twice(
    stripe_services, stripe_double, frozen_clock
):
    s = stripe_services
    client_id = make_client(s)
    inv = make_invoice(s, "INV-1", total_minor=4200)
    assert _pay(s, stripe_double, client_id, [(_token(s, inv), 4200)]).status == "succeeded"
    pay = s.store.one("SELECT id, processor_ref FROM payments WHERE status = 'succeeded'")
    finance = make_admin(s, "finance@msp.example", "finance")
    admin = sign_in(create_app(s).test_client(), finance, frozen_clock)
    page = admin.get(f"/admin/payments/{pay['id']}").get_data(as_text=True)
    assert 'id="refund-form"' in page and 'value="42.00"' in page
    key = re.search(r'name="request_key" value="([^"]+)"', page).group(1)
    form = {"amount": "12.00", "reason": "one month credited", "request_key": key}
    first = post(admin, f"/admin/payments/{pay['id']}/refund", form)
    assert "Refunded." in admin.get(first.headers["Location"]).get_data(as_text=True)
    second = post(admin, f"/admin/payments/{pay['id']}/refund", form)
    assert "already requested" in admin.get(second.headers["Location"]).get_data(as_text=True)
    assert _stripe_refunds(stripe_double, pay["processor_ref"]) == [1200]
    row = s.store.one("SELECT amount_minor, status, actor, reason FROM refunds")
    assert tuple(row) == (1200, "succeeded", "admin:finance@msp.example", "one month credited")
    assert balance(s, inv) == 1200
    after = admin.get(f"/admin/payments/{pay['id']}").get_data(as_text=True)
    assert 'value="30.00"' in after and 'id="payment-refunds"' in after


def test_a_refund_above_what_is_left_is_refused_with_the_reason(stripe_services, stripe_double, frozen_clock):
    s = stripe_services
    client_id = make_client(s)
    inv = make_invoice(s, "INV-1", total_minor=4200)
    _pay(s, stripe_double, client_id, [(_token(s, inv), 4200)])
    pay = s.store.one("SELECT id, processor_ref FROM payments WHERE status = 'succeeded'")
    admin = sign_in(create_app(s).test_client(), make_admin(s, "o@msp.example"), frozen_clock)
    response = post(admin, f"/admin/payments/{pay['id']}/refund", {"amount": "42.01", "request_key": "k1"})
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "At most 4200 minor units of this payment can still be refunded." in page
    assert _stripe_refunds(stripe_double, pay["processor_ref"]) == []
    assert balance(s, inv) == 0
