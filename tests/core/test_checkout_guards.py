"""Guards in the checkout that keep a charge to the right card, once."""

from __future__ import annotations

import pytest

from app import checkout
from app.core.clock import to_db
from app.core.payments import PaymentRequestError
from tests.core.test_payments_cases import _card, _intents, _token
from tests.factories import balance, make_client, make_invoice


def test_another_companys_saved_card_is_refused_before_stripe(stripe_services, stripe_double):
    s = stripe_services
    acme = make_client(s, "acme", "Acme Corp", billing_email="ap@acme.example")
    globex = make_client(s, "globex", "Globex", billing_email="ap@globex.example")
    inv = make_invoice(s, "INV-G1", client_remote_id="globex", total_minor=5000)
    acme_card = _card(stripe_double)
    with s.store.write() as db:
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, created_at) "
            "VALUES (?, ?, 'card', 'visa', '4242', ?)",
            (acme, acme_card, to_db(s.clock.utc_now())),
        )
    co = checkout.begin_checkout(
        s, client_id=globex, login_email="ap@globex.example", items=[(_token(s, inv), 5000)]
    )
    before = len(_intents(stripe_double))
    with pytest.raises(PaymentRequestError, match="not available for this company"):
        checkout.confirm_checkout(
            s, client_id=globex, payment_token=co.payment_token, payment_method=acme_card, save=False
        )
    assert len(_intents(stripe_double)) == before
    assert balance(s, inv) == 5000


def test_a_second_confirm_of_the_same_checkout_does_not_charge_again(stripe_services, stripe_double):
    s = stripe_services
    client_id = make_client(s)
    inv = make_invoice(s, "INV-1", total_minor=4200)
    co = checkout.begin_checkout(
        s, client_id=client_id, login_email="ap@contoso.example", items=[(_token(s, inv), 4200)]
    )
    first = checkout.confirm_checkout(
        s,
        client_id=client_id,
        payment_token=co.payment_token,
        payment_method=_card(stripe_double),
        save=False,
    )
    second = checkout.confirm_checkout(
        s,
        client_id=client_id,
        payment_token=co.payment_token,
        payment_method=_card(stripe_double),
        save=False,
    )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    charged = [
        pi for pi in _intents(stripe_double) if pi["metadata"].get("payment_token") == co.payment_token
    ]
    assert [pi["amount"] for pi in charged] == [4200]
    assert balance(s, inv) == 0
