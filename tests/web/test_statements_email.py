"""Statements from the portal: "Email me my statement" through the outbox to the aiosmtpd sink (one
message for a double click, the PDF attached), and the monthly opt-in a billing contact sets."""

from __future__ import annotations

import dataclasses
import re

import pytest

from app.core import statements_mail
from app.jobs import drain_outbox
from app.services import Services
from app.web import create_app
from tests.web import factories as f
from tests.web.conftest import post, sign_in
from tests.web.test_documents_and_people import pdf_text


@pytest.fixture
def mailing(svc: Services, mail) -> Services:
    """The web test's services, sending to the SMTP sink."""
    email = dataclasses.replace(svc.config.email, port=mail.port, security="none")
    svc.config = dataclasses.replace(svc.config, email=email)
    return svc


@pytest.fixture
def web(mailing: Services):
    return create_app(mailing).test_client()


def _request_id(page: str) -> str:
    found = re.search(r'name="request_id" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_email_me_my_statement_sends_one_pdf_for_a_double_click(web, mailing, acme, dana, mail, tmp_path):
    f.make_invoice(mailing, acme, "INV-FEB", total_minor=20_000, issued_on="2026-02-03", due_on="2026-03-05")
    sign_in(web, dana)
    page = web.get("/statements").get_data(as_text=True)
    assert '<label for="email-month">Month</label>' in page and 'id="email-statement"' in page
    request_id = _request_id(page)

    for _ in range(2):  # the double click: the same form twice
        response = post(web, "/statements/email", {"month": "2026-02", "request_id": request_id})
        assert response.status_code == 302
    confirmation = web.get("/statements").get_data(as_text=True)
    assert "The February 2026 statement is on its way to dana@acme.example" in confirmation
    assert mailing.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'email'") == 1
    drain_outbox.run(mailing)

    [msg] = mail.wait_for(1)
    assert msg["To"] == "dana@acme.example"
    assert msg["Subject"] == "Your Northwind IT statement for February 2026"
    [part] = list(msg.iter_attachments())
    assert (part.get_filename(), part.get_content_type()) == ("statement-2026-02.pdf", "application/pdf")
    text = pdf_text(part.get_content(), tmp_path)
    assert "Statement for February 2026" in text and "INV-FEB" in text and "Acme Dental LLC" in text
    body = msg.get_body(("plain",)).get_content()
    assert "statement-2026-02.pdf" in body and "http://portal.test/statements/2026-02" in body

    # A new visit of the page is a new request: it sends again.
    post(
        web, "/statements/email", {"month": "2026-02", "request_id": _request_id(web.get("/statements").text)}
    )
    assert mailing.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'email'") == 2


def test_a_month_without_a_statement_is_refused_with_a_message(web, mailing, acme, dana):
    f.make_invoice(mailing, acme, "INV-MAR", issued_on="2026-03-02")
    sign_in(web, dana)
    for month in ("2026-02", "2026-04", "garbage", ""):
        response = post(web, "/statements/email", {"month": month, "request_id": "r1"})
        assert response.status_code == 302
    assert "Choose a month from the list to email its statement." in web.get("/statements").text
    assert mailing.store.scalar("SELECT COUNT(*) FROM outbox") == 0


def test_a_billing_contact_opts_in_to_the_monthly_statement_and_a_viewer_cannot(web, mailing, acme, dana):
    f.make_invoice(mailing, acme, "INV-MAR", issued_on="2026-03-02")
    f.make_person(mailing, acme, "viewer@acme.example", role="viewer")
    sign_in(web, dana)
    page = web.get("/statements").text
    assert 'id="statement-monthly"' in page and " checked" not in page.split('id="statement-monthly"')[1][:40]
    post(web, "/statements/subscription", {"monthly": "on"})
    page = web.get("/statements").text
    assert "on the 1st of each month your billing contacts get the previous month" in page
    assert statements_mail.is_subscribed(mailing.store.db, acme.id)
    audit = mailing.store.one("SELECT actor, action, target FROM audit_log ORDER BY id DESC LIMIT 1")
    assert tuple(audit) == ("login:dana@acme.example", "client.statement_email_on", f"client:{acme.id}")

    viewer = create_app(mailing).test_client()
    sign_in(viewer, "viewer@acme.example")
    assert "The previous month's statement is emailed" in viewer.get("/statements").text
    assert post(viewer, "/statements/subscription", {}).status_code == 403
    assert statements_mail.is_subscribed(mailing.store.db, acme.id)

    post(web, "/statements/subscription", {})
    assert not statements_mail.is_subscribed(mailing.store.db, acme.id)
