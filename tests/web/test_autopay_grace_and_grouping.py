"""The autopay form's grace days and "one charge per invoice or per client": checked, saved, said
in the rule's sentence, shown in the upcoming charges, and honoured by the autopay run against
localstripe (one PaymentIntent for both invoices, on the due date plus the grace days)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.core import autopay
from app.core.clock import FrozenClock
from app.jobs import run_autopay
from app.web import create_app
from tests.autopay_world import engine_services, intents, saved_card
from tests.factories import make_client, make_invoice
from tests.web.conftest import post, sign_in
from tests.web.factories import make_login

CHICAGO = ZoneInfo("America/Chicago")


def _at(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, 0, tzinfo=CHICAGO).astimezone(UTC)


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def world(tmp_path, stripe_double, mail):
    clock = FrozenClock(_at(10, 10))
    s = engine_services(tmp_path, clock, stripe_double, mail)
    client_id = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    method = saved_card(s, stripe_double, client_id)
    card = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (method,))
    make_login(s, "ap@acme.example")
    web = create_app(s).test_client()
    sign_in(web, "ap@acme.example")
    return s, clock, client_id, web, card


def _form(card: str, **over: str) -> dict[str, object]:
    return {"enabled": "on", "method": card, "kinds": ["agreement"], "schedule": "due_date",
            "grace_days": "2", "grouping": "per_client", **over}


def test_grace_days_and_one_charge_per_client_are_saved_shown_and_charged(world, stripe_double):
    s, clock, client_id, web, card = world
    make_invoice(s, "INV-7101", client_remote_id="acme", total_minor=30_000, due_on=date(2026, 3, 10))
    make_invoice(s, "INV-7102", client_remote_id="acme", total_minor=12_345, due_on=date(2026, 3, 10))

    saved = post(web, "/autopay", _form(card))

    assert saved.status_code == 302
    rule = autopay.get_rule(s.store, client_id)
    assert (rule.grace_days, rule.grouping) == (2, "per_client")
    page = _text(web.get("/autopay").get_data(as_text=True))
    assert (
        "Pay agreement invoices 2 days after their due date with Visa •••• 4242, "
        "all invoices due the same day in one charge." in page
    )
    assert "Mar 12, 2026 INV-7101, INV-7102 Visa •••• 4242 $423.45" in page  # one charge, two days later
    form = web.get("/autopay").get_data(as_text=True)
    assert re.search(r'id="grace-days"[^>]*value="2"', form)
    assert 'value="per_client" id="grouping-client" checked' in form

    clock.set(_at(11, 7))  # the day after the due date: still in the grace days
    run_autopay.run(s)
    assert intents(stripe_double, invoices="INV-7101") == []
    assert intents(stripe_double, invoices="INV-7101,INV-7102") == []
    clock.set(_at(12, 7))
    run_autopay.run(s)
    [pi] = intents(stripe_double, invoices="INV-7101,INV-7102")
    assert (pi["amount"], pi["status"]) == (42_345, "succeeded")


@pytest.mark.parametrize(
    ("field", "typed", "error"),
    [
        ("grace_days", "61", "Enter 0 to 60 days."),
        ("grace_days", "two", "Enter 0 to 60 days."),
        ("grouping", "weekly", "Charge each invoice on its own, or all due invoices together."),
    ],
)
def test_a_wrong_grace_or_grouping_is_explained_by_its_field_and_nothing_is_saved(world, field, typed, error):
    s, _clock, client_id, web, card = world
    response = post(web, "/autopay", _form(card, **{field: typed}))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    error_id = "error-grace" if field == "grace_days" else "error-grouping"
    assert f'<p class="field-error" id="{error_id}">{error}</p>' in html
    assert autopay.get_rule(s.store, client_id) is None
