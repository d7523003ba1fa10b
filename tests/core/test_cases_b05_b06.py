"""Cases B05 (ACH processing is not paid) and B06 (stale and duplicate webhooks), each over its kind:
every in-flight state and every event type we handle, in any order, any number of times.

ACH and the charge/dispute events come from the tests' extension of localstripe
(tests/stripe_ext.py); everything else is the real code: the webhook handler (also over HTTP,
concurrently), the autopay and reminder jobs, the outbox, the SMTP sink, the journal, the PSA file.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from app import charging, checkout
from app.core.payments import PaymentRequestError, reminder_hold
from app.jobs import drain_outbox, run_autopay, send_reminders
from app.web import create_app
from tests.autopay_world import (
    deliver,
    enable,
    engine_services,
    journal,
    mails,
    psa_lines,
    saved_bank,
    saved_card,
    signed,
    succeeded_charges,
    wait_for_event,
)
from tests.conftest import LiveServer, free_port
from tests.core.test_payments_cases import _pay, _token
from tests.factories import balance, make_client, make_invoice

REMINDERS = '\n[reminders]\nsteps = [0, 3, 7]\nquiet_weekends = false\nsend_time = "09:00"\n'


def _at(day: date, hour: int = 10) -> datetime:
    """`hour` o'clock in Chicago (CDT in May) on `day`."""
    return datetime(day.year, day.month, day.day, hour + 5, 0, tzinfo=UTC)


def _jobs(s) -> None:
    send_reminders.run(s)
    run_autopay.run(s)
    for _ in range(3):
        drain_outbox.run(s)


def _reminders_by_day(s, number: str) -> dict[str, int]:
    rows = s.store.all(
        "SELECT at FROM email_log WHERE kind = 'reminder' AND status = 'sent' AND subject LIKE ?",
        (f"%{number}%",),
    )
    out: dict[str, int] = {}
    for r in rows:
        day = (
            datetime.fromisoformat(r["at"].replace("Z", "+00:00")).astimezone(s.config.tz).date().isoformat()
        )
        out[day] = out.get(day, 0) + 1
    return out


def _fabrikam(s, double, number: str = "INV-3001"):
    client_id = make_client(s, "fab", "Fabrikam Builders", billing_email="ap@fabrikam.example")
    method = saved_bank(s, double, client_id)
    pm = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (method,))
    inv = make_invoice(s, number, client_remote_id="fab", total_minor=240_000, due_on=date(2024, 5, 10))
    return client_id, method, pm, inv


def _b05(branch: str, tmp_path, stripe_ext, mail):
    """Run case B05 from 2024-05-08 to 2024-05-25; returns the services."""
    from app.core.clock import FrozenClock

    double = stripe_ext.double
    clock = FrozenClock(_at(date(2024, 5, 8)))
    s = engine_services(tmp_path, clock, double, mail, extra=REMINDERS)
    client_id, _, pm, inv = _fabrikam(s, double)

    token, status = charging.pay_with_saved_method(
        s,
        client_id=client_id,
        items=[(inv, 240_000)],
        payment_method_ref=pm,
        initiated_by="login:ap@fabrikam.example",
    )
    pay = s.store.one("SELECT * FROM payments WHERE token = ?", (token,))
    deliver(s, wait_for_event(double, "payment_intent.processing", pay["processor_ref"]))
    assert status == "processing"

    outcome_day = date(2024, 5, 12) if branch == "S" else date(2024, 5, 13)
    day = date(2024, 5, 8)
    while day <= date(2024, 5, 25):
        clock.set(_at(day))
        if day == outcome_day:
            if branch == "F":
                _jobs(s)  # the day's jobs ran at 10:00; the bank's return arrives in the afternoon
                clock.set(_at(day, 14))
            stripe_ext.settle(
                pay["processor_ref"],
                "succeeded" if branch == "S" else "failed",
                failure_code=None if branch == "S" else "insufficient_funds",
            )
            kind = "payment_intent.succeeded" if branch == "S" else "payment_intent.payment_failed"
            deliver(s, wait_for_event(double, kind, pay["processor_ref"]))
            if branch == "F":
                for _ in range(3):
                    drain_outbox.run(s)
                day += timedelta(days=1)
                continue
        if day < outcome_day:
            # While processing: not paid, not chased, not charged again, nothing sent anywhere.
            assert balance(s, inv) == 240_000
            assert reminder_hold(s.store.db, inv, today=day) == "payment processing"
            with pytest.raises(PaymentRequestError, match="already being processed"):
                checkout.begin_checkout(
                    s,
                    client_id=client_id,
                    login_email="ap@fabrikam.example",
                    items=[(_token(s, inv), 240_000)],
                )
        _jobs(s)
        if day < outcome_day:
            assert mails(mail, "Receipt") == [] and journal(s) == [] and psa_lines(s) == []
            assert _reminders_by_day(s, "INV-3001") == {}
        day += timedelta(days=1)
    return s, inv


@pytest.mark.parametrize("branch", ["S", "F"])
def test_b05_an_ach_payment_is_processing_not_paid_until_the_bank_answers(branch, tmp_path, stripe_ext, mail):
    s, inv = _b05(branch, tmp_path, stripe_ext, mail)
    assert s.store.scalar("SELECT COUNT(*) FROM payments") == 1  # no autopay or card attempt was made
    if branch == "S":
        assert s.store.scalar("SELECT status FROM payments") == "succeeded" and balance(s, inv) == 0
        [receipt] = mails(mail, "Receipt")
        assert "$2,400.00" in receipt["Subject"] and "Sun, 12 May 2024" in receipt["Date"]
        assert [(r["invoice_number"], r["credit"]) for r in journal(s) if r["invoice_number"]] == [
            ("INV-3001", "2400.00")
        ]
        assert [ln["amount"] for ln in psa_lines(s)] == ["2400.00"]
        assert _reminders_by_day(s, "INV-3001") == {}
    else:
        assert s.store.scalar("SELECT status FROM payments") == "failed" and balance(s, inv) == 240_000
        assert len(mails(mail, "Your bank payment of $2,400.00 to Northwind IT failed")) == 1
        assert mails(mail, "Receipt") == [] and journal(s) == [] and psa_lines(s) == []
        assert reminder_hold(s.store.db, inv, today=date(2024, 5, 25)) is None
        assert _reminders_by_day(s, "INV-3001").get("2024-05-17") == 1  # the cadence resumes


def test_b05_a_reminder_step_held_while_processing_is_not_sent_late(tmp_path, stripe_ext, mail):
    """B05 branch F: after the bank's return on 05-13, only the +7 reminder (05-17) goes.

    NOTE: this is the reminders job's side of B05 (app/jobs/send_reminders.py): a step it held
    because a payment was processing must not be sent on a later day when the hold lifts.
    """
    s, _ = _b05("F", tmp_path, stripe_ext, mail)
    assert _reminders_by_day(s, "INV-3001") == {"2024-05-17": 1}


def test_b05_autopay_by_bank_account_waits_for_the_bank_and_never_charges_twice(tmp_path, stripe_ext, mail):
    from app.core.clock import FrozenClock

    double = stripe_ext.double
    clock = FrozenClock(_at(date(2024, 5, 10)))
    s = engine_services(tmp_path, clock, double, mail, extra="\n[autopay]\nretry_days = [2]\n")
    client_id, method, _, inv = _fabrikam(s, double, "INV-3101")
    enable(s, client_id, method)

    first = run_autopay.run(s)
    for _ in range(3):
        clock.advance(timedelta(days=1))
        assert run_autopay.run(s).started == 0
    pay = s.store.one("SELECT * FROM payments")
    assert first.processing == 1 and pay["status"] == "processing" and pay["method"] == "ach"
    assert s.store.scalar("SELECT status FROM autopay_attempts") == "processing"

    stripe_ext.settle(pay["processor_ref"], "failed", failure_code="insufficient_funds")
    deliver(s, wait_for_event(double, "payment_intent.payment_failed", pay["processor_ref"]))
    for _ in range(3):
        drain_outbox.run(s)
    [notice] = mails(mail, "did not go through")
    assert "•••• 6789 (ACH)" in notice.get_body(("plain",)).get_content()
    assert mails(mail, "Your bank payment") == [] and balance(s, inv) == 240_000

    clock.advance(timedelta(days=1))  # the retry day (2 days after the first attempt)
    retry = run_autopay.run(s)
    second = s.store.one("SELECT * FROM payments ORDER BY id DESC LIMIT 1")
    stripe_ext.settle(second["processor_ref"], "succeeded")
    deliver(s, wait_for_event(double, "payment_intent.succeeded", second["processor_ref"]))
    for _ in range(3):
        drain_outbox.run(s)
    assert retry.processing == 1 and balance(s, inv) == 0
    assert succeeded_charges(double, "INV-3101") == 1 and len(mails(mail, "Receipt")) == 1


@pytest.mark.parametrize("order", ["main", "variant"])
def test_b06_stale_and_duplicate_webhooks_leave_one_payment_one_receipt(order, tmp_path, stripe_ext, mail):
    from app.core.clock import FrozenClock

    double = stripe_ext.double
    clock = FrozenClock(_at(date(2026, 3, 10)))
    s = engine_services(tmp_path, clock, double, mail)
    client_id = make_client(s, "tail", "Tailspin Logistics", billing_email="ap@contoso.example")
    method = saved_card(s, double, client_id)
    enable(s, client_id, method)
    stripe_ext.decline_next(s.store.scalar("SELECT processor_ref FROM payment_methods"), 1)
    inv = make_invoice(s, "INV-4001", client_remote_id="tail", total_minor=50_000, due_on=date(2026, 3, 10))
    server = LiveServer(create_app(s), free_port()).start()

    def post(event: dict) -> int:
        import json

        body = json.dumps(event).encode()
        return requests.post(
            f"{server.url}/stripe/webhook",
            data=body,
            timeout=20,
            headers={
                "Stripe-Signature": signed(body, str(s.config.stripe.webhook_secret)),
                "Content-Type": "application/json",
            },
        ).status_code

    try:
        assert run_autopay.run(s).failed == 1  # 1. the autopay attempt is declined
        autopay_pi = s.store.scalar("SELECT processor_ref FROM payments")
        evt_1 = wait_for_event(double, "payment_intent.payment_failed", autopay_pi)
        codes = []
        if order == "main":
            codes.append(post(evt_1))
            drain_outbox.run(s)
        result = _pay(s, double, client_id, [(_token(s, inv), 50_000)])  # 2. the contact pays by card
        assert result.status == "succeeded"
        manual_pi = s.store.scalar("SELECT processor_ref FROM payments WHERE initiated_by LIKE 'login:%'")
        evt_2 = wait_for_event(double, "payment_intent.succeeded", manual_pi)
        charge = wait_for_event(
            double,
            "charge.succeeded",
            s.store.scalar("SELECT charge_ref FROM payments WHERE processor_ref = ?", (manual_pi,)),
        )
        codes.append(post(evt_2))
        clock.advance(timedelta(hours=1))
        codes.append(post(evt_1))  # 3. re-delivered an hour later (the variant's first delivery)
        threads = [
            threading.Thread(target=lambda e=e: codes.append(post(e))) for e in (evt_2, evt_2, evt_2, charge)
        ]
        for t in threads:  # 4. evt_2 three more times, at once, and charge.succeeded
            t.start()
        for t in threads:
            t.join()
        for day in range(11, 21):  # no retry follows, on any later day
            clock.set(_at(date(2026, 3, day)))
            assert run_autopay.run(s).started == 0
            for _ in range(2):
                drain_outbox.run(s)
    finally:
        server.stop()

    assert all(200 <= c < 300 for c in codes) and len(codes) == (7 if order == "main" else 6)
    assert balance(s, inv) == 0
    [paid] = s.store.all("SELECT amount_minor, status FROM payments WHERE status = 'succeeded'")
    assert paid["amount_minor"] == 50_000
    assert len(mails(mail, "Receipt")) == 1
    assert len(mails(mail, "did not go through")) == (1 if order == "main" else 0)
    assert s.store.scalar("SELECT COUNT(*) FROM autopay_attempts WHERE next_retry_at IS NOT NULL") == 0
    assert s.store.scalar("SELECT COUNT(*) FROM autopay_attempts") == 1
    assert [r["credit"] for r in journal(s) if r["invoice_number"] == "INV-4001"] == ["500.00"]
    assert [ln["amount"] for ln in psa_lines(s)] == ["500.00"]


def test_b06_every_event_kind_duplicated_and_reordered_ends_in_the_right_state(
    tmp_path, frozen_clock, stripe_ext, mail
):
    """Succeeded before processing, dispute events twice and out of order, refund events twice."""
    double = stripe_ext.double
    s = engine_services(tmp_path, frozen_clock, double, mail)
    client_id, _, pm, inv = _fabrikam(s, double, "INV-3201")
    other = make_invoice(s, "INV-3002", client_remote_id="fab", total_minor=10_000, due_on=date(2026, 3, 31))
    token, _ = charging.pay_with_saved_method(
        s,
        client_id=client_id,
        items=[(inv, 240_000)],
        payment_method_ref=pm,
        initiated_by="login:ap@fabrikam.example",
    )
    ach = s.store.one("SELECT * FROM payments WHERE token = ?", (token,))
    processing = wait_for_event(double, "payment_intent.processing", ach["processor_ref"])
    stripe_ext.settle(ach["processor_ref"], "succeeded")
    succeeded = wait_for_event(double, "payment_intent.succeeded", ach["processor_ref"])
    for event in (succeeded, processing, succeeded, processing):
        deliver(s, event)
    assert s.store.scalar("SELECT status FROM payments WHERE token = ?", (token,)) == "succeeded"

    # A card payment of the other invoice, disputed and lost; and refund events for the ACH one.
    card_token, _ = charging.pay_with_saved_method(
        s,
        client_id=client_id,
        items=[(other, 10_000)],
        initiated_by="login:ap@fabrikam.example",
        payment_method_ref=s.store.scalar(
            "SELECT processor_ref FROM payment_methods WHERE id = ?", (saved_card(s, double, client_id),)
        ),
    )
    card = s.store.one("SELECT * FROM payments WHERE token = ?", (card_token,))
    dp = stripe_ext.dispute(card["charge_ref"])
    created = wait_for_event(double, "charge.dispute.created", dp["id"])
    withdrawn = wait_for_event(double, "charge.dispute.funds_withdrawn", dp["id"])
    stripe_ext.decide_dispute(dp["id"], "lost")
    closed = wait_for_event(double, "charge.dispute.closed", dp["id"])
    from app.core import refunds

    refunds.refund(s, token, 40_000, "admin:a")
    refunded = wait_for_event(double, "charge.refunded", ach["charge_ref"])
    for event in (closed, created, withdrawn, closed, created, refunded, refunded):
        deliver(s, event)
    for _ in range(3):
        drain_outbox.run(s)

    assert (balance(s, inv), balance(s, other)) == (40_000, 10_000)
    assert s.store.one("SELECT status, withdrawn_minor FROM disputes")[:] == ("lost", 10_000)
    assert s.store.scalar("SELECT COUNT(*) FROM allocations WHERE kind IN ('dispute', 'refund')") == 2
    assert s.store.scalar("SELECT COUNT(*) FROM refunds") == 1
    assert len(mails(mail, "Receipt")) == 2
    assert s.store.scalar("SELECT COUNT(*) FROM stripe_events WHERE processed_at IS NOT NULL") == 6
