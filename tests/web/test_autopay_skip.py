"""Skip one upcoming autopay charge, from the invoice page or the autopay page, against localstripe and
the SMTP sink: the run on the skipped date leaves the invoice alone, reminders treat it like any
unpaid invoice, the client is told, and autopay charges it `autopay.skip_days` later; undo until then."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.core import autopay
from app.core.clock import FrozenClock
from app.jobs import drain_outbox, run_autopay, send_reminders
from app.web import create_app
from tests.autopay_world import enable, engine_services, mails, saved_card, succeeded_charges
from tests.factories import make_client, make_invoice
from tests.web.conftest import post, sign_in
from tests.web.factories import make_contact, make_login

CHICAGO = ZoneInfo("America/Chicago")


def _at(day: int, hh: int, month: int = 3) -> datetime:
    return datetime(2026, month, day, hh, 0, tzinfo=CHICAGO).astimezone(UTC)


@pytest.fixture
def world(tmp_path, stripe_double, mail):
    clock = FrozenClock(_at(10, 10))
    s = engine_services(tmp_path, clock, stripe_double, mail)
    client_id = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    enable(s, client_id, saved_card(s, stripe_double, client_id))
    skipped = make_invoice(
        s, "INV-7001", client_remote_id="acme", total_minor=40_000, due_on=date(2026, 3, 12)
    )
    kept = make_invoice(s, "INV-7002", client_remote_id="acme", total_minor=15_000, due_on=date(2026, 3, 12))
    make_login(s, "ap@acme.example")
    web = create_app(s).test_client()
    sign_in(web, "ap@acme.example")
    before = {n: succeeded_charges(stripe_double, n) for n in ("INV-7001", "INV-7002")}
    return s, clock, client_id, web, skipped, kept, before


def _charged(double, number: str, world) -> int:
    """Charges of `number` made in this test (the Stripe double lives for the whole session)."""
    return succeeded_charges(double, number) - world[-1][number]


def _token(s, invoice_id: int) -> str:
    return str(s.store.scalar("SELECT token FROM invoices WHERE id = ?", (invoice_id,)))


def _notices(s, template: str) -> list[dict]:
    rows = s.store.all(
        "SELECT payload_json FROM outbox WHERE payload_json LIKE ?", (f'%"template": "{template}"%',)
    )
    return [json.loads(r[0])["context"] for r in rows]


def test_a_skipped_charge_is_not_made_that_run_and_is_made_on_the_resume_date(world, stripe_double, mail):
    s, clock, client_id, web, skipped, _kept, _ = world
    page = web.get(f"/invoices/{_token(s, skipped)}").text
    assert 'id="skip-charge"' in page and "Autopay will pay $400.00" in page

    response = post(web, "/autopay/skip", {"invoice": _token(s, skipped), "back": "invoice"})
    assert response.status_code == 302 and response.headers["Location"].endswith(
        f"/invoices/{_token(s, skipped)}"
    )
    page = web.get(f"/invoices/{_token(s, skipped)}").text
    assert "Skipped: autopay will not charge INV-7001 on March 12, 2026" in page
    assert 'id="autopay-skipped"' in page and 'id="undo-skip"' in page and "March 19, 2026" in page
    audit = s.store.one(
        "SELECT actor, action, target, detail_json FROM audit_log WHERE action LIKE 'autopay.%skip%'"
    )
    assert (audit["actor"], audit["action"], audit["target"]) == (
        "login:ap@acme.example",
        "autopay.charge_skipped",
        f"invoice:{skipped}",
    )
    assert json.loads(audit["detail_json"]) == {"skipped_on": "2026-03-12", "resume_on": "2026-03-19"}
    upcoming = web.get("/autopay").text
    assert 'id="skipped-INV-7001"' in upcoming and 'id="undo-skip-INV-7001"' in upcoming
    planned = autopay.upcoming_charges(
        s.store, clock, s.config.tz, client_id, run_time=s.config.autopay.run_time
    )
    assert [(c.charge_on.isoformat(), [i.number for i in c.items]) for c in planned] == [
        ("2026-03-12", ["INV-7002"]),
        ("2026-03-19", ["INV-7001"]),
    ]
    drain_outbox.run(s)
    [confirmation] = mails(mail, "skipped")
    assert confirmation["Subject"] == "Automatic payment of INV-7001 skipped on March 12, 2026"
    assert confirmation["To"] == "ap@acme.example"
    assert "if it is still open on March 19, 2026" in confirmation.get_body(("plain",)).get_content()

    # The due date: reminders treat the skipped invoice like any unpaid one; the covered one gets none.
    clock.set(_at(12, 5))
    assert autopay.is_covered(s.store.db, skipped, today=date(2026, 3, 12)) is False
    clock.set(_at(12, 7))
    run_autopay.run(s)
    assert (_charged(stripe_double, "INV-7001", world), _charged(stripe_double, "INV-7002", world)) == (0, 1)
    clock.set(_at(12, 9))
    send_reminders.run(s)
    reminded = [it["number"] for ctx in _notices(s, "reminder") for it in ctx["items"]]
    assert reminded == ["INV-7001"]

    # After that run the skip can no longer be undone.
    post(web, "/autopay/skip/undo", {"invoice": _token(s, skipped), "back": "invoice"})
    assert "the skip can no longer be undone" in web.get(f"/invoices/{_token(s, skipped)}").text

    for day in (13, 16, 18):
        clock.set(_at(day, 7))
        run_autopay.run(s)
    assert _charged(stripe_double, "INV-7001", world) == 0
    # The upcoming-charge notice speaks of the new date, three days ahead.
    assert [
        c["charge_on"] for c in _notices(s, "autopay_upcoming") if c["invoices"][0]["number"] == "INV-7001"
    ] == ["March 19, 2026"]
    clock.set(_at(19, 7))
    run_autopay.run(s)
    run_autopay.run(s)
    assert _charged(stripe_double, "INV-7001", world) == 1


def test_undo_before_the_run_puts_the_charge_back(world, stripe_double, mail):
    s, clock, _client_id, web, skipped, _kept, _ = world
    post(web, "/autopay/skip", {"invoice": _token(s, skipped)})
    assert autopay.is_covered(s.store.db, skipped, today=date(2026, 3, 10)) is False
    response = post(web, "/autopay/skip/undo", {"invoice": _token(s, skipped)})
    assert response.headers["Location"].endswith("/autopay")
    assert "Undone: autopay charges INV-7001 as planned." in web.get("/autopay").text
    assert autopay.is_covered(s.store.db, skipped, today=date(2026, 3, 10)) is True
    assert [
        r[0]
        for r in s.store.all("SELECT action FROM audit_log WHERE action LIKE 'autopay.%skip%' ORDER BY id")
    ] == ["autopay.charge_skipped", "autopay.skip_undone"]
    drain_outbox.run(s)
    assert [m["Subject"] for m in mails(mail, "INV-7001")] == [
        "Automatic payment of INV-7001 skipped on March 12, 2026",
        "Automatic payment of INV-7001 is back on March 12, 2026",
    ]
    clock.set(_at(12, 7))
    run_autopay.run(s)
    assert _charged(stripe_double, "INV-7001", world) == 1


def test_skip_is_refused_for_another_company_a_viewer_and_a_second_time(world, stripe_double):
    s, _clock, client_id, web, skipped, _kept, _ = world
    other = make_client(s, "globex", "Globex Corporation", billing_email="ap@globex.example")
    theirs = make_invoice(s, "INV-9001", client_remote_id="globex", due_on=date(2026, 3, 12))
    assert post(web, "/autopay/skip", {"invoice": _token(s, theirs)}).status_code == 404
    assert post(web, "/autopay/skip", {"invoice": "no-such-token"}).status_code == 404

    from tests.web.factories import Ref

    make_contact(s, Ref(client_id, ""), "viewer@acme.example", role="viewer")
    make_login(s, "viewer@acme.example")
    viewer = create_app(s).test_client()
    sign_in(viewer, "viewer@acme.example")
    assert post(viewer, "/autopay/skip", {"invoice": _token(s, skipped)}).status_code == 403
    assert 'id="skip-charge"' not in viewer.get(f"/invoices/{_token(s, skipped)}").text

    post(web, "/autopay/skip", {"invoice": _token(s, skipped)})
    post(web, "/autopay/skip", {"invoice": _token(s, skipped)})
    assert "already skipped once" in web.get("/autopay").text
    assert s.store.scalar("SELECT COUNT(*) FROM autopay_skips") == 1
    assert other  # the other company's invoice stays planned as before
    assert s.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'autopay.charge_skipped'") == 1


@pytest.mark.parametrize(("hour", "when"), [(5, "today at 6:00 AM CDT"), (10, "tomorrow at 6:00 AM CDT")])
def test_turning_autopay_on_says_at_once_what_it_will_charge_first(tmp_path, stripe_double, mail, hour, when):
    s = engine_services(tmp_path, FrozenClock(_at(10, hour)), stripe_double, mail)
    client_id = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    method = saved_card(s, stripe_double, client_id)
    ref = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (method,))
    make_invoice(s, "INV-7101", client_remote_id="acme", total_minor=53_500, due_on=date(2026, 3, 2))
    make_login(s, "ap@acme.example")
    web = create_app(s).test_client()
    sign_in(web, "ap@acme.example")

    form = {
        "enabled": "on",
        "method": ref,
        "kinds": ["agreement"],
        "schedule": "due_date",
        "schedule_days": "0",
    }
    response = post(web, "/autopay", form)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    page = web.get("/autopay").get_data(as_text=True)
    assert f"The first charge is $535.00 {when}, for INV-7101." in page
    assert "Skip this charge" in page
