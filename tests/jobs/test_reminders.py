"""Reminders: the right message on the right local day, once, never after payment."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.core import payments
from app.core.cadence import QuietDays, due_step, step_date
from app.core.clock import FrozenClock, from_db
from app.jobs import drain_outbox, send_reminders
from app.services import build_services
from tests.conftest import make_config
from tests.factories import make_client, make_invoice

START = date(2026, 4, 1)  # day 0 of the simulations


def _services(tmp_path, clock, *, tz="America/Chicago", extra="", smtp_port=9):
    cfg = make_config(
        tmp_path,
        smtp_port=smtp_port,
        replace={'timezone = "America/Chicago"': f'timezone = "{tz}"'},
        extra=extra,
    )
    return build_services(cfg, clock=clock)


def _at(day: date, hh: int, mm: int, tz: str = "America/Chicago") -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def _reminder_rows(services) -> list[dict]:
    rows = services.store.all(
        "SELECT payload_json, created_at FROM outbox WHERE kind = 'email' "
        'AND payload_json LIKE \'%"template": "reminder"%\' ORDER BY id'
    )
    out = []
    for r in rows:
        p = json.loads(r["payload_json"])
        out.append(
            {
                "to": p["to"][0],
                "numbers": [it["number"] for it in p["context"]["items"]],
                "at": from_db(r["created_at"]),
                "subject": p["context"]["subject"],
                "context": p["context"],
            }
        )
    return out


# ---- cadence, pure --------------------------------------------------------------------------


def test_steps_fall_on_their_days_with_grace_and_quiet_days():
    due = date(2026, 4, 10)  # a Friday
    assert step_date(due, -5) == date(2026, 4, 5)
    assert step_date(due, 3, grace_days=2) == date(2026, 4, 15)
    assert step_date(due, -5, grace_days=2) == date(2026, 4, 5)  # grace only delays overdue steps
    weekends = QuietDays(weekends=True)
    assert step_date(due, 1, quiet=weekends) == date(2026, 4, 13)  # Saturday -> Monday
    holiday = QuietDays(holidays=frozenset({date(2026, 4, 10)}))
    assert step_date(due, 0, quiet=holiday) == date(2026, 4, 11)


def test_after_an_outage_only_the_latest_reached_step_is_due():
    due = date(2026, 4, 10)
    steps = (-5, 0, 3, 10)
    assert due_step(due, date(2026, 4, 20), steps, already={-5, 0}) == 10
    assert due_step(due, date(2026, 4, 20), steps, already={-5, 0, 10}) is None
    assert due_step(due, date(2026, 4, 4), steps) is None


# ---- B09 over its kind: the due date is a calendar date in the MSP's zone ---------------------


@pytest.mark.parametrize("tz", ["America/Chicago", "Pacific/Auckland", "Pacific/Honolulu", "Asia/Kolkata"])
@pytest.mark.parametrize("server_tz", ["UTC", "America/Chicago", "Asia/Tokyo"])
def test_reminders_go_on_the_local_days_and_state_the_due_date_never_a_day_early(
    tmp_path, tz, server_tz, monkeypatch
):
    import time

    monkeypatch.setenv("TZ", server_tz)
    time.tzset()
    try:
        clock = FrozenClock(_at(date(2016, 3, 29), 0, 0, tz))
        s = _services(
            tmp_path, clock, tz=tz, extra="[reminders]\nsteps = [-1, 0, 1]\nquiet_weekends = false\n"
        )
        make_client(s)
        make_invoice(s, "INV-9200", total_minor=30000, due_on=date(2016, 3, 31))
        end = _at(date(2016, 4, 2), 23, 59, tz)
        while clock.utc_now() <= end:
            send_reminders.run(s)
            clock.advance(timedelta(minutes=15))
        rows = _reminder_rows(s)
        assert [r["at"].astimezone(ZoneInfo(tz)).date() for r in rows] == [
            date(2016, 3, 30),
            date(2016, 3, 31),
            date(2016, 4, 1),
        ]
        assert all(r["context"]["items"][0]["due_on"] == "March 31, 2016" for r in rows)
        assert [r["context"]["items"][0]["state"] for r in rows] == ["upcoming", "due_today", "overdue"]
        assert rows[1]["subject"] == "Invoice INV-9200 for $300.00 is due today"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# ---- DST: 09:00 stays 09:00, once a day -----------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "change"),
    [
        ("America/New_York", date(2026, 3, 8)),
        ("America/New_York", date(2026, 11, 1)),
        ("Europe/London", date(2026, 3, 29)),
        ("Europe/London", date(2026, 10, 25)),
    ],
)
def test_a_0900_send_happens_once_at_0900_local_across_a_dst_change(tmp_path, tz, change):
    first = change - timedelta(days=2)
    clock = FrozenClock(_at(first, 0, 0, tz))
    s = _services(
        tmp_path, clock, tz=tz, extra="[reminders]\nsteps = [-4, -3, -2, -1, 0]\nquiet_weekends = false\n"
    )
    make_client(s)
    make_invoice(s, "INV-DST", total_minor=10000, due_on=change + timedelta(days=2))
    end = _at(change + timedelta(days=2), 23, 45, tz)
    while clock.utc_now() <= end:
        send_reminders.run(s)
        clock.advance(timedelta(minutes=15))
    local = [r["at"].astimezone(ZoneInfo(tz)) for r in _reminder_rows(s)]
    assert [t.date() for t in local] == [first + timedelta(days=n) for n in range(5)]
    assert all((t.hour, t.minute) == (9, 0) for t in local)
    # The scheduler's own trigger agrees: the next fire times are 09:00 local on each day.
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger(hour=9, minute=0, timezone=ZoneInfo(tz))
    fire, fires = None, []
    now = _at(first, 0, 0, tz)
    for _ in range(5):
        fire = trigger.get_next_fire_time(fire, now)
        fires.append(fire.astimezone(ZoneInfo(tz)))
        now = fire + timedelta(seconds=1)
    assert [(f.date(), f.hour, f.minute) for f in fires] == [
        (first + timedelta(days=n), 9, 0) for n in range(5)
    ]
    nxt = send_reminders.next_send_at(s, _at(change, 8, 0, tz)).astimezone(ZoneInfo(tz))
    assert (nxt.date(), nxt.hour, nxt.minute) == (change, 9, 0)


# ---- 60 days, 30 clients --------------------------------------------------------------------

# Each group of five clients has the same story; the days are simulation days from START, with
# the job running every day at 08:00 (too early: nothing) and at 09:30.
GROUPS = {
    # never paid: every step, -5 0 +3 +10 +30 around a due date on day 10
    "open": {"due": [10], "expect": {5: ["A"], 10: ["A"], 13: ["A"], 20: ["A"], 40: ["A"]}},
    # paid on day 11: nothing after the payment
    "paid": {"due": [10], "paid_on": 11, "expect": {5: ["A"], 10: ["A"]}},
    # two invoices due the same day: one message listing both, each step
    "pair": {
        "due": [12, 12],
        "expect": {7: ["A", "B"], 12: ["A", "B"], 15: ["A", "B"], 22: ["A", "B"], 42: ["A", "B"]},
    },
    # a bank payment processing from day 18, succeeding on day 23: never chased while processing
    "ach": {"due": [20], "processing": (18, 23), "expect": {15: ["A"]}},
    # paused by the finance team: nothing at all
    "paused": {"due": [25], "paused": True, "expect": {}},
    # 60% paid on day 11: the reminders go on, for what is still due
    "partial": {
        "due": [10],
        "part_paid_on": 11,
        "expect": {5: ["A"], 10: ["A"], 13: ["A"], 20: ["A"], 40: ["A"]},
    },
    # a line disputed on day 12: that invoice pauses, the client's other invoice goes on
    "disputed": {
        "due": [10, 10],
        "disputed_on": 12,
        "expect": {5: ["A", "B"], 10: ["A", "B"], 13: ["B"], 20: ["B"], 40: ["B"]},
    },
    # autopay will charge it on the due date: no reminder (the autopay notice covers it)
    "autopay": {"due": [20], "autopay": True, "expect": {}},
}
CLIENTS_PER_GROUP = {
    "open": 5,
    "paid": 4,
    "pair": 4,
    "ach": 4,
    "paused": 3,
    "partial": 4,
    "disputed": 3,
    "autopay": 3,
}  # 30 clients


def test_sixty_days_for_thirty_clients_send_exactly_the_expected_messages(tmp_path, mail):
    from app.core.client_overrides import ClientOverrides, set_overrides

    clock = FrozenClock(_at(START, 0, 0))
    s = _services(
        tmp_path,
        clock,
        smtp_port=mail.port,
        extra="[reminders]\nsteps = [-5, 0, 3, 10, 30]\nquiet_weekends = false\n",
    )
    expected: dict[tuple[int, str], list[str]] = {}
    plan: list[tuple[str, int, list[int], dict]] = []
    n = 0
    for group, story in GROUPS.items():
        for _ in range(CLIENTS_PER_GROUP[group]):
            n += 1
            remote = f"c{n}"
            email = f"ap{n}@client{n}.example"
            client_id = make_client(s, remote, f"Client {n} ({group})", billing_email=email)
            ids = []
            for j, due in enumerate(story["due"]):
                number = f"INV-{n:02d}{'AB'[j]}"
                ids.append(
                    make_invoice(
                        s,
                        number,
                        client_remote_id=remote,
                        total_minor=10_000 + n,
                        due_on=START + timedelta(days=due),
                    )
                )
            if story.get("autopay"):
                _autopay(s, client_id)
            if story.get("paused"):
                with s.store.write() as db:
                    set_overrides(db, clock, client_id, ClientOverrides(is_paused=True), actor="test")
            for day, letters in story["expect"].items():
                expected[(day, email)] = [f"INV-{n:02d}{x}" for x in letters]
            plan.append((group, client_id, ids, dict(story)))  # a copy: each client keeps its own payment
    for day in range(60):
        today = START + timedelta(days=day)
        for _group, client_id, ids, story in plan:
            if story.get("paid_on") == day:
                _pay(s, client_id, ids)
            if story.get("disputed_on") == day:
                from app.core.line_disputes import open_dispute

                with s.store.write() as db:
                    open_dispute(
                        db,
                        clock,
                        client_id=client_id,
                        invoice_id=ids[0],
                        line_no=1,
                        reason="We cancelled this service in March",
                        raised_by="test",
                    )
            if story.get("part_paid_on") == day:
                _pay(s, client_id, ids, share=0.6)
            if story.get("processing", (None,))[0] == day:
                story["_payment"] = _pay(s, client_id, ids, status="processing")
            if story.get("processing", (None, None))[1] == day:
                _settle(s, story["_payment"])
        for hh, mm in ((8, 0), (9, 30)):
            clock.set(_at(today, hh, mm))
            send_reminders.run(s)
        drain_outbox.run(s)
    got: dict[tuple[int, str], list[str]] = {}
    for r in _reminder_rows(s):
        day = (r["at"].astimezone(ZoneInfo("America/Chicago")).date() - START).days
        assert (day, r["to"]) not in got, f"two reminders to {r['to']} on day {day}"
        got[(day, r["to"])] = sorted(r["numbers"])
    assert got == expected
    receipts = 4 + 4 + 4  # the paid, part-paid and settled bank payments: one each
    mail.wait_for(len(expected) + receipts)
    subjects = [m["Subject"] for m in mail.messages]
    assert sum(1 for x in subjects if x.startswith("Receipt")) == receipts
    assert len(subjects) == len(expected) + receipts
    # What a reminder asks for is what is still due when it goes (B03 C).
    for r in _reminder_rows(s):
        day = (r["at"].astimezone(ZoneInfo("America/Chicago")).date() - START).days
        if "(partial)" in r["context"]["client_name"]:
            [item] = r["context"]["items"]
            assert item["balance_minor"] == (
                item["total_minor"] if day < 11 else item["total_minor"] - item["total_minor"] * 6 // 10
            )


def test_after_an_outage_the_missed_step_is_skipped_and_the_latest_goes_once_late(tmp_path):
    clock = FrozenClock(_at(START, 0, 0))
    s = _services(tmp_path, clock, extra="[reminders]\nsteps = [-5, 0, 3, 10, 30]\nquiet_weekends = false\n")
    make_client(s)
    make_invoice(s, "INV-OUT", total_minor=10000, due_on=START + timedelta(days=3))
    for day in range(40):
        if day in range(4, 13):  # the service is down
            continue
        clock.set(_at(START + timedelta(days=day), 9, 30))
        send_reminders.run(s)
    days = [(r["at"].astimezone(ZoneInfo("America/Chicago")).date() - START).days for r in _reminder_rows(s)]
    assert days == [0, 3, 13, 33]
    decided = dict(s.store.all("SELECT step, outcome FROM reminders_sent"))
    assert decided == {-5: "sent", 0: "sent", 3: "skipped", 10: "sent", 30: "sent"}


def _pay(s, client_id: int, invoice_ids: list[int], *, status: str = "succeeded", share: float = 1.0) -> int:
    def amount(i: int) -> int:
        bal = int(s.store.scalar("SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (i,)))
        return bal if share == 1.0 else bal * int(share * 10) // 10

    items = [payments.PayItem(i, amount(i)) for i in invoice_ids]
    plan = payments.start_payment(
        s.store,
        s.clock,
        client_id=client_id,
        items=items,
        initiated_by="test",
        allow_partial=True,
        minimum_partial="1.00",
    )
    payments.record_intent(
        s.store,
        s.clock,
        payment_id=plan.payment_id,
        intent_id=f"pi_sim_{plan.payment_id}",
        processor_status=status,
        amount_minor=plan.amount_minor,
        currency=plan.currency,
        base_url="http://x",
        timezone=s.config.tz,
    )
    return plan.payment_id


def _autopay(s, client_id: int) -> None:
    from app.core.autopay import set_rule
    from app.core.clock import to_db

    with s.store.write() as db:
        cur = db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, "
            "exp_year, is_default, created_at) VALUES (?, ?, 'card', 'visa', '4242', 12, 2031, 1, ?)",
            (client_id, f"pm_sim_{client_id}", to_db(s.clock.utc_now())),
        )
        method_id = cur.lastrowid
    set_rule(s.store, s.clock, client_id, enabled=True, payment_method_id=method_id, actor="test")


def _settle(s, payment_id: int) -> None:
    row = s.store.one("SELECT amount_minor, currency FROM payments WHERE id = ?", (payment_id,))
    payments.record_intent(
        s.store,
        s.clock,
        payment_id=payment_id,
        intent_id=f"pi_sim_{payment_id}",
        processor_status="succeeded",
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        base_url="http://x",
        timezone=s.config.tz,
    )


# ---- crash, SMTP trouble, encoding ------------------------------------------------------------


def test_a_restart_in_the_middle_of_a_run_sends_no_duplicate(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from app.core.clock import SystemClock, local_today
    from app.demo.runner import demo_config

    # The subprocess runs on the real clock: the invoices are due today, reminders go from 00:00.
    extra = '[reminders]\nsteps = [0]\nsend_time = "00:00"\nquiet_weekends = false\n'
    s = _services(tmp_path, SystemClock(), extra=extra)
    today = local_today(SystemClock(), s.config.tz)
    for n in range(4):
        make_client(s, f"c{n}", f"Client {n}", billing_email=f"ap{n}@c{n}.example")
        make_invoice(s, f"INV-{n}", client_remote_id=f"c{n}", total_minor=5000, due_on=today)
    path = tmp_path / "config.toml"
    path.write_text(
        demo_config(
            data_dir=tmp_path,
            port=8080,
            stripe_base="http://127.0.0.1:9",
            smtp_port=9,
            secret_key="test-secret-key-0123456789abcdef",
        )
        + extra
    )
    env = dict(os.environ, CASHLOOP_FAULT="reminders.after_client", CASHLOOP_FAULT_AFTER="1")
    crashed = subprocess.run(
        [sys.executable, "-m", "app.cli", "remind", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert len(_reminder_rows(s)) == 2  # two clients done before the kill, committed
    env.pop("CASHLOOP_FAULT")
    again = subprocess.run(
        [sys.executable, "-m", "app.cli", "remind", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    per_person = defaultdict(int)
    for r in _reminder_rows(s):
        per_person[r["to"]] += 1
    assert per_person == {f"ap{n}@c{n}.example": 1 for n in range(4)}


def test_an_smtp_failure_is_retried_and_one_message_is_delivered(tmp_path):
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    class FlakyHandler:
        def __init__(self) -> None:
            self.calls = 0
            self.delivered: list[bytes] = []

        async def handle_DATA(self, server, session, envelope):
            self.calls += 1
            if self.calls == 1:
                return "451 4.3.0 try again later"
            self.delivered.append(envelope.content)
            return "250 OK"

    handler = FlakyHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        clock = FrozenClock(_at(date(2026, 4, 10), 10, 0))
        s = _services(tmp_path, clock, smtp_port=port)
        make_client(s)
        make_invoice(s, "INV-1", total_minor=5000, due_on=date(2026, 4, 10))
        send_reminders.run(s)
        first = drain_outbox.run(s)
        assert (first.done, first.retried) == (0, 1)
        clock.advance(timedelta(minutes=5))
        second = drain_outbox.run(s)
        assert second.done == 1
        drain_outbox.run(s)
        assert handler.calls == 2 and len(handler.delivered) == 1
        assert (
            s.store.scalar("SELECT COUNT(*) FROM email_log WHERE kind = 'reminder' AND status = 'sent'") == 1
        )
    finally:
        controller.stop()


def test_non_ascii_names_and_subjects_survive_the_wire(tmp_path, mail):
    clock = FrozenClock(_at(date(2026, 4, 10), 10, 0))
    s = _services(tmp_path, clock, smtp_port=mail.port)
    make_client(s, "mu", "Müller & Söhne GmbH", billing_email="buchhaltung@mueller.example", first_name="Zoë")
    make_invoice(
        s, "INV-€1", client_remote_id="mu", total_minor=125000, currency="EUR", due_on=date(2026, 4, 10)
    )
    send_reminders.run(s)
    drain_outbox.run(s)
    [msg] = mail.wait_for(1)
    assert msg["Subject"] == "Invoice INV-€1 for €1,250.00 is due today"
    body = msg.get_body(("plain",)).get_content()
    assert "Hi Zoë," in body and "Müller & Söhne GmbH" in body
    raw = msg.as_bytes()
    assert b"=?utf-8?" in raw.lower() or b"=?UTF-8?" in raw  # RFC 2047 encoded subject on the wire
    assert all(b < 128 for b in raw)  # 7-bit clean: quoted-printable bodies, encoded headers


def test_a_refused_address_is_marked_queued_for_a_person_and_skipped_next_time(tmp_path):
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    class RefusingHandler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("gone@"):
                return "550 5.1.1 no such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    port = free_port()
    controller = Controller(RefusingHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        clock = FrozenClock(_at(date(2026, 4, 10), 10, 0))
        s = _services(
            tmp_path, clock, smtp_port=port, extra="[reminders]\nsteps = [0, 1]\nquiet_weekends = false\n"
        )
        make_client(s, billing_email="gone@contoso.example")
        make_invoice(s, "INV-1", total_minor=5000, due_on=date(2026, 4, 10))
        send_reminders.run(s)
        report = drain_outbox.run(s)
        assert report.dead == 1
        row = s.store.one("SELECT email_refused_at, email_refused_reason FROM contacts")
        assert row["email_refused_at"] and "550" in row["email_refused_reason"]
        kinds = [r[0] for r in s.store.all("SELECT kind FROM exceptions")]
        assert "email_refused" in kinds
        clock.advance(timedelta(days=1))
        before = len(_reminder_rows(s))
        send_reminders.run(s)
        assert len(_reminder_rows(s)) == before  # nobody left to write to
        assert "no_billing_address" in [r[0] for r in s.store.all("SELECT kind FROM exceptions")]
    finally:
        controller.stop()
