"""The tests' extension of localstripe answers as Stripe's spec says, and every write Cashloop makes
to Stripe carries a derived Idempotency-Key (which production Stripe honours; see the extension's
`idempotency` switch for what that buys after a lost response)."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path

import pytest
import stripe

from app.core import refunds
from app.jobs import run_autopay
from tests.autopay_world import enable, engine_services, saved_bank, saved_card, stripe_client
from tests.factories import make_client, make_invoice

SPEC = (
    Path(os.environ.get("CASHLOOP_SPECS") or Path(__file__).resolve().parents[1] / "specs")
    / "stripe-extension-subset.json"
)
LIBRARY_KEY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _schema(name: str) -> dict:
    return json.loads(SPEC.read_text())["components"]["schemas"][name]


def _paid_card(double):
    c = stripe_client(double)
    pm = c.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    )
    pi = c.v1.payment_intents.create(
        params={"amount": 5_000, "currency": "usd", "payment_method": pm.id, "confirm": True}
    )
    return pi, pi.latest_charge if isinstance(pi.latest_charge, str) else pi.latest_charge.id


def test_the_extensions_objects_carry_what_the_spec_requires(stripe_ext):
    c = stripe_client(stripe_ext.double)
    _, charge = _paid_card(stripe_ext.double)
    with pytest.raises(stripe.InvalidRequestError) as err:
        c.v1.refunds.create(params={"charge": charge, "amount": 999_999})
    assert err.value.code == "amount_too_large"
    dispute = c.v1.disputes.retrieve(stripe_ext.dispute(charge, amount=2_000)["id"]).to_dict()
    missing = [k for k in _schema("dispute")["required"] if k not in dispute]
    assert missing == []
    assert dispute["status"] in _schema("dispute")["properties"]["status"]["enum"]
    bank = c.v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "billing_details": {"name": "AP"},
            "us_bank_account": {"account_number": "000123456789", "routing_number": "110000000"},
        }
    ).to_dict()
    assert set(bank["us_bank_account"]) <= set(_schema("payment_method_us_bank_account")["properties"])
    assert bank["type"] in _schema("payment_method")["properties"]["type"]["enum"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        c.v1.refunds.create(params={"charge": charge, "amount": 100})
    assert err.value.code == "charge_disputed"
    with pytest.raises(stripe.InvalidRequestError, match="billing_details"):
        c.v1.payment_methods.create(
            params={
                "type": "us_bank_account",
                "us_bank_account": {"account_number": "000123456789", "routing_number": "110000000"},
            }
        )


def test_with_idempotency_on_a_repeated_key_replays_and_a_changed_request_is_refused(stripe_ext):
    stripe_ext.configure(idempotency=True)
    c = stripe_client(stripe_ext.double)
    first = c.v1.customers.create(params={"name": "Once"}, options={"idempotency_key": "v1-test-once"})
    again = c.v1.customers.create(params={"name": "Once"}, options={"idempotency_key": "v1-test-once"})
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError):
        c.v1.customers.create(params={"name": "Twice"}, options={"idempotency_key": "v1-test-once"})


def test_every_stripe_write_cashloop_makes_carries_a_derived_idempotency_key(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    s = engine_services(tmp_path, frozen_clock, double, mail)
    card_client = make_client(s, "k1", "Keyed Card Co")
    bank_client = make_client(s, "k2", "Keyed Bank Co")
    enable(s, card_client, saved_card(s, double, card_client), grouping="per_client")
    enable(s, bank_client, saved_bank(s, double, bank_client))
    make_invoice(s, "INV-8001", client_remote_id="k1", total_minor=10_000, due_on=date(2026, 3, 1))
    make_invoice(s, "INV-8002", client_remote_id="k2", total_minor=10_000, due_on=date(2026, 3, 1))
    stripe_ext.reset()  # only what Cashloop sends from here on

    report = run_autopay.run(s)
    token = s.store.scalar("SELECT token FROM payments WHERE status = 'succeeded'")
    refunds.refund(s, token, 2_500, "admin:a")
    writes = stripe_ext.requests()

    assert (report.succeeded, report.processing) == (1, 1)
    assert {w["path"] for w in writes} >= {"/v1/payment_intents", "/v1/refunds"}
    unkeyed = [w for w in writes if not w["key"] or LIBRARY_KEY.match(w["key"])]
    assert unkeyed == []
    keys = [w["key"] for w in writes]
    assert len(keys) == len(set(keys))
