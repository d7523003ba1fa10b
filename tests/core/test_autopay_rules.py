"""Autopay rules and what they make due, on a real SQLite file (nothing here calls Stripe):
validation with a message per field, the audit entry, and each rule that holds an invoice back."""

from __future__ import annotations

import json
from datetime import date

import pytest

from app.core import autopay
from app.core.autopay import AutopayRuleError
from app.core.clock import to_db
from app.core.payments import is_covered_by_autopay, reminder_hold
from tests.factories import make_client, make_invoice


def _method(s, client_id: int, *, removed: bool = False, type_: str = "card") -> int:
    with s.store.write() as db:
        cur = db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "bank_name, created_at, removed_at) VALUES (?, ?, ?, 'visa', '4242', 12, 2031, 'STRIPE TEST "
            "BANK', ?, ?)",
            (
                client_id,
                f"pm_rule_{client_id}_{removed}_{type_}",
                type_,
                to_db(s.clock.utc_now()),
                to_db(s.clock.utc_now()) if removed else None,
            ),
        )
    return int(cur.lastrowid)


def _numbers(plan: autopay.Plan) -> list[str]:
    return [it.number for c in plan.charges for it in c.items]


def test_a_rule_is_saved_audited_and_read_back(services):
    client_id = make_client(services)
    method = _method(services, client_id)

    rule = autopay.set_rule(
        services.store,
        services.clock,
        client_id,
        enabled=True,
        payment_method_id=method,
        kinds=["agreement", "project"],
        max_minor=250_000,
        grace_days=3,
        grouping="per_client",
        actor="login:ap@contoso.example",
    )

    assert autopay.get_rule(services.store, client_id) == rule
    assert (rule.is_enabled, rule.kinds, rule.max_minor, rule.grace_days, rule.grouping) == (
        True,
        ("agreement", "project"),
        250_000,
        3,
        "per_client",
    )
    audit = services.store.one(
        "SELECT actor, action, target, detail_json FROM audit_log WHERE action = 'autopay.rule_saved'"
    )
    assert (audit["actor"], audit["target"]) == ("login:ap@contoso.example", f"client:{client_id}")
    assert json.loads(audit["detail_json"])["max_minor"] == 250_000
    off = autopay.set_rule(
        services.store,
        services.clock,
        client_id,
        enabled=False,
        payment_method_id=method,
        actor="login:ap@contoso.example",
    )
    assert not off.is_enabled and autopay.get_rule(services.store, client_id).kinds == autopay.KINDS


def test_every_wrong_field_gets_its_own_message_and_nothing_is_saved(services):
    client_id = make_client(services)
    other = make_client(services, "999", "Globex")
    theirs = _method(services, other)
    with pytest.raises(AutopayRuleError) as err:
        autopay.set_rule(
            services.store,
            services.clock,
            client_id,
            enabled=True,
            payment_method_id=theirs,
            kinds=["agreement", "credit_memo"],
            max_minor=-1,
            approval_above_minor=True,
            schedule="weekly",
            schedule_days=400,
            grace_days=61,
            grouping="monthly",
            actor="t",
        )
    assert set(err.value.errors) == {
        "payment_method_id",
        "kinds",
        "max_minor",
        "approval_above_minor",
        "schedule",
        "schedule_days",
        "grace_days",
        "grouping",
    }
    assert err.value.errors["payment_method_id"] == "That payment method is not saved for this company."
    assert "credit_memo" in err.value.errors["kinds"]
    with pytest.raises(AutopayRuleError, match="Choose the card or bank account"):
        autopay.set_rule(
            services.store, services.clock, client_id, enabled=True, payment_method_id=None, actor="t"
        )
    removed = _method(services, client_id, removed=True)
    with pytest.raises(AutopayRuleError, match="not saved for this company"):
        autopay.set_rule(
            services.store, services.clock, client_id, enabled=True, payment_method_id=removed, actor="t"
        )
    assert autopay.get_rule(services.store, client_id) is None
    assert services.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'autopay.rule_saved'") == 0


def test_the_finance_teams_switches_stop_autopay(services):
    client_id = make_client(services)
    method = _method(services, client_id)
    autopay.set_rule(
        services.store, services.clock, client_id, enabled=True, payment_method_id=method, actor="t"
    )
    make_invoice(services, "INV-7001", due_on=date(2026, 3, 1))
    assert _numbers(autopay.plan_new(services.store.db, today=date(2026, 3, 10))) == ["INV-7001"]
    now = to_db(services.clock.utc_now())
    with services.store.write() as db:
        db.execute(
            "INSERT INTO client_overrides (client_id, is_paused, autopay_allowed, updated_at, updated_by) "
            "VALUES (?, 1, 1, ?, 'admin')",
            (client_id, now),
        )
    assert _numbers(autopay.plan_new(services.store.db, today=date(2026, 3, 10))) == []
    with services.store.write() as db:
        db.execute(
            "UPDATE client_overrides SET is_paused = 0, autopay_allowed = 0 WHERE client_id = ?", (client_id,)
        )
    assert _numbers(autopay.plan_new(services.store.db, today=date(2026, 3, 10))) == []
    with pytest.raises(AutopayRuleError, match="not available for this company"):
        autopay.set_rule(
            services.store, services.clock, client_id, enabled=True, payment_method_id=method, actor="t"
        )


def test_approval_and_line_disputes_hold_an_invoice_back(services):
    client_id = make_client(services)
    method = _method(services, client_id)
    autopay.set_rule(
        services.store,
        services.clock,
        client_id,
        enabled=True,
        payment_method_id=method,
        approval_above_minor=50_000,
        actor="t",
    )
    big = make_invoice(services, "INV-7101", total_minor=60_000, due_on=date(2026, 3, 1))
    small = make_invoice(services, "INV-7102", total_minor=40_000, due_on=date(2026, 3, 1))
    plan = autopay.plan_new(services.store.db, today=date(2026, 3, 10))
    assert _numbers(plan) == ["INV-7102"]
    assert [(k.number, k.reason) for k in plan.skipped] == [("INV-7101", "waiting for an approver")]

    with services.store.write() as db:
        db.execute(
            "INSERT INTO invoice_approvals (invoice_id, approved_by, approved_at, approved_total_minor) "
            "VALUES (?, 'approver@contoso.example', ?, 60000)",
            (big, to_db(services.clock.utc_now())),
        )
        db.execute(
            "INSERT INTO line_disputes (token, client_id, invoice_id, line_no, line_description, "
            "line_amount_minor, "
            "currency, reason, raised_by, created_at) VALUES ('ld1', ?, ?, 1, 'services', 40000, 'USD', "
            "'not delivered', 'ap@contoso.example', ?)",
            (client_id, small, to_db(services.clock.utc_now())),
        )
    plan = autopay.plan_new(services.store.db, today=date(2026, 3, 10))
    assert _numbers(plan) == ["INV-7101"]
    assert [(k.number, k.reason) for k in plan.skipped] == [
        ("INV-7102", "the client disputes a line of this invoice")
    ]


def test_upcoming_charges_list_dates_amounts_and_the_method(services):
    client_id = make_client(services)
    method = _method(services, client_id)
    autopay.set_rule(
        services.store,
        services.clock,
        client_id,
        enabled=True,
        payment_method_id=method,
        grace_days=1,
        actor="t",
    )
    make_invoice(services, "INV-7201", total_minor=12_500, due_on=date(2026, 3, 20))
    make_invoice(
        services, "INV-7202", total_minor=1_000, due_on=date(2026, 3, 1)
    )  # past: charged at the next run, tomorrow's (it is 10:00 in Chicago, today's 06:00 run is over)

    upcoming = autopay.upcoming_charges(
        services.store, services.clock, services.config.tz, client_id, run_time="06:00"
    )

    assert [(c.charge_on, [i.number for i in c.items], c.amount_minor, c.method.label) for c in upcoming] == [
        (date(2026, 3, 11), ["INV-7202"], 1_000, "Visa •••• 4242"),
        (date(2026, 3, 21), ["INV-7201"], 12_500, "Visa •••• 4242"),
    ]


@pytest.mark.parametrize(
    ("local_time", "due_on", "charged_on"),
    [
        ("05:59", date(2026, 3, 1), date(2026, 3, 10)),  # overdue, before today's run: today
        ("06:00", date(2026, 3, 1), date(2026, 3, 11)),  # the run is under way: the next one
        ("10:27", date(2026, 3, 1), date(2026, 3, 11)),  # after today's run: tomorrow
        ("10:27", date(2026, 3, 10), date(2026, 3, 11)),  # due today, after the run: tomorrow
        ("10:27", date(2026, 3, 12), date(2026, 3, 12)),  # due later: that day's run
    ],
)
def test_the_upcoming_charge_date_is_the_run_that_will_make_it(services, local_time, due_on, charged_on):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    hour, minute = (int(p) for p in local_time.split(":"))
    services.clock.set(datetime(2026, 3, 10, hour, minute, tzinfo=ZoneInfo("America/Chicago")))
    client_id = make_client(services)
    autopay.set_rule(
        services.store, services.clock, client_id, enabled=True,
        payment_method_id=_method(services, client_id), actor="t",
    )
    make_invoice(services, "INV-7203", total_minor=435_000, due_on=due_on)
    [charge] = autopay.upcoming_charges(
        services.store, services.clock, services.config.tz, client_id, run_time="06:00"
    )
    assert (charge.charge_on, charge.amount_minor) == (charged_on, 435_000)


def test_reminders_are_held_while_autopay_covers_an_invoice_and_not_after(services):
    client_id = make_client(services)
    method = _method(services, client_id)
    inv = make_invoice(services, "INV-7301", due_on=date(2026, 3, 31))
    today = date(2026, 3, 10)
    assert reminder_hold(services.store.db, inv, today=today) is None
    autopay.set_rule(
        services.store, services.clock, client_id, enabled=True, payment_method_id=method, actor="t"
    )
    assert is_covered_by_autopay(services.store.db, inv, today=today)
    assert reminder_hold(services.store.db, inv, today=today) == "autopay scheduled"
    autopay.set_rule(
        services.store,
        services.clock,
        client_id,
        enabled=True,
        payment_method_id=method,
        kinds=["project"],
        actor="t",
    )
    assert reminder_hold(services.store.db, inv, today=today) is None
