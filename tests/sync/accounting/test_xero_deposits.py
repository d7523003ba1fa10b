"""Xero: refunds and disputes reopen invoices; a payout is one bank transfer equal to it, plus one
fee line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import requests

from app.core.clock import FrozenClock
from sync.base import ConnectorError, DepositLine, JournalDeposit, JournalPayment, JournalReversal, MatchError
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
    token: str, amount: int, allocations: tuple[tuple[str, int], ...], *, surcharge: int = 0
) -> JournalPayment:
    return JournalPayment(
        payment_token=token,
        processor_ref=f"ch_{token}",
        method="card",
        received_on=date(2026, 12, 1),
        currency="USD",
        amount_minor=amount,
        client_name="Acme Dental",
        client_remote_id="17",
        allocations=allocations,
        surcharge_minor=surcharge,
    )


def reversal(
    kind: str, reference: str, token: str, allocations: tuple[tuple[str, int], ...], *, surcharge: int = 0
) -> JournalReversal:
    return JournalReversal(
        kind=kind,
        reference=reference,
        payment_token=token,
        processor_ref=f"ch_{token}",  # type: ignore[arg-type]
        method="card",
        occurred_on=date(2026, 12, 3),
        currency="USD",
        amount_minor=sum(a for _, a in allocations) + surcharge,
        surcharge_minor=surcharge,
        client_name="Acme Dental",
        client_remote_id="17",
        allocations=allocations,
    )


def transfers(fake: XeroFake) -> list[tuple[str, str, str, Decimal]]:
    return [
        (t["Reference"], t["FromBankAccount"]["Code"], t["ToBankAccount"]["Code"], t["Amount"])
        for t in fake.bank_transfers
    ]


def one_payment_payout(payout_id: str, amount: int, fee: int, *, ref: str = "Payment:x") -> JournalDeposit:
    return JournalDeposit(
        payout_id=payout_id,
        arrival_on=date(2026, 12, 4),
        currency="USD",
        amount_minor=amount - fee,
        fee_minor=fee,
        lines=(
            DepositLine(
                kind="payment",
                processor_ref="ch_1",
                amount_minor=amount,
                fee_minor=fee,
                payment_token="pay_1",
                remote_payment_ref=ref,
            ),
        ),
    )


def test_a_payout_of_five_payments_with_fees_and_a_refund_equals_the_bank_line_to_the_cent(fake, clock):
    amounts = [10000, 20000, 5000, 7525, 12000]
    fees = [320, 610, 175, 248, 378]
    w = wire(fake, clock)
    refs = []
    for i, amount in enumerate(amounts):
        fake.add_invoice(f"60{i}", str(Decimal(amount).scaleb(-2)))
        refs.append(w.xero.push_payment(payment(f"pay_{i}", amount, ((f"60{i}", amount),)), key=f"k-pay-{i}"))
    w.xero.push_reversal(reversal("refund", "rf_1", "pay_1", (("601", 4000),)), key="k-refund-1")
    assert fake.invoice("601")["AmountDue"] == Decimal("40.00")  # reopened in Xero as in Cashloop

    lines = [
        DepositLine(
            kind="payment",
            processor_ref=f"ch_pay_{i}",
            amount_minor=a,
            fee_minor=f,
            payment_token=f"pay_{i}",
            remote_payment_ref=refs[i],
        )
        for i, (a, f) in enumerate(zip(amounts, fees, strict=True))
    ]
    lines.append(
        DepositLine(
            kind="refund",
            processor_ref="re_1",
            amount_minor=-4000,
            fee_minor=0,
            payment_token="pay_1",
            reference="rf_1",
        )
    )
    fee_total = sum(fees)  # 17.31
    payout = JournalDeposit(
        payout_id="po_1",
        arrival_on=date(2026, 12, 4),
        currency="USD",
        amount_minor=sum(amounts) - 4000 - fee_total,
        fee_minor=fee_total,
        lines=tuple(lines),
    )

    ref = w.xero.push_deposit(payout, key="k-deposit-po_1")

    assert fake.balance("091") == Decimal("487.94")  # 545.25 - 40.00 refunded - 17.31 fees
    assert Decimal(payout.amount_minor).scaleb(-2) == Decimal("487.94")
    [transfer] = fake.bank_transfers  # ONE transfer, clearing -> bank, exactly the payout
    assert ref == f"BankTransfer:{transfer['BankTransferID']}"
    assert transfers(fake) == [("po_1", "090", "091", Decimal("487.94"))]
    assert transfer["Date"] == date(2026, 12, 4)
    # no bank transaction is coded to a bank account (Xero refuses that)
    assert not [
        t
        for t in fake.live_bank_transactions()
        if any(ln["AccountCode"] in ("090", "091") for ln in t["LineItems"])
    ]
    [fee_line] = [t for t in fake.live_bank_transactions() if t["Reference"] == "po_1 fees"]
    assert (fee_line["Type"], fee_line["BankAccount"]["Code"]) == ("SPEND", "090")
    assert [(ln["AccountCode"], ln["LineAmount"]) for ln in fee_line["LineItems"]] == [
        ("404", Decimal("17.31"))
    ]
    assert fake.balance("090") == 0  # the clearing account is empty: nothing counted twice
    assert fake.balance("404") == Decimal("17.31")

    # the same payout again (a retry): nothing new
    count = len(fake.live_bank_transactions())
    assert w.xero.push_deposit(payout, key="k-deposit-po_1") == ref
    assert len(fake.live_bank_transactions()) == count and len(fake.bank_transfers) == 1
    assert len(fake.api_requests("PUT", "/BankTransfers")) == 1  # found by the lookup, not sent again
    [lookup, *_] = fake.api_requests("GET", "/BankTransfers")
    assert lookup.query == {"where": 'Reference=="po_1"'}


def test_a_lost_transfer_response_then_the_retry_leaves_one_transfer(fake, clock):
    w = wire(fake, clock, timeout=0.4, max_retries=0)
    payout = one_payment_payout("po_lost", 10000, 320)
    fake.drop_next(method="PUT", path="/BankTransfers", seconds=1.0)

    with pytest.raises(ConnectorError) as lost:
        w.xero.push_deposit(payout, key="k-deposit-lost")
    assert lost.value.retryable
    assert transfers(fake) == [("po_lost", "090", "091", Decimal("96.80"))]  # Xero did make it

    ref = w.xero.push_deposit(payout, key="k-deposit-lost")  # the outbox's next attempt

    [transfer] = fake.bank_transfers
    assert ref == f"BankTransfer:{transfer['BankTransferID']}"
    assert len(fake.api_requests("PUT", "/BankTransfers")) == 1
    assert fake.balance("091") == Decimal("96.80")
    [fee_line] = [t for t in fake.live_bank_transactions() if t["Reference"] == "po_lost fees"]
    assert fee_line["Total"] == Decimal("3.20")


def test_a_retry_inside_the_call_is_replayed_for_the_transfers_idempotency_key(fake, clock):
    w = wire(fake, clock, timeout=0.4, max_retries=2)
    fake.drop_next(method="PUT", path="/BankTransfers", seconds=1.0)

    w.xero.push_deposit(one_payment_payout("po_replay", 5000, 175), key="k-deposit-replay")

    assert transfers(fake) == [("po_replay", "090", "091", Decimal("48.25"))]
    puts = fake.api_requests("PUT", "/BankTransfers")
    assert len(puts) == 2 and {p.headers["idempotency-key"] for p in puts} == {"k-deposit-replay/transfer"}


def test_a_transfer_with_the_payouts_reference_but_another_amount_needs_a_person(fake, clock):
    w = wire(fake, clock)
    w.xero.push_deposit(one_payment_payout("po_odd", 5000, 175), key="k-odd-1")
    with pytest.raises(ConnectorError, match="a person must look at it") as odd:
        w.xero.push_deposit(one_payment_payout("po_odd", 6000, 175), key="k-odd-2")
    assert not odd.value.retryable
    assert transfers(fake) == [("po_odd", "090", "091", Decimal("48.25"))]


def test_the_fake_refuses_a_bank_line_coded_to_a_bank_account_as_xero_does(fake):
    body = {
        "BankTransactions": [
            {
                "Type": "RECEIVE",
                "Contact": {"Name": "Stripe"},
                "BankAccount": {"Code": "091"},
                "Date": "2026-12-04",
                "Reference": "po_old_way",
                "LineItems": [
                    {"Description": "payout", "Quantity": 1, "UnitAmount": 10, "AccountCode": "090"}
                ],
            }
        ]
    }
    answer = requests.put(
        fake.api_base + "/BankTransactions",
        data=json.dumps(body),
        timeout=5,
        headers={
            "Authorization": f"Bearer {fake.grant()['access_token']}",
            "xero-tenant-id": fake.tenant_id,
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 400
    [element] = answer.json()["Elements"]
    assert "'090' is a bank account" in element["ValidationErrors"][0]["Message"]
    assert fake.live_bank_transactions() == []


def test_a_payout_that_does_not_add_up_is_refused_before_any_call(fake, clock):
    w = wire(fake, clock)
    line = DepositLine(
        kind="payment",
        processor_ref="ch_1",
        amount_minor=10000,
        fee_minor=320,
        payment_token="pay_1",
        remote_payment_ref="Payment:x",
    )
    with pytest.raises(ValueError, match="is not the payout amount"):
        w.xero.push_deposit(
            JournalDeposit(
                payout_id="po_bad",
                arrival_on=date(2026, 12, 4),
                currency="USD",
                amount_minor=9700,
                fee_minor=320,
                lines=(line,),
            ),
            key="k",
        )
    with pytest.raises(ValueError, match="line fees add up to 320"):
        w.xero.push_deposit(
            JournalDeposit(
                payout_id="po_bad",
                arrival_on=date(2026, 12, 4),
                currency="USD",
                amount_minor=9700,
                fee_minor=300,
                lines=(line,),
            ),
            key="k",
        )
    assert fake.api_requests() == []


def test_a_payout_waits_for_its_payments_to_be_booked(fake, clock):
    w = wire(fake, clock)
    line = DepositLine(
        kind="payment",
        processor_ref="ch_9",
        amount_minor=10000,
        fee_minor=320,
        payment_token="pay_9",
        remote_payment_ref=None,
    )
    with pytest.raises(ConnectorError, match="waiting for payment pay_9") as waiting:
        w.xero.push_deposit(
            JournalDeposit(
                payout_id="po_w",
                arrival_on=date(2026, 12, 4),
                currency="USD",
                amount_minor=9680,
                fee_minor=320,
                lines=(line,),
            ),
            key="k",
        )
    assert waiting.value.retryable
    assert fake.live_bank_transactions() == [] and fake.bank_transfers == []


def test_a_negative_payout_is_money_out_of_the_bank(fake, clock):
    fake.add_invoice("650", "50.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("pay_n", 5000, (("650", 5000),)), key="k-n")
    w.xero.push_reversal(reversal("dispute", "dp_1", "pay_n", (("650", 5000),)), key="k-dp")
    lines = (
        DepositLine(
            kind="dispute",
            processor_ref="dp_1",
            amount_minor=-5000,
            fee_minor=1500,
            payment_token="pay_n",
            reference="dp_1",
        ),
    )
    w.xero.push_deposit(
        JournalDeposit(
            payout_id="po_neg",
            arrival_on=date(2026, 12, 4),
            currency="USD",
            amount_minor=-6500,
            fee_minor=1500,
            lines=lines,
        ),
        key="k-neg",
    )
    # the payment itself reached the bank in an earlier payout; book that one to compare the balances
    w.xero.push_deposit(
        JournalDeposit(
            payout_id="po_pos",
            arrival_on=date(2026, 12, 2),
            currency="USD",
            amount_minor=5000,
            fee_minor=0,
            lines=(
                DepositLine(
                    kind="payment",
                    processor_ref="ch_pay_n",
                    amount_minor=5000,
                    fee_minor=0,
                    payment_token="pay_n",
                    remote_payment_ref="Payment:x",
                ),
            ),
        ),
        key="k-pos",
    )
    assert fake.balance("091") == Decimal("-15.00")  # the dispute fee is what the bank lost
    assert fake.balance("090") == 0
    assert transfers(fake) == [
        ("po_neg", "091", "090", Decimal("65.00")),  # money back out of the bank to Stripe
        ("po_pos", "090", "091", Decimal("50.00")),
    ]
    assert fake.invoice("650")["AmountDue"] == Decimal("50.00")


def test_a_partial_refund_of_a_batch_replaces_it_by_what_stays_applied(fake, clock):
    for number, total in (("701", "100.00"), ("702", "100.00"), ("703", "120.00")):
        fake.add_invoice(number, total)
    w = wire(fake, clock)
    first = w.xero.push_payment(
        payment("pay_P", 25000, (("701", 10000), ("702", 10000), ("703", 5000))), key="k-p"
    )

    ref = w.xero.push_reversal(reversal("refund", "rf_P", "pay_P", (("703", 3000),)), key="k-rf-p")

    [batch] = fake.live_batches()
    assert ref == f"BatchPayment:{batch['BatchPaymentID']}" != first
    assert batch["Reference"] == "pay_P after rf_P"
    assert batch["Date"] == date(2026, 12, 1)  # the receipt's date, not the refund's
    assert batch["TotalAmount"] == Decimal("220.00")
    assert fake.invoice("703")["AmountDue"] == Decimal("100.00")
    assert fake.invoice("701")["AmountDue"] == Decimal("0.00")
    assert fake.balance("090") == Decimal("220.00")

    # a retry of the same reversal finds the replacement and changes nothing
    assert w.xero.push_reversal(reversal("refund", "rf_P", "pay_P", (("703", 3000),)), key="k-rf-p") == ref
    assert len(fake.live_batches()) == 1
    # and a retry of the original push finds the payment's live booking instead of paying twice
    assert (
        w.xero.push_payment(
            payment("pay_P", 25000, (("701", 10000), ("702", 10000), ("703", 5000))), key="k-p"
        )
        == ref
    )
    assert fake.invoice("703")["AmountDue"] == Decimal("100.00")


def test_a_full_refund_with_surcharge_reopens_the_invoice_and_takes_the_surcharge_back(fake, clock):
    fake.add_invoice("710", "100.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("pay_F", 10300, (("710", 10000),), surcharge=300), key="k-f")

    ref = w.xero.push_reversal(
        reversal("refund", "rf_F", "pay_F", (("710", 10000),), surcharge=300), key="k-rf"
    )

    assert ref == "Reversal:pay_F after rf_F"
    assert fake.live_payments() == []
    assert fake.invoice("710")["AmountDue"] == Decimal("100.00")
    spend = [t for t in fake.live_bank_transactions() if t["Type"] == "SPEND"]
    assert [(t["Reference"], t["Total"], t["LineItems"][0]["AccountCode"]) for t in spend] == [
        ("pay_F after rf_F", Decimal("3.00"), "260")
    ]
    assert fake.balance("090") == 0 and fake.balance("260") == 0
    w.xero.push_reversal(reversal("refund", "rf_F", "pay_F", (("710", 10000),), surcharge=300), key="k-rf")
    assert len(fake.live_bank_transactions()) == 2 and fake.invoice("710")["AmountDue"] == Decimal("100.00")


def test_a_dispute_then_won_books_the_payment_again(fake, clock):
    fake.add_invoice("720", "80.00")
    fake.add_invoice("721", "20.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("pay_D", 10000, (("720", 8000), ("721", 2000))), key="k-d")
    w.xero.push_reversal(reversal("dispute", "dp_D", "pay_D", (("720", 8000), ("721", 2000))), key="k-dp")
    assert fake.live_batches() == [] and fake.invoice("720")["AmountDue"] == Decimal("80.00")

    ref = w.xero.push_reversal(
        reversal("dispute_won", "dp_D", "pay_D", (("720", 8000), ("721", 2000))), key="k-won"
    )

    [batch] = fake.live_batches()
    assert ref == f"BatchPayment:{batch['BatchPaymentID']}"
    assert (batch["Reference"], batch["Date"], batch["TotalAmount"]) == (
        "pay_D won dp_D",
        date(2026, 12, 3),
        Decimal("100.00"),
    )
    assert fake.invoice("720")["AmountDue"] == 0 and fake.invoice("721")["AmountDue"] == 0
    assert fake.balance("090") == Decimal("100.00")


def test_a_reversal_of_an_invoice_the_booking_does_not_pay_is_a_match_error(fake, clock):
    fake.add_invoice("730", "100.00")
    fake.add_invoice("731", "100.00")
    w = wire(fake, clock)
    w.xero.push_payment(payment("pay_M", 10000, (("730", 10000),)), key="k-m")
    with pytest.raises(MatchError, match="reopens invoice 731"):
        w.xero.push_reversal(reversal("refund", "rf_M", "pay_M", (("731", 5000),)), key="k-rf-m")
    assert len(fake.live_payments()) == 1  # nothing deleted
