"""Xero: payments applied to invoices, surcharges, retries after a lost response (B11), currencies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.core.clock import FrozenClock
from sync.base import ConnectorError, JournalPayment
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
    token: str,
    amount: int,
    allocations: tuple[tuple[str, int], ...],
    *,
    currency: str = "USD",
    surcharge: int = 0,
    client: str = "Acme Dental",
) -> JournalPayment:
    return JournalPayment(
        payment_token=token,
        processor_ref=f"pi_{token}",
        method="card",
        received_on=date(2026, 12, 4),
        currency=currency,
        amount_minor=amount,
        client_name=client,
        client_remote_id="17",
        allocations=allocations,
        surcharge_minor=surcharge,
    )


def applied(fake: XeroFake, batch: dict) -> list[tuple[str, Decimal]]:
    numbers = {i["InvoiceID"]: i["InvoiceNumber"] for i in fake.invoices}
    return [
        (numbers[p["InvoiceID"]], p["Amount"]) for p in fake.payments if p["PaymentID"] in batch["PaymentIDs"]
    ]


def test_one_payment_over_three_invoices_is_one_batch_of_exactly_those_amounts(fake, clock):
    for number, total in (("1001", "100.00"), ("1002", "100.00"), ("1003", "120.00")):
        fake.add_invoice(number, total)
    w = wire(fake, clock)

    ref = w.xero.push_payment(
        payment("pay_A", 25000, (("1001", 10000), ("1002", 10000), ("1003", 5000))), key="v1-journal-aa"
    )

    [batch] = fake.live_batches()
    assert ref == f"BatchPayment:{batch['BatchPaymentID']}"
    assert applied(fake, batch) == [
        ("1001", Decimal("100.00")),
        ("1002", Decimal("100.00")),
        ("1003", Decimal("50.00")),
    ]
    assert batch["TotalAmount"] == Decimal("250.00")
    assert fake.invoice("1003")["AmountDue"] == Decimal("70.00")
    assert fake.invoice("1003")["Status"] == "AUTHORISED"
    assert fake.invoice("1001")["AmountDue"] == Decimal("0.00")
    assert fake.invoice("1001")["Status"] == "PAID"
    assert fake.balance("090") == Decimal("250.00")  # all of it in the clearing account
    [put] = fake.api_requests("PUT", "/BatchPayments")
    sent = put.body["BatchPayments"][0]
    assert sent["Account"] == {"Code": "090"}
    assert sent["Reference"] == "pay_A"
    assert sent["Date"] == "2026-12-04"
    assert [str(p["Amount"]) for p in sent["Payments"]] == ["100.00", "100.00", "50.00"]  # exact literals
    assert put.headers["idempotency-key"] == "v1-journal-aa"
    assert put.headers["xero-tenant-id"] == fake.tenant_id
    assert put.headers["authorization"].startswith("Bearer ")
    assert fake.api_requests("PUT", "/Payments") == []


def test_a_single_invoice_payment_is_a_plain_payment_with_its_reference(fake, clock):
    fake.add_invoice("2001", "1250.00")
    w = wire(fake, clock)

    ref = w.xero.push_payment(payment("pay_B", 125000, (("2001", 125000),)), key="k-b")

    [live] = fake.live_payments()
    assert ref == f"Payment:{live['PaymentID']}"
    assert (live["Amount"], live["Reference"], live["Account"]["Code"]) == (
        Decimal("1250.00"),
        "pay_B",
        "090",
    )
    assert "BatchPaymentID" not in live
    assert fake.invoice("2001")["Status"] == "PAID"
    assert fake.live_batches() == []


def test_a_surcharge_is_income_in_the_clearing_account_never_on_the_invoice(fake, clock):
    fake.add_invoice("3001", "100.00")
    w = wire(fake, clock)

    w.xero.push_payment(payment("pay_S", 10300, (("3001", 10000),), surcharge=300), key="k-s")

    [live] = fake.live_payments()
    assert live["Amount"] == Decimal("100.00")
    assert fake.invoice("3001")["AmountDue"] == Decimal("0.00")
    [txn] = fake.live_bank_transactions()
    assert (txn["Type"], txn["BankAccount"]["Code"], txn["Reference"]) == ("RECEIVE", "090", "pay_S")
    assert [(ln["AccountCode"], ln["LineAmount"]) for ln in txn["LineItems"]] == [("260", Decimal("3.00"))]
    assert fake.balance("090") == Decimal("103.00")
    # pushed again (a retry): nothing new
    w.xero.push_payment(payment("pay_S", 10300, (("3001", 10000),), surcharge=300), key="k-s")
    assert len(fake.live_payments()) == 1 and len(fake.live_bank_transactions()) == 1


def test_allocations_that_do_not_add_up_are_refused_before_any_call(fake, clock):
    fake.add_invoice("3002", "100.00")
    w = wire(fake, clock)
    with pytest.raises(ValueError, match="do not add up"):
        w.xero.push_payment(payment("pay_X", 10100, (("3002", 10000),)), key="k-x")
    assert fake.api_requests() == []


# ---- B11 for Xero: the response of the create is lost -------------------------------------------


def test_timeout_after_xero_committed_then_a_retry_leaves_one_payment(fake, clock):
    for number in ("4001", "4002"):
        fake.add_invoice(number, "625.00")
    w = wire(fake, clock, timeout=0.4, max_retries=0)
    p = payment("pi_A", 125000, (("4001", 62500), ("4002", 62500)))
    fake.drop_next(method="PUT", path="/BatchPayments", seconds=1.0)

    with pytest.raises(ConnectorError) as lost:
        w.xero.push_payment(p, key="v1-journal_payment-b11")
    assert lost.value.retryable
    assert len(fake.live_batches()) == 1  # Xero did commit it

    ref = w.xero.push_payment(p, key="v1-journal_payment-b11")  # the outbox's next attempt

    [batch] = fake.live_batches()
    assert ref == f"BatchPayment:{batch['BatchPaymentID']}"
    assert batch["TotalAmount"] == Decimal("1250.00")
    assert fake.invoice("4001")["AmountDue"] == Decimal("0.00")
    assert len(fake.api_requests("PUT", "/BatchPayments")) == 1  # found by lookup, not sent again


def test_a_retry_inside_the_call_is_replayed_by_xero_for_the_same_idempotency_key(fake, clock):
    fake.add_invoice("4101", "80.00")
    w = wire(fake, clock, timeout=0.4, max_retries=2)
    fake.drop_next(method="PUT", path="/Payments", seconds=1.0)

    ref = w.xero.push_payment(payment("pi_R", 8000, (("4101", 8000),)), key="k-replay")

    [live] = fake.live_payments()
    assert ref == f"Payment:{live['PaymentID']}"
    puts = fake.api_requests("PUT", "/Payments")
    assert len(puts) == 2 and {p.headers["idempotency-key"] for p in puts} == {"k-replay"}


def test_b11_variant_deleted_in_xero_then_repushed_with_a_new_key_books_one_live_payment(fake, clock):
    fake.add_invoice("4201", "1250.00")
    w = wire(fake, clock)
    p = payment("pi_A", 125000, (("4201", 125000),))
    first = w.xero.push_payment(p, key="v1-journal_payment-1")
    fake.delete_payment_in_xero(first)  # a bookkeeper deletes it
    assert fake.invoice("4201")["AmountDue"] == Decimal("1250.00")

    # Reusing the old key replays the old answer: the deleted payment (why re-push changes the key).
    assert w.xero.push_payment(p, key="v1-journal_payment-1") == first
    assert fake.live_payments() == []

    again = w.xero.push_payment(p, key="v1-journal_payment-1-repush-1")

    [live] = fake.live_payments()
    assert again == f"Payment:{live['PaymentID']}" != first
    assert live["Reference"] == "pi_A"
    assert fake.invoice("4201")["AmountDue"] == Decimal("0.00")


def test_a_long_outbox_key_becomes_a_stable_key_within_xeros_128_characters(fake, clock):
    fake.add_invoice("4301", "10.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("pi_L", 1000, (("4301", 1000),)), key="k" * 200)
    [put] = fake.api_requests("PUT", "/Payments")
    sent = put.headers["idempotency-key"]
    assert len(sent) <= 128 and sent.startswith("sha256-")


# ---- currencies -----------------------------------------------------------------------------------


def test_yen_and_a_three_decimal_currency_round_trip_exactly(fake, clock):
    fake.add_invoice("5001", "125000", currency="JPY", contact="Tokyo Office")
    fake.add_invoice("5002", "18.600", currency="KWD", contact="Kuwait Office")
    fake.add_invoice("5003", "10.125", currency="KWD", contact="Kuwait Office")
    w = wire(fake, clock)

    w.xero.push_payment(payment("pay_JPY", 125000, (("5001", 125000),), currency="JPY"), key="k-jpy")
    w.xero.push_payment(
        payment("pay_KWD", 23725, (("5002", 18600), ("5003", 5125)), currency="KWD"), key="k-kwd"
    )

    [jpy] = fake.api_requests("PUT", "/Payments")
    assert str(jpy.body["Payments"][0]["Amount"]) == "125000"
    [kwd] = fake.api_requests("PUT", "/BatchPayments")
    assert [str(p["Amount"]) for p in kwd.body["BatchPayments"][0]["Payments"]] == ["18.600", "5.125"]
    assert fake.invoice("5001")["AmountDue"] == 0
    assert fake.invoice("5003")["AmountDue"] == Decimal("5.000")
    seen = {
        p.reference: (p.currency, p.amount_minor)
        for p in w.xero.payments_between(date(2026, 12, 1), date(2026, 12, 31))
    }
    assert seen == {"pay_JPY": ("JPY", 125000), "pay_KWD": ("KWD", 23725)}
    open_kwd = [i for i in w.xero.open_invoices() if i.number == "5003"]
    assert [(i.currency, i.total_minor, i.balance_minor) for i in open_kwd] == [("KWD", 10125, 5000)]
