"""The monthly statement job against the aiosmtpd sink: on the 1st at the reminder send time in the
MSP's zone (Chicago), the previous month's statement PDF to each opted-in client's billing contacts
and extra recipients, once per client and month across reruns, restarts and missed runs."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from app.core import statements_mail
from app.core.client_overrides import ClientOverrides, set_overrides
from app.core.clock import FrozenClock
from app.jobs import drain_outbox, send_statements
from app.services import build_services
from tests.conftest import make_config
from tests.factories import make_client, make_invoice

CHICAGO = ZoneInfo("America/Chicago")


def _local(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=CHICAGO).astimezone(UTC)


def _world(tmp_path, mail, when: datetime):
    clock = FrozenClock(when)
    s = build_services(make_config(tmp_path, smtp_port=mail.port), clock=clock)
    acme = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example", first_name="Zoë")
    globex = make_client(s, "globex", "Globex Corporation", billing_email="ap@globex.example")
    make_invoice(s, "INV-ACME-1", client_remote_id="acme", total_minor=12_500)
    make_invoice(s, "INV-GLOBEX-1", client_remote_id="globex", total_minor=9_000)
    with s.store.write() as db:
        statements_mail.set_subscription(db, clock, acme, enabled=True, actor="login:ap@acme.example")
        set_overrides(
            db,
            clock,
            acme,
            ClientOverrides(extra_recipients=("AP@acme.example", "books@acme-cpa.example")),
            actor="admin:test",
        )
    return s, clock, acme, globex


def _pdf_text(data: bytes, tmp_path) -> str:
    path = tmp_path / "statement.pdf"
    path.write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def test_the_first_at_the_send_time_sends_last_months_statement_once(tmp_path, mail):
    s, clock, acme, _ = _world(tmp_path, mail, _local(2026, 3, 20, 12))
    clock.set(_local(2026, 4, 1, 8, 59))
    assert send_statements.run(s).messages == 0  # before the send time: nothing

    clock.set(_local(2026, 4, 1, 9, 0))
    report = send_statements.run(s)
    again = send_statements.run(s)
    drain_outbox.run(s)

    assert (report.messages, sorted(report.clients), again.messages) == (2, [acme], 0)
    received = mail.wait_for(2)
    assert sorted(m["To"] for m in received) == ["ap@acme.example", "books@acme-cpa.example"]
    for msg in received:
        assert msg["Subject"] == f"Your {s.config.branding.name} statement for March 2026"
        [part] = list(msg.iter_attachments())
        assert (part.get_filename(), part.get_content_type()) == ("statement-2026-03.pdf", "application/pdf")
        text = _pdf_text(part.get_content(), tmp_path)
        assert "Statement for March 2026" in text and "INV-ACME-1" in text and "$125.00" in text
        assert "INV-GLOBEX-1" not in text
    assert "as you asked to get it each month" in received[0].get_body(("plain",)).get_content()

    # A restart (a new process over the same database) later that day or month sends nothing.
    restarted = build_services(s.config, clock=clock)
    clock.set(_local(2026, 4, 15, 10))
    assert send_statements.run(restarted).messages == 0
    drain_outbox.run(restarted)
    assert len(mail.messages) == 2
    assert s.store.scalar("SELECT COUNT(*) FROM statement_sends") == 1


def test_a_first_missed_while_down_sends_once_late_and_the_next_month_on_time(tmp_path, mail):
    s, clock, _acme, _ = _world(tmp_path, mail, _local(2026, 3, 20, 12))
    clock.set(_local(2026, 4, 3, 7, 30))  # down from March 31 to April 3, early morning
    first = send_statements.run(s)
    second = send_statements.run(s)
    assert (first.month.isoformat(), first.messages, second.messages) == ("2026-03-01", 2, 0)

    clock.set(_local(2026, 5, 1, 9, 5))
    may = send_statements.run(s)
    assert (may.month.isoformat(), may.messages) == ("2026-04-01", 2)
    drain_outbox.run(s)
    subjects = sorted(m["Subject"] for m in mail.wait_for(4))
    assert [x.rsplit(" ", 2)[-2] for x in subjects] == ["April", "April", "March", "March"]


def test_a_client_that_opts_in_after_the_first_starts_with_the_next_month(tmp_path, mail):
    s, clock, acme, globex = _world(tmp_path, mail, _local(2026, 3, 20, 12))
    clock.set(_local(2026, 4, 10, 12))
    with s.store.write() as db:
        statements_mail.set_subscription(db, clock, globex, enabled=True, actor="admin:test")
    report = send_statements.run(s)
    assert sorted(report.clients) == [acme]  # acme's March (late); globex asked after it was due

    clock.set(_local(2026, 5, 1, 9, 0))
    assert sorted(send_statements.run(s).clients) == [acme, globex]
    with s.store.write() as db:
        statements_mail.set_subscription(db, clock, acme, enabled=False, actor="login:ap@acme.example")
    clock.set(_local(2026, 6, 1, 9, 0))
    assert sorted(send_statements.run(s).clients) == [globex]


def test_a_refused_address_gets_no_statement(tmp_path, mail):
    s, clock, _acme, _ = _world(tmp_path, mail, _local(2026, 3, 20, 12))
    with s.store.write() as db:
        db.execute(
            "INSERT INTO email_refusals (address, refused_at, reason) VALUES (?, ?, ?)",
            ("Books@Acme-CPA.example", "2026-03-21T00:00:00.000000Z", "550 no such user"),
        )
    clock.set(_local(2026, 4, 1, 9, 0))
    assert send_statements.run(s).messages == 1
    drain_outbox.run(s)
    assert [m["To"] for m in mail.wait_for(1)] == ["ap@acme.example"]


def test_a_parents_monthly_statement_is_the_consolidated_one_over_its_companies(tmp_path, mail):
    from app.core import client_tree

    s, clock, acme, _ = _world(tmp_path, mail, _local(2026, 3, 20, 12))
    branch = make_client(s, "acme-east", "Acme Dental East", billing_email="ap@acme-east.example")
    make_invoice(s, "INV-EAST-1", client_remote_id="acme-east", total_minor=4_000)
    with s.store.write() as db:
        client_tree.set_parent(db, clock, branch, acme, actor="admin:test")
    clock.set(_local(2026, 4, 1, 9, 0))
    assert sorted(send_statements.run(s).clients) == [acme]
    drain_outbox.run(s)

    received = mail.wait_for(2)
    [part] = list(received[0].iter_attachments())
    text = _pdf_text(part.get_content(), tmp_path)
    for expected in ("Acme Dental LLC", "Acme Dental East", "INV-ACME-1", "INV-EAST-1", "$165.00"):
        assert expected in text, expected
    assert "INV-GLOBEX-1" not in text and "Globex" not in text
