"""The admin's side: extra recipients and the monthly statement on the client's overrides form (a bad
address is named and nothing is saved), and the previews of the new email templates."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from app.core import statements_mail
from app.core.client_overrides import get_overrides
from app.core.clock import FrozenClock
from app.services import Services
from tests.web.admin.helpers import make_admin, post
from tests.web.admin.helpers import sign_in as admin_sign_in


def _finance(app: Flask, svc: Services, clock: FrozenClock) -> FlaskClient:
    return admin_sign_in(app.test_client(), make_admin(svc, "finance@northwind.example", "finance"), clock)


def test_extra_recipients_and_the_monthly_statement_are_set_on_the_overrides_form(app, svc, clock, acme):
    admin = _finance(app, svc, clock)
    page = admin.get(f"/admin/clients/{acme.id}").text
    assert '<label for="extra_recipients">' in page and 'id="statement_monthly"' in page

    bad = post(
        admin,
        f"/admin/clients/{acme.id}/overrides",
        {
            "autopay_allowed": "1",
            "extra_recipients": "books@cpa.example\nnot-an-address",
            "statement_monthly": "1",
        },
    )
    assert bad.status_code == 400
    assert "Extra recipients: &#39;not-an-address&#39; is not an email address." in bad.text
    assert "not-an-address</textarea>" in bad.text  # what was typed is kept
    assert get_overrides(svc.store.db, acme.id).extra_recipients == ()
    assert not statements_mail.is_subscribed(svc.store.db, acme.id)

    ok = post(
        admin,
        f"/admin/clients/{acme.id}/overrides",
        {
            "autopay_allowed": "1",
            "extra_recipients": "books@cpa.example, ops@acme.example",
            "statement_monthly": "1",
        },
    )
    assert ok.status_code == 302
    assert get_overrides(svc.store.db, acme.id).extra_recipients == ("books@cpa.example", "ops@acme.example")
    assert statements_mail.is_subscribed(svc.store.db, acme.id)
    actions = [
        r[0] for r in svc.store.all("SELECT action FROM audit_log WHERE target = ?", (f"client:{acme.id}",))
    ]
    assert actions == ["client.overrides_changed", "client.statement_email_on"]
    page = admin.get(f"/admin/clients/{acme.id}").text
    assert "books@cpa.example\nops@acme.example</textarea>" in page


def test_a_refused_extra_address_is_shown_on_the_client_page(app, svc, clock, acme):
    admin = _finance(app, svc, clock)
    post(
        admin,
        f"/admin/clients/{acme.id}/overrides",
        {"autopay_allowed": "1", "extra_recipients": "gone@cpa.example"},
    )
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO email_refusals (address, refused_at, reason) VALUES "
            "('gone@cpa.example', '2026-03-09T15:00:00.000000Z', '550 no such user')"
        )
    page = admin.get(f"/admin/clients/{acme.id}").text
    assert "gone@cpa.example was refused by the mail server on" in page


def test_the_new_templates_have_previews(app, svc, clock):
    admin = _finance(app, svc, clock)
    for name, words in (
        ("statement", "Statement for March 2026"),
        ("autopay_skipped", "Automatic payment skipped"),
    ):
        page = admin.get(f"/admin/email-templates/{name}")
        assert page.status_code == 200, name
        html = admin.get(f"/admin/email-templates/{name}/html").text
        assert words in html and "Northwind IT" in html
