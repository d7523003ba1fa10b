"""Refunds (admin, and made at Stripe) and disputes: the allocations are reversed, balances reopen,
the books and the PSA are told through the outbox, and every replay changes nothing.

Refunds from the admin run against plain localstripe; `charge.refunded` and `charge.dispute.*`
events, which localstripe never sends, against the tests' extension (tests/stripe_ext.py)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from app.core import refunds
from app.core.refunds import RefundError
from app.jobs import drain_outbox, run_autopay
from tests.autopay_world import (
    deliver,
    enable,
    engine_services,
    journal,
    psa_lines,
    saved_card,
    stripe_client,
    wait_for_event,
)
from tests.factories import balance, make_client, make_invoice


def _paid_pair(s, double):
    """Contoso pays INV-1001 (30.00) and INV-1002 (70.00) in one autopay charge of 100.00."""
    client_id = make_client(s)
    enable(s, client_id, saved_card(s, double, client_id), grouping="per_client")
    a = make_invoice(s, "INV-1001", total_minor=3_000, due_on=date(2026, 3, 1))
    b = make_invoice(s, "INV-1002", total_minor=7_000, due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == 1
    pay = s.store.one("SELECT * FROM payments")
    return client_id, a, b, pay


def _drain(s):
    for _ in range(3):
        drain_outbox.run(s)


def _refunds_at_stripe(double, intent_id):
    return [
        (r.amount, r.status)
        for r in stripe_client(double)
        .v1.refunds.list(params={"payment_intent": intent_id})
        .auto_paging_iter()
    ]


def test_a_partial_refund_reopens_the_highest_invoice_and_tells_the_books_and_the_psa(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _, a, b, pay = _paid_pair(s, stripe_double)

    result = refunds.refund(s, pay["token"], 5_000, "admin:fin@msp.example", reason="service credit")
    _drain(s)

    assert result.status == "succeeded"
    assert _refunds_at_stripe(stripe_double, pay["processor_ref"]) == [(5_000, "succeeded")]
    assert (balance(s, a), balance(s, b)) == (0, 5_000)
    allocs = s.store.all("SELECT invoice_id, amount_minor, kind FROM allocations ORDER BY id")
    assert [(r["invoice_id"], r["amount_minor"], r["kind"]) for r in allocs] == [
        (a, 3_000, "payment"),
        (b, 7_000, "payment"),
        (b, -5_000, "refund"),
    ]
    entry = [r for r in journal(s) if r["entry_key"].startswith("v1-journal-reversal")]
    assert [(r["account"], r["invoice_number"], r["debit"], r["credit"]) for r in entry] == [
        ("Stripe clearing", "", "", "50.00"),
        ("Accounts receivable", "INV-1002", "50.00", ""),
    ]
    assert [(ln["invoice_remote_id"], ln["amount"]) for ln in psa_lines(s)][-1] == ("inv-INV-1002", "-50.00")
    audit = s.store.one("SELECT actor, detail_json FROM audit_log WHERE action = 'payment.refund'")
    assert audit["actor"] == "admin:fin@msp.example" and '"INV-1002": -5000' in audit["detail_json"]


def test_a_full_refund_reopens_both_invoices_and_nothing_more_can_be_refunded(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _, a, b, pay = _paid_pair(s, stripe_double)

    refunds.refund(s, pay["token"], 6_000, "admin:a")
    refunds.refund(s, pay["token"], 4_000, "admin:a")
    with pytest.raises(RefundError, match="At most 0 minor units"):
        refunds.refund(s, pay["token"], 1, "admin:a")
    with pytest.raises(RefundError, match="greater than zero"):
        refunds.refund(s, pay["token"], 0, "admin:a")

    assert (balance(s, a), balance(s, b)) == (3_000, 7_000)
    assert sorted(_refunds_at_stripe(stripe_double, pay["processor_ref"])) == [
        (4_000, "succeeded"),
        (6_000, "succeeded"),
    ]
    assert s.store.scalar("SELECT COUNT(*) FROM refunds") == 2


def test_a_refund_larger_than_the_payment_is_refused_before_stripe_is_called(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _, a, b, pay = _paid_pair(s, stripe_double)
    with pytest.raises(RefundError, match="At most 10000"):
        refunds.refund(s, pay["token"], 10_001, "admin:a")
    assert _refunds_at_stripe(stripe_double, pay["processor_ref"]) == []
    assert (balance(s, a), balance(s, b), s.store.scalar("SELECT COUNT(*) FROM refunds")) == (0, 0, 0)


def test_a_refund_whose_answer_was_lost_is_found_at_stripe_and_not_sent_again(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _, _, b, pay = _paid_pair(s, stripe_double)
    plan = refunds.start_refund(
        s.store, s.clock, payment_token=pay["token"], amount_minor=2_500, actor="admin:a"
    )
    assert refunds.claim_refund(s.store, s.clock, plan.refund_id)
    # Stripe made the refund, then the process died before recording it.
    s.gateway.create_refund(
        intent_id=plan.intent_id, amount_minor=2_500, metadata={"refund_token": plan.token}, key=plan.idem_key
    )
    lost = refunds.start_refund(
        s.store, s.clock, payment_token=pay["token"], amount_minor=1_000, actor="admin:a"
    )

    frozen_clock.advance(timedelta(minutes=5))
    assert refunds.resolve_refunds(s) == 2
    assert refunds.resolve_refunds(s) == 0

    assert sorted(_refunds_at_stripe(stripe_double, pay["processor_ref"])) == [
        (1_000, "succeeded"),
        (2_500, "succeeded"),
    ]
    assert balance(s, b) == 3_500
    assert [r["status"] for r in s.store.all("SELECT status FROM refunds ORDER BY id")] == ["succeeded"] * 2
    assert lost.refund_id != plan.refund_id


def test_a_refund_made_at_stripe_is_recorded_once_however_often_the_event_comes(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _, a, b, pay = _paid_pair(s, double)
    stripe_client(double).v1.refunds.create(params={"payment_intent": pay["processor_ref"], "amount": 7_500})
    event = wait_for_event(double, "charge.refunded", pay["charge_ref"])

    results = [deliver(s, event) for _ in range(3)]
    event2 = {**event, "id": event["id"] + "_retry"}  # a second event for the same refund
    deliver(s, event2)
    _drain(s)

    assert results[0].startswith("refunds synced (1 new") and results[1:] == ["duplicate", "duplicate"]
    assert (balance(s, a), balance(s, b)) == (500, 7_000)
    [row] = s.store.all("SELECT amount_minor, actor, status FROM refunds")
    assert (row["amount_minor"], row["actor"], row["status"]) == (7_500, "stripe", "succeeded")
    assert len([r for r in journal(s) if r["entry_key"].startswith("v1-journal-reversal")]) == 3


def test_a_dispute_reverses_once_pauses_autopay_and_a_won_dispute_reinstates(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _, a, b, pay = _paid_pair(s, double)
    next_month = make_invoice(s, "INV-1003", total_minor=4_000, due_on=date(2026, 3, 9))
    dp = stripe_ext.dispute(pay["charge_ref"], reason="fraudulent")
    created = wait_for_event(double, "charge.dispute.created", dp["id"])
    withdrawn = wait_for_event(double, "charge.dispute.funds_withdrawn", dp["id"])

    for event in (withdrawn, created, created):  # out of order, and twice
        deliver(s, event)
    report = run_autopay.run(s)
    _drain(s)

    assert (balance(s, a), balance(s, b)) == (3_000, 7_000)
    assert s.store.scalar("SELECT COUNT(*) FROM allocations WHERE kind = 'dispute'") == 2
    [exc] = s.store.all("SELECT summary FROM exceptions WHERE kind = 'dispute'")
    assert "fraudulent" in exc["summary"]
    assert report.started == 0 and balance(s, next_month) == 4_000  # a disputing client is not charged again
    assert [(ln["invoice_remote_id"], ln["amount"]) for ln in psa_lines(s)][-2:] == [
        ("inv-INV-1002", "-70.00"),
        ("inv-INV-1001", "-30.00"),
    ]

    closed = stripe_ext.decide_dispute(dp["id"], "won")
    for type_ in ("charge.dispute.funds_reinstated", "charge.dispute.closed"):
        deliver(s, wait_for_event(double, type_, dp["id"]))
    deliver(s, created)  # a stale copy of the opening event changes nothing now
    _drain(s)

    assert closed["status"] == "won" and (balance(s, a), balance(s, b)) == (0, 0)
    row = s.store.one("SELECT status, withdrawn_minor, is_reinstated FROM disputes")
    assert (row["status"], row["withdrawn_minor"], row["is_reinstated"]) == ("won", 10_000, 1)
    won = [r for r in journal(s) if "won" in r["memo"]]
    assert [(r["account"], r["debit"], r["credit"]) for r in won] == [
        ("Stripe clearing", "100.00", ""),
        ("Accounts receivable", "", "70.00"),
        ("Accounts receivable", "", "30.00"),
    ]
    assert run_autopay.run(s).succeeded == 1 and balance(s, next_month) == 0  # autopay resumes


def test_a_refund_of_a_disputed_payment_is_refused(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _, _, _, pay = _paid_pair(s, double)
    dp = stripe_ext.dispute(pay["charge_ref"], amount=2_000)
    deliver(s, wait_for_event(double, "charge.dispute.created", dp["id"]))
    with pytest.raises(RefundError, match="disputed"):
        refunds.refund(s, pay["token"], 1_000, "admin:a")
