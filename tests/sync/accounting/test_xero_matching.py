"""Xero: which invoice a PSA number means, never a guess; the tie-out reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.core.clock import FrozenClock
from sync.base import JournalPayment, MatchError
from tests.fakes.xero import XeroFake, wire


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[XeroFake]:
    with XeroFake(now=clock.utc_now) as xero:
        yield xero
        assert xero.violations == []


def payment(
    number: str,
    amount: int,
    *,
    token: str = "pay_M",  # noqa: S107 - a payment token, not a secret
    client: str = "Acme Dental",
    currency: str = "USD",
    on: date = date(2026, 12, 4),
) -> JournalPayment:
    return JournalPayment(
        payment_token=token,
        processor_ref=None,
        method="card",
        received_on=on,
        currency=currency,
        amount_minor=amount,
        client_name=client,
        client_remote_id="17",
        allocations=((number, amount),),
    )


def test_no_invoice_with_that_number_is_a_match_error_and_nothing_is_booked(fake, clock):
    w = wire(fake, clock)
    with pytest.raises(
        MatchError, match=r"no AUTHORISED Xero invoice numbered 1009 .*no invoice with that number"
    ):
        w.xero.push_payment(payment("1009", 5000), key="k")
    assert fake.payments == [] and fake.batches == []


def test_an_invoice_already_paid_in_xero_is_named_in_the_match_error(fake, clock):
    fake.add_invoice("1010", "50.00", status="PAID", paid="50.00")
    w = wire(fake, clock)
    with pytest.raises(MatchError, match=r"numbered 1010 for invoice 1010 \(Xero has it as PAID\)"):
        w.xero.push_payment(payment("1010", 5000), key="k")


def test_two_invoices_with_one_number_are_ambiguous(fake, clock):
    a = fake.add_invoice("1011", "50.00")
    b = fake.add_invoice("1011", "50.00", contact="Other Client")
    w = wire(fake, clock)
    with pytest.raises(MatchError, match="matches 2 AUTHORISED Xero invoices") as err:
        w.xero.push_payment(payment("1011", 5000), key="k")
    assert a["InvoiceID"] in str(err.value) and b["InvoiceID"] in str(err.value)
    assert fake.payments == []


def test_a_bill_with_the_same_number_is_not_a_sales_invoice(fake, clock):
    fake.add_invoice("1012", "50.00", kind="ACCPAY", contact="A Supplier")
    sale = fake.add_invoice("1012", "50.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("1012", 5000), key="k")
    [live] = fake.live_payments()
    assert live["InvoiceID"] == sale["InvoiceID"]


def test_more_than_is_due_in_xero_is_a_match_error_not_a_refused_payment(fake, clock):
    fake.add_invoice("1013", "120.00", paid="90.00")
    w = wire(fake, clock)
    with pytest.raises(
        MatchError, match=r"Xero invoice 1013 has 30.00 USD due; invoice 1013 is applied 50.00 USD"
    ):
        w.xero.push_payment(payment("1013", 5000), key="k")


def test_another_currency_is_a_match_error(fake, clock):
    fake.add_invoice("1014", "50.00", currency="EUR")
    w = wire(fake, clock)
    with pytest.raises(MatchError, match="is in EUR, the payment in USD"):
        w.xero.push_payment(payment("1014", 5000), key="k")


def test_the_number_prefix_is_added(fake, clock):
    fake.add_invoice("PSA-1015", "50.00")
    w = wire(fake, clock, number_prefix="PSA-")
    w.xero.push_payment(payment("1015", 5000), key="k")
    assert fake.invoice("PSA-1015")["Status"] == "PAID"
    assert fake.api_requests("GET", "/Invoices")[0].query["InvoiceNumbers"] == "PSA-1015"


def test_number_then_customer_finds_the_contacts_one_invoice_of_that_amount(fake, clock):
    fake.add_invoice("INV-0042", "100.00", contact="Acme Dental")
    fake.add_invoice("INV-0043", "80.00", contact="Acme Dental")
    fake.add_invoice("INV-0044", "100.00", contact="Other Client")
    w = wire(fake, clock, invoice_match="number_then_customer")

    w.xero.push_payment(payment("1042", 10000), key="k")

    assert fake.invoice("INV-0042")["Status"] == "PAID"
    assert fake.invoice("INV-0044")["Status"] == "AUTHORISED"
    [contacts] = fake.api_requests("GET", "/Contacts")
    assert contacts.query["where"] == 'Name=="Acme Dental"'


def test_number_then_customer_with_two_invoices_of_that_amount_is_ambiguous(fake, clock):
    fake.add_invoice("INV-0050", "100.00")
    fake.add_invoice("INV-0051", "100.00")
    w = wire(fake, clock, invoice_match="number_then_customer")
    with pytest.raises(MatchError, match=r"'Acme Dental' has 2 AUTHORISED invoices of 100.00 USD due") as err:
        w.xero.push_payment(payment("1050", 10000), key="k")
    assert "INV-0050" in str(err.value) and "INV-0051" in str(err.value)
    assert fake.payments == []


def test_number_then_customer_without_such_a_contact_is_a_match_error(fake, clock):
    fake.add_invoice("INV-0060", "100.00", contact="Acme Dental")
    w = wire(fake, clock, invoice_match="number_then_customer")
    with pytest.raises(MatchError, match="no contact named 'Acme Dentistry'"):
        w.xero.push_payment(payment("1060", 10000, client="Acme Dentistry"), key="k")


def test_number_then_customer_with_no_invoice_of_that_amount_lists_what_is_open(fake, clock):
    fake.add_invoice("INV-0070", "99.00")
    w = wire(fake, clock, invoice_match="number_then_customer")
    with pytest.raises(
        MatchError, match=r"has 0 AUTHORISED invoices of 100.00 USD due \(open: INV-0070 \(99.00 due\)\)"
    ):
        w.xero.push_payment(payment("1070", 10000), key="k")


# ---- tie-out reads --------------------------------------------------------------------------------


def test_open_invoices_pages_through_every_sales_invoice_with_a_balance(fake, clock):
    for n in range(150):
        fake.add_invoice(f"PSA-{n}", "10.00", paid="2.50" if n % 2 else "0")
    fake.add_invoice("PSA-paid", "10.00", status="PAID", paid="10.00")
    fake.add_invoice("PSA-draft", "10.00", status="DRAFT")
    w = wire(fake, clock, number_prefix="PSA-")

    found = list(w.xero.open_invoices())

    assert len(found) == 150
    assert {i.number for i in found} == {str(n) for n in range(150)}
    assert sum(i.balance_minor for i in found) == 75 * 1000 + 75 * 750
    assert {i.customer_name for i in found} == {"Acme Dental"}
    assert [r.query.get("page") for r in fake.api_requests("GET", "/Invoices")] == ["1", "2"]


def test_payments_between_reports_each_cashloop_payment_with_its_surcharge(fake, clock):
    for number, total in (("801", "100.00"), ("802", "60.00"), ("803", "40.00"), ("804", "10.00")):
        fake.add_invoice(number, total)
    w = wire(fake, clock)
    batch = JournalPayment(
        payment_token="pay_T1",
        processor_ref=None,
        method="card",
        received_on=date(2026, 12, 2),
        currency="USD",
        amount_minor=16300,
        client_name="Acme Dental",
        client_remote_id="17",
        allocations=(("801", 10000), ("802", 6000)),
        surcharge_minor=300,
    )
    w.xero.push_payment(batch, key="k1")
    w.xero.push_payment(payment("803", 4000, token="pay_T2", on=date(2026, 12, 3)), key="k2")
    w.xero.push_payment(payment("804", 1000, token="pay_T3", on=date(2026, 11, 30)), key="k3")  # before

    seen = sorted(w.xero.payments_between(date(2026, 12, 1), date(2026, 12, 31)), key=lambda p: p.reference)

    assert [(p.reference, p.amount_minor, p.currency, p.received_on) for p in seen] == [
        ("pay_T1", 16300, "USD", date(2026, 12, 2)),
        ("pay_T2", 4000, "USD", date(2026, 12, 3)),
    ]
    assert seen[0].remote_id.startswith("BatchPayment:")


def test_payments_between_leaves_out_deleted_payments(fake, clock):
    fake.add_invoice("811", "25.00")
    w = wire(fake, clock)
    ref = w.xero.push_payment(payment("811", 2500, token="pay_del"), key="k")
    fake.delete_payment_in_xero(ref)
    assert list(w.xero.payments_between(date(2026, 12, 1), date(2026, 12, 31))) == []
    assert fake.invoice("811")["AmountDue"] == Decimal("25.00")
