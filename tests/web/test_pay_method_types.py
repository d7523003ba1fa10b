"""A checkout is charged only with the kind of method it was started for: its amount (and any card
surcharge) was worked out for that choice, so a card on a bank checkout, or a bank account on a card
checkout, is refused before any PaymentIntent exists. Against the Stripe double with the extension."""

from __future__ import annotations

import pytest

from app import checkout
from app.core.payments import PaymentRequestError
from tests.autopay_world import engine_services, intents, saved_bank, saved_card
from tests.factories import make_client, make_invoice

SURCHARGE = "\n[surcharge]\nenabled = true\nbasis_points = 300\n"


def _start(s, client_id: int, invoice_id: int, method: str) -> str:
    token = s.store.scalar("SELECT token FROM invoices WHERE id = ?", (invoice_id,))
    return checkout.begin_checkout(
        s, client_id=client_id, login_email="ap@contoso.example", items=[(token, 10_000)], method=method
    ).payment_token


@pytest.mark.parametrize(
    ("method", "wrong", "message"),
    [("ach", "card", "set up for a bank account"), ("card", "bank", "set up for a card")],
)
def test_a_method_of_the_other_kind_is_refused_before_stripe(
    tmp_path, frozen_clock, stripe_ext, mail, method, wrong, message
):
    s = engine_services(tmp_path, frozen_clock, stripe_ext.double, mail, extra=SURCHARGE)
    client_id = make_client(s)
    card, bank = saved_card(s, stripe_ext.double, client_id), saved_bank(s, stripe_ext.double, client_id)
    ref = s.store.scalar(
        "SELECT processor_ref FROM payment_methods WHERE id = ?", (card if wrong == "card" else bank,)
    )
    inv = make_invoice(s, "INV-7001", total_minor=10_000)
    token = _start(s, client_id, inv, method)
    with pytest.raises(PaymentRequestError, match=message):
        checkout.confirm_checkout(s, client_id=client_id, payment_token=token, payment_method=ref, save=False)
    pay = s.store.one("SELECT status, amount_minor, surcharge_minor FROM payments WHERE token = ?", (token,))
    assert pay["status"] == "pending"  # still payable with the right kind
    assert (pay["amount_minor"], pay["surcharge_minor"]) == (
        (10_300, 300) if method == "card" else (10_000, 0)
    )
    assert intents(stripe_ext.double, payment_token=token) == []


def test_a_bank_checkout_charges_the_account_once_and_waits_for_the_bank(
    tmp_path, frozen_clock, stripe_ext, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_ext.double, mail, extra=SURCHARGE)
    client_id = make_client(s)
    bank = saved_bank(s, stripe_ext.double, client_id)
    ref = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (bank,))
    token = _start(s, client_id, make_invoice(s, "INV-7101", total_minor=10_000), "ach")
    result = checkout.confirm_checkout(
        s, client_id=client_id, payment_token=token, payment_method=ref, save=False
    )
    again = checkout.confirm_checkout(
        s, client_id=client_id, payment_token=token, payment_method=ref, save=False
    )
    assert (result.status, again.status) == ("processing", "processing")
    [pi] = intents(stripe_ext.double, payment_token=token)
    assert (pi["amount"], pi["payment_method"], pi["status"]) == (10_000, ref, "processing")
