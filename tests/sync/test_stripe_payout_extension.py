"""The extension's fees and payouts answer as Stripe's spec says (tests/specs/stripe-payouts-subset.json):
every required field with its type, fees per Stripe's pricing in `fee` and `fee_details`, the list
filters Cashloop uses, payouts in any currency, and the gateway reading a payout across pages."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from app.config import Secret, StripeSettings
from sync.payments.stripe import StripeGateway
from tests.autopay_world import stripe_client, wait_for_event

SPEC = json.loads(
    (
        Path(os.environ.get("CASHLOOP_SPECS") or Path(__file__).resolve().parents[1] / "specs")
        / "stripe-payouts-subset.json"
    ).read_text()
)
TYPES = {"integer": (int,), "number": (int, float), "string": (str,), "boolean": (bool,), "array": (list,),
         "object": (dict,)}
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}


def _conforms(obj: dict[str, Any], schema_name: str) -> list[str]:
    """What `obj` lacks or mistypes against the spec's schema (empty when it conforms)."""
    schema = SPEC["components"]["schemas"][schema_name]
    wrong = [f"missing {k}" for k in schema["required"] if k not in obj]
    for key, value in obj.items():
        prop = schema["properties"].get(key)
        if prop is None:
            continue
        if value is None:
            if not prop.get("nullable"):
                wrong.append(f"{key} is null")
            continue
        options = prop.get("anyOf", [prop])
        kinds = [k for o in options if "type" in o for k in TYPES[o["type"]]]
        if any("$ref" in o for o in options):
            kinds.append(dict)
        if (kinds and not isinstance(value, tuple(kinds))) or (isinstance(value, bool) and bool not in kinds):
            wrong.append(f"{key}: {value!r} is not {[o.get('type') for o in options]}")
        if "enum" in prop and value not in prop["enum"]:
            wrong.append(f"{key}: {value!r} not in {prop['enum']}")
    return wrong


def _params(path: str) -> set[str]:
    return {p["name"] for p in SPEC["paths"][path]["get"]["parameters"]}


def _card_charge(c, amount: int, currency: str = "usd") -> str:
    pm = c.v1.payment_methods.create(params={"type": "card", "card": CARD})
    pi = c.v1.payment_intents.create(
        params={"amount": amount, "currency": currency, "payment_method": pm.id, "confirm": True}
    )
    return pi.latest_charge if isinstance(pi.latest_charge, str) else pi.latest_charge.id


def _bank_charge(c, ext, amount: int) -> str:
    pm = c.v1.payment_methods.create(params={
        "type": "us_bank_account",
        "billing_details": {"name": "Accounts Payable"},
        "us_bank_account": {"account_number": "000123456789", "routing_number": "110000000"},
    })
    cus = c.v1.customers.create(params={"name": "Bank Co"})
    c.v1.payment_methods.attach(pm.id, params={"customer": cus.id})
    pi = c.v1.payment_intents.create(params={
        "amount": amount, "currency": "usd", "customer": cus.id, "payment_method": pm.id,
        "payment_method_types": ["us_bank_account"], "confirm": True,
    })
    ext.settle(pi.id)
    return c.v1.payment_intents.retrieve(pi.id).to_dict()["latest_charge"]["id"]


def _txns(c, **params: Any) -> list[dict[str, Any]]:
    return [t.to_dict() for t in c.v1.balance_transactions.list(params=params).auto_paging_iter()]


def _txn_of(c, source: str) -> dict[str, Any]:
    found = _txns(c, source=source)
    assert len(found) == 1, found
    return found[0]


def _gateway(double) -> StripeGateway:
    return StripeGateway(StripeSettings(secret_key=Secret(double.secret_key), publishable_key="pk_test_1",
                                        webhook_secret=Secret("whsec_x"), api_base=double.api_base))


def test_fees_follow_stripe_pricing_and_sit_in_fee_and_fee_details(stripe_ext):
    stripe_ext.double.reset()
    c = stripe_client(stripe_ext.double)
    card = _txn_of(c, _card_charge(c, 10_000))
    small_ach = _txn_of(c, _bank_charge(c, stripe_ext, 10_000))
    big_ach = _txn_of(c, _bank_charge(c, stripe_ext, 100_000))
    charged = _card_charge(c, 20_000)
    refund = c.v1.refunds.create(params={"charge": charged, "amount": 5_000})
    refunded = _txn_of(c, refund.id)
    disputed = _card_charge(c, 4_000)
    dispute = stripe_ext.dispute(disputed)
    withdrawal = _txn_of(c, dispute["id"])
    stripe_ext.decide_dispute(dispute["id"], "won")
    stripe_ext.fees(card_percent="3.4", card_fixed=50)
    priced = _txn_of(c, _card_charge(c, 10_000))

    assert (card["amount"], card["fee"], card["net"]) == (10_000, 320, 9_680)
    assert card["fee_details"] == [{"amount": 320, "application": None, "currency": "usd",
                                    "description": "Stripe processing fees", "type": "stripe_fee"}]
    assert (small_ach["fee"], big_ach["fee"]) == (80, 500)  # 0.8%, capped at 5.00
    assert (refunded["amount"], refunded["fee"], refunded["net"]) == (-5_000, 0, -5_000)
    assert refunded["type"] == "refund"
    assert (withdrawal["amount"], withdrawal["fee"], withdrawal["net"]) == (-4_000, 1_500, -5_500)
    assert (withdrawal["type"], withdrawal["reporting_category"]) == ("adjustment", "dispute")
    won = _txns(c, source=dispute["id"])
    assert sorted((t["amount"], t["fee"]) for t in won) == [(-4_000, 1_500), (4_000, -1_500)]
    assert priced["fee"] == 390
    for txn in (card, small_ach, refunded, withdrawal, priced):
        assert _conforms(txn, "balance_transaction") == []
        assert txn["fee"] == sum(f["amount"] for f in txn["fee_details"])
        for detail in txn["fee_details"]:
            assert _conforms(detail, "fee") == []


def test_a_payout_links_every_available_transaction_and_conforms(stripe_ext):
    stripe_ext.double.reset()
    double = stripe_ext.double
    c = stripe_client(double)
    charges = [_card_charge(c, a) for a in (10_000, 2_500, 7_000)]
    c.v1.refunds.create(params={"charge": charges[1], "amount": 1_000})

    po = stripe_ext.payout("usd")
    at_stripe = c.v1.payouts.retrieve(po["id"]).to_dict()
    paid_out = _txns(c, payout=po["id"])
    only_charges = _txns(c, payout=po["id"], type="charge")
    event = wait_for_event(double, "payout.paid", po["id"])

    assert _conforms(at_stripe, "payout") == []
    assert (at_stripe["status"], at_stripe["currency"], at_stripe["reconciliation_status"]) == (
        "paid", "usd", "completed")
    content = [t for t in paid_out if t["type"] != "payout"]
    assert at_stripe["amount"] == sum(t["net"] for t in content) == 19_500 - 3 * 30 - 290 - 73 - 203 - 1_000
    own = [t for t in paid_out if t["type"] == "payout"]
    assert [(t["id"], t["amount"], t["source"]) for t in own] == [
        (at_stripe["balance_transaction"], -po["amount"], po["id"])
    ]
    assert sorted(t["source"] for t in only_charges) == sorted(charges)
    assert event["data"]["object"]["amount"] == po["amount"]
    assert {"payout", "type", "limit", "starting_after"} <= _params("/v1/balance_transactions")
    assert {"status", "created", "limit", "starting_after"} <= _params("/v1/payouts")
    with pytest.raises(AssertionError, match="balance_insufficient"):
        stripe_ext.payout("usd")  # everything is paid out


def test_payouts_in_any_currency_and_a_failed_one_leaves_its_funds_for_the_next(stripe_ext):
    stripe_ext.double.reset()
    double = stripe_ext.double
    c = stripe_client(double)
    _card_charge(c, 12_000, "jpy")
    _card_charge(c, 25_500, "kwd")

    failed = stripe_ext.payout("jpy", status="failed")
    yen = stripe_ext.payout("jpy")
    dinar = stripe_ext.payout("kwd")
    listed = {p.id: p.status for p in c.v1.payouts.list(params={"created": {"gte": 0}}).auto_paging_iter()}
    paid = [p.id for p in c.v1.payouts.list(params={"status": "paid"}).auto_paging_iter()]

    assert (failed["status"], failed["failure_code"]) == ("failed", "account_closed")
    assert failed["amount"] == 11_622
    assert _conforms(failed, "payout") == []
    assert (yen["currency"], yen["amount"]) == ("jpy", 12_000 - 348 - 30)
    assert (dinar["currency"], dinar["amount"]) == ("kwd", 25_500 - 740 - 30)
    assert listed == {failed["id"]: "failed", yen["id"]: "paid", dinar["id"]: "paid"}
    assert sorted(paid) == sorted([yen["id"], dinar["id"]])
    told = wait_for_event(double, "payout.failed", failed["id"])["data"]["object"]
    assert told["failure_code"] == "account_closed"


def test_the_gateway_reads_a_payout_across_pages(stripe_ext):
    stripe_ext.double.reset()
    double = stripe_ext.double
    c = stripe_client(double)
    charges = [_card_charge(c, 1_000 + i) for i in range(5)]
    po = stripe_ext.payout("usd")
    gw = _gateway(double)

    items = gw.payout_transactions(po["id"], page_size=2)
    state = gw.retrieve_payout(po["id"])
    recent = gw.list_payouts(created_since=0)

    assert sorted(i.source for i in items if i.type == "charge") == sorted(charges)
    assert len(items) == 6  # five charges and the payout's own transaction
    assert sum(i.net_minor for i in items if i.type != "payout") == state.amount_minor == po["amount"]
    assert all(i.net_minor == i.amount_minor - i.fee_minor and i.currency == "USD" for i in items)
    assert (state.status, state.currency, state.reconciled) == ("paid", "USD", True)
    assert [p.payout_id for p in recent] == [po["id"]]
    with pytest.raises(Exception, match="404"):
        gw.retrieve_payout("po_missing")
