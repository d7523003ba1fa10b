"""Cases B01 (zero- and three-decimal currencies) and B03 (allocation over invoices), end to end
through the checkout against the Stripe double, the outbox, the SMTP sink and the journal."""

from __future__ import annotations

import csv

import pytest
import stripe

from app import checkout
from app.core import payments
from app.core.payments import PaymentRequestError
from app.jobs import drain_outbox
from tests.factories import balance, make_client, make_invoice


def _card(double) -> str:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    )
    return str(pm.id)


def _intents(double) -> list:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    return [pi.to_dict() for pi in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()]


def _pay(services, double, client_id: int, items: list[tuple[str, int]]) -> checkout.ConfirmResult:
    co = checkout.begin_checkout(services, client_id=client_id, login_email="ap@contoso.example", items=items)
    return checkout.confirm_checkout(
        services,
        client_id=client_id,
        payment_token=co.payment_token,
        payment_method=_card(double),
        save=False,
    )


def _token(services, invoice_id: int) -> str:
    return str(services.store.scalar("SELECT token FROM invoices WHERE id = ?", (invoice_id,)))


def _journal(services) -> list[dict]:
    with services.config.journal_path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_yen_invoice_is_charged_and_receipted_in_whole_yen(stripe_services, stripe_double, mail):
    s = stripe_services
    client_id = make_client(s, "kaito", "Kaito Systems KK", billing_email="ap@kaito.example")
    j100 = make_invoice(s, "INV-J100", client_remote_id="kaito", total_minor=10000, currency="JPY")
    u100 = make_invoice(s, "INV-U100", client_remote_id="kaito", total_minor=10000, currency="USD")

    assert _pay(s, stripe_double, client_id, [(_token(s, j100), 10000)]).status == "succeeded"
    assert _pay(s, stripe_double, client_id, [(_token(s, u100), 10000)]).status == "succeeded"

    by_currency = {
        pi["currency"]: pi["amount"]
        for pi in _intents(stripe_double)
        if pi["metadata"].get("invoices") in ("INV-J100", "INV-U100")
    }
    assert by_currency == {"jpy": 10000, "usd": 10000}
    assert balance(s, j100) == 0 and balance(s, u100) == 0
    drain_outbox.run(s)
    receipts = mail.wait_for(2)
    yen = next(m for m in receipts if "INV-J100" in m.get_body(("plain",)).get_content())
    text = yen.get_body(("plain",)).get_content()
    assert "¥10,000" in text and "¥10,000." not in text and "¥100" not in text.replace("¥10,000", "")
    assert "¥10,000" in yen["Subject"]
    rows = [r for r in _journal(s) if r["invoice_number"] == "INV-J100"]
    assert [(r["credit"], r["currency"]) for r in rows] == [("10000", "JPY")]
    written = s.config.psa.files.path + "/payments.out.jsonl"
    assert "INV-J100" not in written  # the PSA write-back is keyed by remote id
    with open(written, encoding="utf-8") as fh:
        lines = [ln for ln in fh if "inv-INV-J100" in ln]
    assert len(lines) == 1 and '"10000"' in lines[0]


def test_three_decimal_amount_is_charged_exactly_and_unchargeable_one_is_refused(
    stripe_services, stripe_double
):
    s = stripe_services
    client_id = make_client(s, "kw", "Gulf Trading WLL", billing_email="ap@gulf.example")
    k1 = make_invoice(s, "INV-K1", client_remote_id="kw", total_minor=18600, currency="KWD")
    k2 = make_invoice(s, "INV-K2", client_remote_id="kw", total_minor=18605, currency="KWD")

    assert _pay(s, stripe_double, client_id, [(_token(s, k1), 18600)]).status == "succeeded"
    assert [
        pi["amount"] for pi in _intents(stripe_double) if pi["metadata"].get("invoices") == "INV-K1"
    ] == [18600]
    before = len(_intents(stripe_double))
    with pytest.raises(PaymentRequestError, match="not chargeable by card"):
        checkout.begin_checkout(
            s, client_id=client_id, login_email="ap@gulf.example", items=[(_token(s, k2), 18605)]
        )
    assert len(_intents(stripe_double)) == before
    assert (
        s.store.scalar(
            "SELECT COUNT(*) FROM payments p JOIN allocations a ON a.payment_id = p.id "
            "WHERE a.invoice_id = ?",
            (k2,),
        )
        == 0
    )
    assert balance(s, k2) == 18605


def test_processor_amount_that_disagrees_is_not_marked_paid_and_alerts_once(services):
    client_id = make_client(services, "kaito", "Kaito Systems KK")
    j100 = make_invoice(services, "INV-J100", client_remote_id="kaito", total_minor=10000, currency="JPY")
    plan = payments.start_payment(
        services.store,
        services.clock,
        client_id=client_id,
        items=[payments.PayItem(j100, 10000)],
        initiated_by="test",
        allow_partial=True,
        minimum_partial="1",
    )
    for _ in range(2):  # the webhook is replayed
        out = payments.record_intent(
            services.store,
            services.clock,
            payment_id=plan.payment_id,
            intent_id="pi_mismatch",
            processor_status="succeeded",
            amount_minor=1_000_000,
            currency="jpy",
            base_url="http://x",
            timezone=services.config.tz,
        )
        assert out.status != "succeeded"
    assert balance(services, j100) == 10000
    alerts = services.store.all("SELECT summary FROM exceptions WHERE kind = 'amount_mismatch'")
    assert len(alerts) == 1 and "amount mismatch" in alerts[0]["summary"]
    assert services.store.scalar("SELECT COUNT(*) FROM outbox") == 0


def _contoso(services):
    client_id = make_client(services)
    i1001 = make_invoice(services, "INV-1001", total_minor=5000, paid_minor=2000)
    i1002 = make_invoice(services, "INV-1002", total_minor=7000)
    return client_id, i1001, i1002


def test_one_payment_over_two_invoices_allocates_each_balance(stripe_services, stripe_double, mail):
    s = stripe_services
    client_id, i1001, i1002 = _contoso(s)
    assert balance(s, i1001) == 3000

    result = _pay(s, stripe_double, client_id, [(_token(s, i1001), 3000), (_token(s, i1002), 7000)])

    assert result.status == "succeeded"
    pis = [pi for pi in _intents(stripe_double) if pi["metadata"].get("invoices") == "INV-1001,INV-1002"]
    assert [(pi["amount"], pi["status"]) for pi in pis] == [(10000, "succeeded")]
    assert (balance(s, i1001), balance(s, i1002)) == (0, 0)
    drain_outbox.run(s)
    drain_outbox.run(s)
    [receipt] = mail.wait_for(1)
    text = receipt.get_body(("plain",)).get_content()
    assert "INV-1001: $30.00 applied" in text and "INV-1002: $70.00 applied" in text
    rows = _journal(s)
    assert [(r["invoice_number"], r["debit"], r["credit"]) for r in rows] == [
        ("", "100.00", ""),
        ("INV-1001", "", "30.00"),
        ("INV-1002", "", "70.00"),
    ]


def test_more_than_the_balance_is_refused_before_any_charge(stripe_services, stripe_double):
    s = stripe_services
    client_id, _i1001, i1002 = _contoso(s)
    before = len(_intents(stripe_double))
    with pytest.raises(PaymentRequestError, match=r"more than the 70\.00 still due"):
        checkout.begin_checkout(
            s, client_id=client_id, login_email="ap@contoso.example", items=[(_token(s, i1002), 10000)]
        )
    assert len(_intents(stripe_double)) == before
    assert balance(s, i1002) == 7000


def test_partial_payment_leaves_the_rest_due(stripe_services, stripe_double):
    s = stripe_services
    client_id, i1001, _ = _contoso(s)
    assert _pay(s, stripe_double, client_id, [(_token(s, i1001), 2500)]).status == "succeeded"
    assert balance(s, i1001) == 500
    status = s.store.scalar(
        "SELECT p.status FROM payments p JOIN allocations a ON a.payment_id = p.id WHERE a.invoice_id = ?",
        (i1001,),
    )
    assert status == "succeeded"
