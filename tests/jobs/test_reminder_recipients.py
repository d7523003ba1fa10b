"""Extra reminder recipients an admin sets per client: validated, and each reminder reaches the billing
contacts plus these addresses exactly once each (aiosmtpd sink), never a refused address."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.core.client_overrides import OverrideError, from_form, get_overrides, recipients, set_overrides
from app.core.clock import FrozenClock
from app.jobs import drain_outbox, send_reminders
from app.services import build_services
from tests.conftest import make_config
from tests.factories import make_client, make_invoice


def _at(day: date, hh: int) -> datetime:
    return datetime(day.year, day.month, day.day, hh, 0, tzinfo=ZoneInfo("America/Chicago")).astimezone(UTC)


def _form(extra: str) -> dict[str, object]:
    return {"extra_recipients": extra, "autopay_allowed": "1"}


def test_extra_recipients_are_read_one_per_line_or_comma_separated_and_deduplicated():
    o = from_form(_form("books@cpa.example\n ops@acme.example, Books@CPA.example;\n\n"), "USD")
    assert o.extra_recipients == ("books@cpa.example", "ops@acme.example")
    assert from_form(_form("  "), "USD").extra_recipients == ()


@pytest.mark.parametrize(
    "bad", ["books@cpa", "two words@x.example", "a@b.example <c@d.example>", "@x.example"]
)
def test_a_bad_extra_address_is_named_in_a_clear_error(bad):
    with pytest.raises(OverrideError) as caught:
        from_form(_form(f"ok@acme.example\n{bad}"), "USD")
    message = caught.value.errors["extra_recipients"]
    assert message.startswith("Extra recipients: ") and "is not an email address" in message
    assert repr(bad) in message


def test_reminders_reach_contacts_and_extras_once_each_and_never_a_refused_address(tmp_path, mail):
    clock = FrozenClock(_at(date(2026, 3, 20), 12))
    s = build_services(make_config(tmp_path, smtp_port=mail.port), clock=clock)
    acme = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    make_invoice(s, "INV-6001", client_remote_id="acme", total_minor=50_000, due_on=date(2026, 3, 31))
    new = from_form(
        _form("AP@acme.example, books@acme-cpa.example\nowner@acme.example\nbounced@acme.example"), "USD"
    )
    with s.store.write() as db:
        set_overrides(db, clock, acme, new, actor="admin:test")
        db.execute(
            "INSERT INTO email_refusals (address, refused_at, reason) VALUES (?, ?, ?)",
            ("bounced@acme.example", "2026-03-01T00:00:00.000000Z", "550 5.1.1 no such user"),
        )
    assert get_overrides(s.store.db, acme).extra_recipients == (
        "AP@acme.example",
        "books@acme-cpa.example",
        "owner@acme.example",
        "bounced@acme.example",
    )
    assert [r.email for r in recipients(s.store.db, acme)] == [
        "ap@acme.example",
        "books@acme-cpa.example",
        "owner@acme.example",
    ]

    clock.set(_at(date(2026, 3, 26), 9))  # the -5 step of an invoice due March 31
    first = send_reminders.run(s)
    again = send_reminders.run(s)
    drain_outbox.run(s)
    drain_outbox.run(s)

    assert (first.messages, again.messages) == (3, 0)
    received = mail.wait_for(3)
    assert sorted(m["To"] for m in received) == [
        "ap@acme.example",
        "books@acme-cpa.example",
        "owner@acme.example",
    ]
    by_to = {m["To"]: m.get_body(("plain",)).get_content() for m in received}
    assert all("INV-6001" in body and "$500.00" in body for body in by_to.values())
    # The contact's link signs in; an extra address is sent to the portal's sign-in page.
    assert "/magic/" in by_to["ap@acme.example"] and "this link signs you in" in by_to["ap@acme.example"]
    assert "/magic/" not in by_to["owner@acme.example"]
    assert "Pay in the billing portal:\nhttp://127.0.0.1:8080/login" in by_to["owner@acme.example"]

    # The next step (the due date) reaches them again, each once.
    clock.set(_at(date(2026, 3, 31), 10))
    assert send_reminders.run(s).messages == 3
    drain_outbox.run(s)
    assert len(mail.wait_for(6)) == 6


def test_an_extra_address_the_server_refuses_is_not_written_to_again(tmp_path):
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    class RefusingHandler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("gone@"):
                return "550 5.1.1 no such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            self.delivered.extend(envelope.rcpt_tos)
            return "250 OK"

    handler = RefusingHandler()
    handler.delivered = []
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        clock = FrozenClock(_at(date(2026, 3, 26), 9))
        s = build_services(make_config(tmp_path, smtp_port=port), clock=clock)
        acme = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
        make_invoice(s, "INV-6101", client_remote_id="acme", total_minor=50_000, due_on=date(2026, 3, 31))
        with s.store.write() as db:
            set_overrides(db, clock, acme, from_form(_form("gone@acme.example"), "USD"), actor="admin:test")
        assert send_reminders.run(s).messages == 2
        drain_outbox.run(s)
        assert handler.delivered == ["ap@acme.example"]
        assert s.store.scalar("SELECT COUNT(*) FROM email_refusals WHERE address = 'gone@acme.example'") == 1
        assert [r.email for r in recipients(s.store.db, acme)] == ["ap@acme.example"]

        clock.set(_at(date(2026, 3, 31), 10))  # the next step goes to the contact only
        assert send_reminders.run(s).messages == 1
        drain_outbox.run(s)
        assert handler.delivered == ["ap@acme.example", "ap@acme.example"]
    finally:
        controller.stop()
