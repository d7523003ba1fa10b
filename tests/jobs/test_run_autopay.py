"""The autopay job against localstripe (and, where marked, the tests' extension of it), the SMTP
sink, the journal and the files PSA: what is charged, once, and who is told what."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from app.core import autopay
from app.core.payments import reminder_hold
from app.jobs import drain_outbox, run_autopay
from tests.autopay_world import (
    enable,
    engine_services,
    intents,
    journal,
    mails,
    psa_lines,
    saved_card,
    succeeded_charges,
)
from tests.factories import balance, make_client, make_invoice

DECLINED_AT_CHARGE = "4000000000000341"
NEEDS_3DS = "4000002500003155"


def _drain(services) -> None:
    for _ in range(3):
        drain_outbox.run(services)


def _acme(services, double, *, card: str = "4242424242424242", **rule):
    client_id = make_client(services, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    method = saved_card(services, double, client_id, card)
    enable(services, client_id, method, **rule)
    return client_id, method


def test_autopay_charges_a_due_invoice_once_and_receipts_it(tmp_path, frozen_clock, stripe_double, mail):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    client_id, _ = _acme(s, stripe_double)
    inv = make_invoice(s, "INV-5001", client_remote_id="acme", total_minor=125_000, due_on=date(2026, 3, 10))
    later = make_invoice(s, "INV-5002", client_remote_id="acme", total_minor=9_900, due_on=date(2026, 3, 20))

    first = run_autopay.run(s)
    second = run_autopay.run(s)  # the same day again: nothing new is due
    _drain(s)

    assert (first.started, first.succeeded, second.started) == (1, 1, 0)
    [pi] = intents(stripe_double, invoices="INV-5001")
    assert (pi["amount"], pi["currency"], pi["status"]) == (125_000, "usd", "succeeded")
    assert intents(stripe_double, invoices="INV-5002") == []
    assert (balance(s, inv), balance(s, later)) == (0, 9_900)
    [receipt] = mails(mail, "Receipt")
    assert "$1,250.00" in receipt["Subject"] and receipt["To"] == "ap@acme.example"
    assert [(r["invoice_number"], r["debit"], r["credit"]) for r in journal(s)] == [
        ("", "1250.00", ""),
        ("INV-5001", "", "1250.00"),
    ]
    assert [(ln["invoice_remote_id"], ln["amount"]) for ln in psa_lines(s)] == [("inv-INV-5001", "1250.00")]
    attempt = s.store.one("SELECT * FROM autopay_attempts")
    assert (attempt["status"], attempt["attempt_no"], attempt["client_id"]) == ("succeeded", 1, client_id)
    assert s.store.scalar("SELECT initiated_by FROM payments") == "autopay"


def test_per_client_grouping_charges_all_due_invoices_in_one_payment(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _acme(s, stripe_double, grouping="per_client")
    a = make_invoice(s, "INV-5101", client_remote_id="acme", total_minor=30_000, due_on=date(2026, 3, 1))
    b = make_invoice(s, "INV-5102", client_remote_id="acme", total_minor=12_345, due_on=date(2026, 3, 9))

    report = run_autopay.run(s)
    _drain(s)

    assert report.started == 1
    [pi] = intents(stripe_double, invoices="INV-5101,INV-5102")
    assert (pi["amount"], pi["status"]) == (42_345, "succeeded")
    assert (balance(s, a), balance(s, b)) == (0, 0)
    [receipt] = mails(mail, "Receipt")
    body = receipt.get_body(("plain",)).get_content()
    assert "INV-5101: $300.00 applied" in body and "INV-5102: $123.45 applied" in body


def test_rules_decide_what_is_charged_kinds_maximum_grace_and_issue_date(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _acme(s, stripe_double, kinds=["agreement", "product"], max_minor=50_000, grace_days=2)
    due_today = make_invoice(
        s, "INV-5201", client_remote_id="acme", total_minor=10_000, due_on=date(2026, 3, 10)
    )
    in_grace = make_invoice(
        s, "INV-5202", client_remote_id="acme", total_minor=10_000, due_on=date(2026, 3, 9)
    )
    old = make_invoice(s, "INV-5203", client_remote_id="acme", total_minor=10_000, due_on=date(2026, 3, 8))
    project = make_invoice(
        s, "INV-5204", client_remote_id="acme", total_minor=10_000, kind="project", due_on=date(2026, 3, 1)
    )
    too_big = make_invoice(
        s, "INV-5205", client_remote_id="acme", total_minor=50_001, due_on=date(2026, 3, 1)
    )

    plan = autopay.plan_new(s.store.db, today=date(2026, 3, 10))
    run_autopay.run(s)

    assert [c.items[0].number for c in plan.charges] == ["INV-5203"]
    assert {k.number: k.reason for k in plan.skipped} == {"INV-5205": "above the autopay maximum"}
    assert [balance(s, i) for i in (due_today, in_grace, old, project, too_big)] == [
        10_000,
        10_000,
        0,
        10_000,
        50_001,
    ]
    assert len(intents(stripe_double, invoices="INV-5203")) == 1

    s2 = engine_services(tmp_path / "issue", frozen_clock, stripe_double, None)
    c2 = make_client(s2, "initech", "Initech")
    enable(s2, c2, saved_card(s2, stripe_double, c2), schedule="days_after_issue", schedule_days=9)
    make_invoice(s2, "INV-5301", client_remote_id="initech", due_on=date(2026, 4, 30))  # issued 2026-03-01
    assert [c.charge_on for c in autopay.plan_new(s2.store.db, today=None).charges] == [date(2026, 3, 10)]


def test_dry_run_lists_exactly_what_would_be_charged_and_charges_nothing(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _acme(s, stripe_double)
    make_invoice(s, "INV-5401", client_remote_id="acme", total_minor=20_000, due_on=date(2026, 3, 5))
    make_invoice(s, "INV-5402", client_remote_id="acme", total_minor=7_500, due_on=date(2026, 3, 10))
    make_invoice(s, "INV-5403", client_remote_id="acme", total_minor=1_000, due_on=date(2026, 3, 11))
    before = {
        t: s.store.scalar(f"SELECT COUNT(*) FROM {t}")
        for t in ("payments", "autopay_attempts", "outbox", "audit_log")
    }
    pis_before = len(intents(stripe_double))

    report = run_autopay.run(s, dry_run=True)

    lines = [run_autopay.describe(c) for c in report.planned]
    assert lines == [
        "Acme Dental LLC: charge $200.00 (INV-5401 $200.00) to Visa •••• 4242",
        "Acme Dental LLC: charge $75.00 (INV-5402 $75.00) to Visa •••• 4242",
    ]
    assert {t: s.store.scalar(f"SELECT COUNT(*) FROM {t}") for t in before} == before
    assert len(intents(stripe_double)) == pis_before
    real = run_autopay.run(s)
    assert sorted(c.invoice_set for c in real.planned) == sorted(c.invoice_set for c in report.planned)
    assert real.succeeded == 2


def test_decline_then_success_on_retry_day_3_is_two_attempts_one_charge(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    s = engine_services(
        tmp_path,
        frozen_clock,
        double,
        mail,
        extra="\n[autopay]\nretry_days = [3, 7]\nnotify_days_before = 2\n",
    )
    _, method = _acme(s, double)
    pm = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (method,))
    inv = make_invoice(s, "INV-5501", client_remote_id="acme", total_minor=50_000, due_on=date(2026, 3, 12))
    stripe_ext.decline_next(pm, count=1)  # the money arrives after the first try

    days = {}
    for day in range(10, 20):  # 10:00 Chicago each day from March 10
        frozen_clock.set(datetime(2026, 3, day, 15, 0, tzinfo=UTC))
        days[day] = run_autopay.run(s)
        _drain(s)

    assert [d for d, r in days.items() if r.started] == [12, 15]
    assert (days[12].failed, days[15].succeeded) == (1, 1)
    pis = intents(double, invoices="INV-5501")
    assert sorted(pi["status"] for pi in pis) == ["requires_payment_method", "succeeded"]
    assert succeeded_charges(double, "INV-5501") == 1 and balance(s, inv) == 0
    attempts = s.store.all(
        "SELECT attempt_no, retry_no, status, next_retry_at FROM autopay_attempts ORDER BY id"
    )
    assert [(a["attempt_no"], a["retry_no"], a["status"], a["next_retry_at"]) for a in attempts] == [
        (1, 0, "failed", None),
        (2, 1, "succeeded", None),
    ]
    upcoming = mails(mail, "Automatic payment of $500.00 on")
    failed = mails(mail, "did not go through")
    assert len(upcoming) == 1 and "March 12, 2026" in upcoming[0]["Subject"]
    assert len(failed) == 1 and "March 15, 2026" in failed[0]["Subject"]
    assert "insufficient funds" in failed[0].get_body(("plain",)).get_content()
    assert len(mails(mail, "Receipt")) == 1 and mails(mail, "Action needed") == []
    assert s.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'autopay_exhausted'") == 0


def test_after_the_last_retry_the_invoice_goes_back_to_reminders_and_the_exceptions_queue(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(
        tmp_path, frozen_clock, stripe_double, mail, extra="\n[autopay]\nretry_days = [1, 3]\n"
    )
    _acme(s, stripe_double, card=DECLINED_AT_CHARGE)
    inv = make_invoice(s, "INV-5601", client_remote_id="acme", total_minor=20_000, due_on=date(2026, 3, 10))
    assert reminder_hold(s.store.db, inv, today=date(2026, 3, 10)) == "autopay scheduled"

    started = []
    for day in range(10, 18):
        frozen_clock.set(datetime(2026, 3, day, 15, 0, tzinfo=UTC))
        if run_autopay.run(s).started:
            started.append(day)
        _drain(s)

    assert started == [10, 11, 13]
    assert balance(s, inv) == 20_000 and succeeded_charges(stripe_double, "INV-5601") == 0
    assert len(mails(mail, "did not go through")) == 2
    [final] = mails(mail, "Action needed: automatic payment of $200.00 failed")
    assert "INV-5601" in final.get_body(("plain",)).get_content()
    [exc] = s.store.all("SELECT kind, ref, summary FROM exceptions WHERE kind = 'autopay_exhausted'")
    assert exc["ref"].startswith(f"invoice:{inv}:") and "after 3 attempts" in exc["summary"]
    assert reminder_hold(s.store.db, inv, today=date(2026, 3, 17)) is None
    assert not autopay.is_covered(s.store.db, inv, today=date(2026, 3, 17))


def test_a_card_that_needs_3d_secure_is_not_charged_and_the_client_gets_one_link(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    _acme(s, stripe_double, card=NEEDS_3DS)
    inv = make_invoice(s, "INV-5701", client_remote_id="acme", total_minor=31_000, due_on=date(2026, 3, 10))

    report = run_autopay.run(s)
    run_autopay.run(s)
    _drain(s)

    assert report.requires_action == 1
    [pi] = intents(stripe_double, invoices="INV-5701")
    assert pi["status"] == "requires_action" and succeeded_charges(stripe_double, "INV-5701") == 0
    assert balance(s, inv) == 31_000
    [notice] = mails(mail, "Please confirm your payment of $310.00")
    token = s.store.scalar("SELECT token FROM payments")
    assert f"/payments/{token}/authenticate" in notice.get_body(("plain",)).get_content()
    assert reminder_hold(s.store.db, inv, today=date(2026, 3, 10)) == "payment processing"


def test_an_off_session_authentication_error_is_handled_like_stripe_sends_it(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    stripe_ext.configure(offsession_auth_error=True)
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _acme(s, double, card=NEEDS_3DS)
    make_invoice(s, "INV-5801", client_remote_id="acme", total_minor=12_000, due_on=date(2026, 3, 10))

    report = run_autopay.run(s)
    frozen_clock.advance(timedelta(minutes=10))
    run_autopay.resolve_unfinished(s)  # re-reading it from Stripe keeps it waiting for the customer
    _drain(s)

    assert report.requires_action == 1
    [pi] = intents(double, invoices="INV-5801")
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["code"] == "authentication_required"
    assert s.store.scalar("SELECT status FROM payments") == "requires_action"
    assert s.store.scalar("SELECT status FROM autopay_attempts") == "requires_action"
    assert len(mails(mail, "Please confirm your payment of $120.00")) == 1
    assert mails(mail, "did not go through") == []


def test_expiring_card_is_warned_about_once_before_the_run(tmp_path, frozen_clock, stripe_double, mail):
    s = engine_services(
        tmp_path, frozen_clock, stripe_double, mail, extra="\n[autopay]\nexpiry_warning_days = 30\n"
    )
    client_id = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    method = saved_card(s, stripe_double, client_id, exp_month=3, exp_year=2026)
    enable(s, client_id, method)

    run_autopay.run(s)
    frozen_clock.advance(timedelta(days=1))
    run_autopay.run(s)
    _drain(s)

    [warning] = mails(mail, "Your Visa •••• 4242 expires on March 31, 2026")
    assert warning["To"] == "ap@acme.example"


def test_an_invoice_paid_elsewhere_before_the_retry_is_not_retried(
    tmp_path, frozen_clock, stripe_double, mail
):
    from tests.core.test_payments_cases import _pay, _token

    s = engine_services(tmp_path, frozen_clock, stripe_double, mail)
    client_id, _ = _acme(s, stripe_double, card=DECLINED_AT_CHARGE)
    inv = make_invoice(s, "INV-5901", client_remote_id="acme", total_minor=8_000, due_on=date(2026, 3, 10))
    assert run_autopay.run(s).failed == 1
    assert s.store.scalar("SELECT next_retry_at FROM autopay_attempts") is not None

    assert _pay(s, stripe_double, client_id, [(_token(s, inv), 8_000)]).status == "succeeded"
    frozen_clock.advance(timedelta(days=7))
    report = run_autopay.run(s)

    assert report.started == 0 and balance(s, inv) == 0
    row = s.store.one("SELECT next_retry_at, closed_reason FROM autopay_attempts")
    assert (row["next_retry_at"], row["closed_reason"]) == (None, "paid otherwise")


def test_a_3d_secure_request_nobody_answers_is_cancelled_after_a_week_and_retried(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(tmp_path, frozen_clock, stripe_double, mail, extra="\n[autopay]\nretry_days = [9]\n")
    _acme(s, stripe_double, card=NEEDS_3DS)
    inv = make_invoice(s, "INV-5951", client_remote_id="acme", total_minor=15_000, due_on=date(2026, 3, 10))
    assert run_autopay.run(s).requires_action == 1
    first = s.store.one("SELECT * FROM payments")

    for day in range(11, 18):  # a week of daily runs: still waiting for the customer
        frozen_clock.set(datetime(2026, 3, day, 15, 0, tzinfo=UTC))
        assert run_autopay.run(s).started == 0
    assert s.store.scalar("SELECT status FROM payments") == "requires_action"
    frozen_clock.set(datetime(2026, 3, 18, 15, 0, tzinfo=UTC))
    run_autopay.run(s)
    _drain(s)

    [pi] = intents(stripe_double, payment_token=first["token"])
    assert pi["status"] == "canceled"  # the old link can no longer take the money
    assert s.store.scalar("SELECT status FROM payments WHERE id = ?", (first["id"],)) == "failed"
    assert balance(s, inv) == 15_000
    [failed] = mails(mail, "did not go through; we will try again on March 19, 2026")
    assert "not confirmed with the bank within 7 days" in failed.get_body(("plain",)).get_content()
    frozen_clock.set(datetime(2026, 3, 19, 15, 0, tzinfo=UTC))
    assert run_autopay.run(s).requires_action == 1  # the retry asks again, with a new link
