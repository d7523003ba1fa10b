"""Xero: a refund cut short between deleting the booking and booking its replacement is finished
by the next attempt with the same key: nothing deleted twice, one live replacement, right amount."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.core.clock import FrozenClock
from sync.base import ConnectorError, JournalPayment, JournalReversal
from tests.fakes.xero import XeroFake, wire


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[XeroFake]:
    with XeroFake(now=clock.utc_now) as xero:
        yield xero
        assert xero.violations == []


def payment(token: str, allocations: tuple[tuple[str, int], ...]) -> JournalPayment:
    return JournalPayment(
        payment_token=token,
        processor_ref=f"ch_{token}",
        method="card",
        received_on=date(2026, 12, 1),
        currency="USD",
        amount_minor=sum(a for _, a in allocations),
        client_name="Acme Dental",
        client_remote_id="17",
        allocations=allocations,
    )


def refund(reference: str, token: str, allocations: tuple[tuple[str, int], ...]) -> JournalReversal:
    return JournalReversal(
        kind="refund",
        reference=reference,
        payment_token=token,
        processor_ref=f"ch_{token}",
        method="card",
        occurred_on=date(2026, 12, 3),
        currency="USD",
        amount_minor=sum(a for _, a in allocations),
        surcharge_minor=0,
        client_name="Acme Dental",
        client_remote_id="17",
        allocations=allocations,
    )


def deletes(fake: XeroFake) -> list[str]:
    return [r.path for r in fake.api_requests("POST") if r.body == {"Status": "DELETED"}]


def test_a_refund_cut_short_before_the_replacement_books_it_on_the_retry(fake, clock):
    for number, total in (("801", "100.00"), ("802", "100.00"), ("803", "120.00")):
        fake.add_invoice(number, total)
    w = wire(fake, clock)
    original = w.xero.push_payment(
        payment("pay_C", (("801", 10000), ("802", 10000), ("803", 5000))), key="k-c"
    )
    fake.fail_next(503, times=3, method="PUT", path="/BatchPayments", exact=True)  # every attempt of the call

    with pytest.raises(ConnectorError) as cut:
        w.xero.push_reversal(refund("rf_C", "pay_C", (("803", 3000),)), key="k-rf-c")

    assert cut.value.retryable
    assert fake.live_batches() == []  # the original is gone, its invoices fully open
    assert [fake.invoice(n)["AmountDue"] for n in ("801", "802", "803")] == [
        Decimal("100.00"),
        Decimal("100.00"),
        Decimal("120.00"),
    ]
    original_id = original.split(":", 1)[1]
    assert [h["Details"] for h in fake.history[original_id] if h["User"] == "Cashloop"] == [
        'Cashloop: replaced by "pay_C after rf_C", what stays applied after refund rf_C'
    ]

    ref = w.xero.push_reversal(refund("rf_C", "pay_C", (("803", 3000),)), key="k-rf-c")  # the outbox again

    [batch] = fake.live_batches()
    assert ref == f"BatchPayment:{batch['BatchPaymentID']}" != original
    assert (batch["Reference"], batch["Date"], batch["TotalAmount"]) == (
        "pay_C after rf_C",
        date(2026, 12, 1),
        Decimal("220.00"),
    )
    assert [fake.invoice(n)["AmountDue"] for n in ("801", "802", "803")] == [
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("100.00"),
    ]
    assert fake.balance("090") == Decimal("220.00")
    assert deletes(fake) == [f"/BatchPayments/{original_id}"]  # deleted once, never again

    # once more (another repeat): found by its Reference, nothing written
    writes = len(fake.api_requests("PUT")) + len(fake.api_requests("POST"))
    assert w.xero.push_reversal(refund("rf_C", "pay_C", (("803", 3000),)), key="k-rf-c") == ref
    assert len(fake.api_requests("PUT")) + len(fake.api_requests("POST")) == writes
    assert len(fake.live_batches()) == 1


def test_a_lost_delete_response_then_the_retry_books_one_replacement_and_deletes_nothing_more(fake, clock):
    fake.add_invoice("810", "100.00")
    w = wire(fake, clock, timeout=0.4, max_retries=0)
    original = w.xero.push_payment(payment("pay_S", (("810", 10000),)), key="k-s")
    fake.drop_next(method="POST", path="/Payments/", seconds=1.0)  # the process dies with the delete

    with pytest.raises(ConnectorError):
        w.xero.push_reversal(refund("rf_S", "pay_S", (("810", 2500),)), key="k-rf-s")
    assert fake.live_payments() == [] and fake.invoice("810")["AmountDue"] == Decimal("100.00")

    ref = w.xero.push_reversal(refund("rf_S", "pay_S", (("810", 2500),)), key="k-rf-s")

    [live] = fake.live_payments()
    assert ref == f"Payment:{live['PaymentID']}" != original
    assert (live["Reference"], live["Amount"], live["Date"]) == (
        "pay_S after rf_S",
        Decimal("75.00"),
        date(2026, 12, 1),
    )
    assert fake.invoice("810")["AmountDue"] == Decimal("25.00")
    assert deletes(fake) == [f"/Payments/{original.split(':', 1)[1]}"]


def test_a_second_refund_cut_short_resumes_from_the_first_refunds_replacement(fake, clock):
    fake.add_invoice("820", "100.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("pay_K", (("820", 10000),)), key="k-k")
    first = w.xero.push_reversal(refund("rf_1", "pay_K", (("820", 2000),)), key="k-rf-1")
    fake.fail_next(503, times=3, method="PUT", path="/Payments", exact=True)

    with pytest.raises(ConnectorError):
        w.xero.push_reversal(refund("rf_2", "pay_K", (("820", 3000),)), key="k-rf-2")
    assert fake.live_payments() == [] and fake.invoice("820")["AmountDue"] == Decimal("100.00")

    ref = w.xero.push_reversal(refund("rf_2", "pay_K", (("820", 3000),)), key="k-rf-2")

    # what stays is 80.00 (after rf_1) less 30.00: the original, deleted by rf_1, is not counted again
    [live] = fake.live_payments()
    assert ref == f"Payment:{live['PaymentID']}"
    assert (live["Reference"], live["Amount"]) == ("pay_K after rf_2", Decimal("50.00"))
    assert fake.invoice("820")["AmountDue"] == Decimal("50.00")
    assert len(deletes(fake)) == 2 and deletes(fake)[1] == f"/Payments/{first.split(':', 1)[1]}"


def test_a_booking_a_person_deleted_in_xero_is_not_booked_again_by_a_refund(fake, clock):
    fake.add_invoice("830", "100.00")
    w = wire(fake, clock)
    booked = w.xero.push_payment(payment("pay_P", (("830", 10000),)), key="k-p")
    fake.delete_payment_in_xero(booked)  # no Cashloop note on it: not ours to replace

    ref = w.xero.push_reversal(refund("rf_P", "pay_P", (("830", 4000),)), key="k-rf-p")

    assert ref == "Reversal:pay_P after rf_P"
    assert fake.live_payments() == [] and fake.invoice("830")["AmountDue"] == Decimal("100.00")
    assert len(fake.api_requests("PUT", "/Payments")) == 1 and len(deletes(fake)) == 0
