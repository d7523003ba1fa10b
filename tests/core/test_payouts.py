"""Stripe payouts into the books: one deposit per payout, equal to the bank line to the cent, with
Stripe's fees on their own line, booked once however the payout is noticed (webhook, redelivery,
the reconcile job), and every item Cashloop cannot place named in one exception.

Runs against the tests' Stripe extension (tests/stripe_ext.py): localstripe has no fees and no
payout contents. Its fee model is Stripe's card pricing, 2.9% + 30 minor units per charge."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from app.core import payouts, refunds
from app.jobs import drain_outbox, reconcile_payouts, run_autopay
from sync.accounting.journal import ADJUSTMENT_ACCOUNT, BANK_ACCOUNT, CLEARING_ACCOUNT, FEE_ACCOUNT
from tests.autopay_world import (
    deliver,
    enable,
    engine_services,
    journal,
    saved_card,
    stripe_client,
    wait_for_event,
)
from tests.factories import make_client, make_invoice

# Five invoices paid by autopay, one charge each; Stripe's fee on each is 2.9% + 0.30, rounded.
AMOUNTS = [10_000, 25_000, 3_745, 100_000, 1_234]
FEES = [320, 755, 139, 2_930, 66]
REFUND = 2_500  # of the 250.00 payment
PAYOUT = sum(AMOUNTS) - sum(FEES) - REFUND  # 1,332.69


def _five_payments_and_a_refund(s, double):
    client_id = make_client(s)
    enable(s, client_id, saved_card(s, double, client_id))
    for i, amount in enumerate(AMOUNTS):
        make_invoice(s, f"INV-70{i}", total_minor=amount, due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == 5
    pays = s.store.all("SELECT * FROM payments ORDER BY amount_minor")
    refunded = next(p["token"] for p in pays if p["amount_minor"] == 25_000)
    refund = refunds.refund(s, refunded, REFUND, "admin:a")
    assert refund.status == "succeeded"
    _drain(s)  # the payments and the refund reach the journal first, as they do in life
    return pays


def _drain(s):
    for _ in range(3):
        drain_outbox.run(s)


def _deposits(s):
    return s.store.all("SELECT * FROM outbox WHERE kind = 'accounting_deposit'")


def _minor(text: str) -> int:
    return int(Decimal(text or "0") * 100)


def _entry(s, payout_id):
    key = payouts.deposit_key(payout_id)
    return [r for r in journal(s) if r["entry_key"] == key]


def test_a_payout_of_five_payments_and_a_refund_is_one_deposit_equal_to_the_bank_line(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    stripe_ext.double.reset()  # no money or payouts of earlier tests at the double
    s = engine_services(tmp_path, frozen_clock, double, mail)
    pays = _five_payments_and_a_refund(s, double)

    po = stripe_ext.payout("usd")
    result = deliver(s, wait_for_event(double, "payout.paid", po["id"]))
    _drain(s)

    assert po["amount"] == PAYOUT == 133_269
    assert result == "booked"
    assert len(_deposits(s)) == 1 and _deposits(s)[0]["status"] == "done"
    rows = _entry(s, po["id"])
    bank = [r for r in rows if r["account"] == BANK_ACCOUNT]
    fee = [r for r in rows if r["account"] == FEE_ACCOUNT]
    assert [(r["debit"], r["credit"]) for r in bank] == [("1332.69", "")]
    assert [(r["debit"], r["credit"]) for r in fee] == [("42.10", "")]
    assert sum(FEES) == 4_210
    through = [r for r in rows if r["account"] == CLEARING_ACCOUNT]
    clearing = sorted(_minor(r["credit"]) - _minor(r["debit"]) for r in through)
    assert clearing == sorted([*AMOUNTS, -REFUND])
    assert sum(_minor(r["debit"]) for r in rows) == sum(_minor(r["credit"]) for r in rows) == 139_979
    assert {r["currency"] for r in rows} == {"USD"}
    paid = s.store.all("SELECT amount_minor, fee_minor FROM payments")
    fees = {p["amount_minor"]: p["fee_minor"] for p in paid}
    assert fees == dict(zip(AMOUNTS, FEES, strict=True))
    items = s.store.all("SELECT kind, amount_minor, fee_minor, payment_id FROM payout_items ORDER BY id")
    assert sorted(i["kind"] for i in items) == ["payment"] * 5 + ["refund"]
    assert {i["payment_id"] for i in items} == {p["id"] for p in pays}
    row = s.store.one("SELECT * FROM payouts")
    assert (row["processor_ref"], row["amount_minor"], row["fee_minor"], row["status"]) == (
        po["id"], PAYOUT, 4_210, "paid")
    assert s.store.all("SELECT * FROM exceptions WHERE kind LIKE 'payout%'") == []


def test_a_replayed_event_and_a_reconcile_run_after_it_book_nothing_more(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    stripe_ext.double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _five_payments_and_a_refund(s, double)
    po = stripe_ext.payout("usd")
    event = wait_for_event(double, "payout.paid", po["id"])

    first = deliver(s, event)
    again = deliver(s, event)
    stripe_ext.redeliver(event["id"])
    report = reconcile_payouts.run(s)
    direct = payouts.sync_payout(s, po["id"])
    _drain(s)

    assert (first, again, direct) == ("booked", "duplicate", "already booked")
    assert report.booked == 0 and report.error is None
    assert len(_deposits(s)) == 1
    assert s.store.scalar("SELECT COUNT(*) FROM payout_items") == 6
    assert len([r for r in _entry(s, po["id"]) if r["account"] == BANK_ACCOUNT]) == 1


def test_a_missed_webhook_is_recovered_by_the_reconcile_job(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    stripe_ext.double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _five_payments_and_a_refund(s, double)
    po = stripe_ext.payout("usd")  # its payout.paid never reaches Cashloop

    report = reconcile_payouts.run(s)
    _drain(s)
    late = deliver(s, wait_for_event(double, "payout.paid", po["id"]))  # and then it does, late

    assert report.booked == 1 and report.error is None
    assert late == "already booked"
    assert len(_deposits(s)) == 1
    bank = [r for r in _entry(s, po["id"]) if r["account"] == BANK_ACCOUNT]
    assert [r["debit"] for r in bank] == ["1332.69"]
    assert reconcile_payouts.run(s).booked == 0


def test_a_charge_cashloop_did_not_make_is_named_in_one_exception_and_the_deposit_still_matches(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    stripe_ext.double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _five_payments_and_a_refund(s, double)
    c = stripe_client(double)
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    pm = c.v1.payment_methods.create(params={"type": "card", "card": card})
    pi = c.v1.payment_intents.create(params={"amount": 5_000, "currency": "usd", "payment_method": pm.id,
                                             "confirm": True})
    foreign = pi.latest_charge if isinstance(pi.latest_charge, str) else pi.latest_charge.id

    po = stripe_ext.payout("usd")
    deliver(s, wait_for_event(double, "payout.paid", po["id"]))
    deliver(s, wait_for_event(double, "payout.paid", po["id"]) | {"id": "evt_replayed_elsewhere"})
    _drain(s)

    assert po["amount"] == PAYOUT + 5_000 - 175  # its fee: 2.9% of 50.00 + 0.30
    found = s.store.all("SELECT kind, ref, summary FROM exceptions WHERE kind LIKE 'payout%'")
    assert len(found) == 1
    assert found[0]["kind"] == "payout_mismatch" and found[0]["ref"] == f"payout:{po['id']}"
    assert f"charge {foreign} is not a Cashloop payment" in found[0]["summary"]
    assert "booked as adjustments" in found[0]["summary"]
    rows = _entry(s, po["id"])
    assert [r["debit"] for r in rows if r["account"] == BANK_ACCOUNT] == ["1380.94"]
    assert [r["debit"] for r in rows if r["account"] == FEE_ACCOUNT] == ["43.85"]
    assert [(r["credit"], r["processor_reference"]) for r in rows if r["account"] == ADJUSTMENT_ACCOUNT] == [
        ("50.00", foreign)
    ]
    assert sum(_minor(r["debit"]) for r in rows) == sum(_minor(r["credit"]) for r in rows)
    item = s.store.one("SELECT kind, payment_id FROM payout_items WHERE source_ref = ?", (foreign,))
    assert (item["kind"], item["payment_id"]) == ("adjustment", None)


def test_a_failed_payout_raises_an_exception_and_books_no_deposit(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    stripe_ext.double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _five_payments_and_a_refund(s, double)

    po = stripe_ext.payout("usd", status="failed", failure_code="account_closed")
    result = deliver(s, wait_for_event(double, "payout.failed", po["id"]))
    deliver(s, wait_for_event(double, "payout.failed", po["id"]) | {"id": "evt_failed_again"})
    reconcile_payouts.run(s)

    assert result == "failed"
    assert _deposits(s) == []
    found = s.store.all("SELECT kind, summary FROM exceptions WHERE kind LIKE 'payout%'")
    assert [f["kind"] for f in found] == ["payout_failed"]
    assert po["id"] in found[0]["summary"] and "account_closed" in found[0]["summary"]
    assert "1332.69 USD" in found[0]["summary"] and "no deposit was booked" in found[0]["summary"]
    assert s.store.one("SELECT status FROM payouts")["status"] == "failed"
    # Stripe keeps the funds for the next payout, which is booked as usual.
    retry = stripe_ext.payout("usd")
    assert retry["amount"] == PAYOUT
    assert deliver(s, wait_for_event(double, "payout.paid", retry["id"])) == "booked"
    assert len(_deposits(s)) == 1


def test_a_dispute_in_a_payout_is_its_own_line_with_its_fee_and_the_deposit_still_matches(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    pays = _five_payments_and_a_refund(s, double)
    disputed = next(p for p in pays if p["amount_minor"] == 3_745)
    dispute = stripe_ext.dispute(disputed["charge_ref"])
    deliver(s, wait_for_event(double, "charge.dispute.funds_withdrawn", dispute["id"]))
    _drain(s)

    po = stripe_ext.payout("usd")
    deliver(s, wait_for_event(double, "payout.paid", po["id"]))
    _drain(s)

    assert po["amount"] == PAYOUT - 3_745 - 1_500  # the amount and Stripe's 15.00 dispute fee
    payload = s.store.one("SELECT payload_json FROM outbox WHERE kind = 'accounting_deposit'")["payload_json"]
    assert '"kind": "dispute"' in payload
    item = s.store.one(
        "SELECT kind, amount_minor, fee_minor, dispute_id FROM payout_items WHERE source_ref = ?",
        (dispute["id"],),
    )
    assert (item["kind"], item["amount_minor"], item["fee_minor"]) == ("dispute", -3_745, 1_500)
    assert item["dispute_id"] == s.store.scalar("SELECT id FROM disputes")
    rows = _entry(s, po["id"])
    assert [r["debit"] for r in rows if r["account"] == BANK_ACCOUNT] == ["1280.24"]
    assert [r["debit"] for r in rows if r["account"] == FEE_ACCOUNT] == ["57.10"]
    assert [r["debit"] for r in rows if r["processor_reference"] == dispute["id"]] == ["37.45"]
    assert sum(_minor(r["debit"]) for r in rows) == sum(_minor(r["credit"]) for r in rows)
    assert s.store.all("SELECT * FROM exceptions WHERE kind LIKE 'payout%'") == []


def test_a_refund_and_a_dispute_whose_events_were_missed_are_recorded_before_the_payout_is_booked(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    pays = _five_payments_and_a_refund(s, double)
    at_stripe = next(p for p in pays if p["amount_minor"] == 100_000)
    disputed = next(p for p in pays if p["amount_minor"] == 1_234)
    made_in_dashboard = stripe_client(double).v1.refunds.create(
        params={"charge": at_stripe["charge_ref"], "amount": 20_000}
    )
    dispute = stripe_ext.dispute(disputed["charge_ref"])  # neither one's webhook reaches Cashloop

    po = stripe_ext.payout("usd")
    assert reconcile_payouts.run(s).booked == 1
    _drain(s)

    assert po["amount"] == PAYOUT - 20_000 - 1_234 - 1_500
    refund = s.store.one("SELECT payment_id, amount_minor, status FROM refunds WHERE processor_ref = ?",
                         (made_in_dashboard.id,))
    assert (refund["payment_id"], refund["amount_minor"]) == (at_stripe["id"], 20_000)
    assert refund["status"] == "succeeded"
    kinds = {i["source_ref"]: i["kind"] for i in s.store.all("SELECT source_ref, kind FROM payout_items")}
    assert (kinds[made_in_dashboard.id], kinds[dispute["id"]]) == ("refund", "dispute")
    assert s.store.all("SELECT * FROM exceptions WHERE kind LIKE 'payout%'") == []
    rows = _entry(s, po["id"])
    assert [r["debit"] for r in rows if r["account"] == BANK_ACCOUNT] == ["1105.35"]
    assert sum(_minor(r["debit"]) for r in rows) == sum(_minor(r["credit"]) for r in rows)


def test_a_yen_payout_reaches_an_iif_journal_to_the_yen(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    double.reset()
    iif = '\n[accounting.journal]\nformat = "iif"\n'
    s = engine_services(tmp_path, frozen_clock, double, mail, extra=iif)
    client_id = make_client(s)
    enable(s, client_id, saved_card(s, double, client_id))
    make_invoice(s, "INV-JP1", total_minor=12_000, currency="JPY", due_on=date(2026, 3, 1))
    make_invoice(s, "INV-JP2", total_minor=3_333, currency="JPY", due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == 2

    po = stripe_ext.payout("jpy")
    deliver(s, wait_for_event(double, "payout.paid", po["id"]))
    _drain(s)

    fees = 378 + 127  # 2.9% + 30 yen each: 348 + 30 and 96.657 -> 97 + 30
    assert po["amount"] == 12_000 + 3_333 - fees
    text = s.config.journal_path.read_text(encoding="utf-8")
    body = "\n".join(text.splitlines()[3:])  # after the three header rows
    entries = [[ln.split("\t") for ln in t.strip().splitlines()] for t in body.split("ENDTRNS")[:-1]]
    key = f"[key {payouts.deposit_key(po['id'])}]"
    deposit = next(e for e in entries if e[0][8].endswith(key))
    assert s.config.journal_path.name == "journal.iif"
    assert [(f[4], f[6]) for f in deposit] == [
        (BANK_ACCOUNT, str(12_000 + 3_333 - fees)),
        (FEE_ACCOUNT, "505"),
        (CLEARING_ACCOUNT, "-12000"),
        (CLEARING_ACCOUNT, "-3333"),
    ]
    assert sum(int(f[6]) for f in deposit) == 0
