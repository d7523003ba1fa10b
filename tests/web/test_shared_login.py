"""One person, several unrelated companies: one login, the switcher, "All my companies", one
company per charge, and reminders and receipts that each name the company they are about.

The reminders go through the real SMTP sink, and their links are followed like a person would.
"""

from __future__ import annotations

import json
import re

import pytest

from app.core import emails, payments
from app.core.clock import FrozenClock
from app.jobs import drain_outbox, send_reminders
from app.services import build_services
from app.web import create_app
from tests.conftest import make_config
from tests.web import factories as f
from tests.web.conftest import post, sign_in

PAT = "pat@books.example"


@pytest.fixture
def world(tmp_path, frozen_clock: FrozenClock, mail):
    # 10:00 on Tuesday 2026-03-10 in Chicago: past the 09:00 send time, and the due-day step is due.
    svc = build_services(make_config(tmp_path, smtp_port=mail.port), clock=frozen_clock)
    acme = f.make_client(svc, "Acme Dental LLC")
    zenith = f.make_client(svc, "Zenith Labs Inc")
    globex = f.make_client(svc, "Globex Corporation")
    f.make_person(svc, acme, PAT)
    f.make_contact(svc, zenith, PAT, first_name="Pat")
    f.make_contact(svc, globex, "ops@globex.example")
    inv = {
        "ACME-7": f.make_invoice(svc, acme, "ACME-7", total_minor=12_500, due_on="2026-03-10"),
        "ZEN-3": f.make_invoice(svc, zenith, "ZEN-3", total_minor=48_000, due_on="2026-03-10"),
        "GLOBEX-9": f.make_invoice(svc, globex, "GLOBEX-9", total_minor=99_900, due_on="2026-03-10"),
    }
    return svc, create_app(svc), acme, zenith, globex, inv


def test_one_login_switches_between_two_companies_and_never_sees_a_third(world):
    _, app, _, zenith, globex, inv = world
    client = app.test_client()
    sign_in(client, PAT)
    home = client.get("/").get_data(as_text=True)
    assert re.findall(r'<option value="[^"]+"(?: selected)?>([^<]+)</option>', home) == [
        "Acme Dental LLC",
        "Zenith Labs Inc",
    ]
    assert "ACME-7" in home and "ZEN-3" not in home
    post(client, "/switch", {"client": zenith.token})
    home = client.get("/").get_data(as_text=True)
    assert "ZEN-3" in home and "ACME-7" not in home
    assert client.get(f"/invoices/{inv['ACME-7'].token}").status_code == 404  # acting for Zenith now
    assert post(client, "/switch", {"client": globex.token}).status_code == 404
    assert "GLOBEX" not in client.get("/invoices?status=all").get_data(as_text=True)


def test_all_my_companies_lists_each_companys_open_invoices_and_pays_one_company_at_a_time(world):
    svc, app, acme, zenith, globex, inv = world
    client = app.test_client()
    sign_in(client, PAT)
    page = client.get("/companies").get_data(as_text=True)
    assert 'id="nav-companies"' in page
    assert re.findall(r'class="company-name">([^<]+)</h2>', page) == ["Acme Dental LLC", "Zenith Labs Inc"]
    assert "ACME-7" in page and "ZEN-3" in page and "GLOBEX" not in page and "Globex" not in page
    assert "Each payment is for one company, or for a parent company together" in page
    assert re.search(r'id="overall-balance-USD">\$605\.00<', page)
    assert f'id="pay-{acme.token}"' in page and f'id="pay-{zenith.token}"' in page
    # Paying Zenith's invoice from this page acts for Zenith.
    chosen = post(client, "/companies/pay", {"company": zenith.token, "invoice": [inv["ZEN-3"].token]})
    assert chosen.status_code == 302 and inv["ZEN-3"].token in chosen.headers["Location"]
    form = client.get(chosen.headers["Location"])
    assert form.status_code == 200 and "ZEN-3" in form.get_data(as_text=True)
    assert "Zenith Labs Inc" in client.get("/").get_data(as_text=True)
    # Two unrelated companies in one charge: refused, and nothing is written.
    mixed = post(
        client,
        "/companies/pay",
        {"company": acme.token, "invoice": [inv["ACME-7"].token, inv["ZEN-3"].token]},
        follow_redirects=True,
    )
    assert mixed.status_code == 404
    assert (
        post(
            client, "/pay", {"invoice": [inv["ACME-7"].token, inv["ZEN-3"].token], "action": "checkout"}
        ).status_code
        == 404
    )
    assert (
        post(
            client, "/companies/pay", {"company": globex.token, "invoice": [inv["GLOBEX-9"].token]}
        ).status_code
        == 404
    )
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0


def test_each_company_sends_its_own_reminder_and_its_link_signs_in_for_that_company(world, mail):
    svc, app, acme, zenith, _, _ = world
    report = send_reminders.run(svc)
    assert report.messages == 3  # Acme's and Zenith's to Pat, Globex's to its own contact
    drain_outbox.run(svc)
    messages = [m for m in mail.wait_for(3) if PAT in m["To"]]
    assert len(messages) == 2
    by_company = {}
    for m in messages:
        body = m.get_body(("plain",)).get_content()
        name = "Acme Dental LLC" if "for Acme Dental LLC" in body else "Zenith Labs Inc"
        by_company[name] = body
    acme_body, zen_body = by_company["Acme Dental LLC"], by_company["Zenith Labs Inc"]
    assert "ACME-7" in acme_body and "ZEN-3" not in acme_body and "Zenith" not in acme_body
    assert "ZEN-3" in zen_body and "ACME-7" not in zen_body and "Acme" not in zen_body
    assert "GLOBEX" not in acme_body + zen_body
    for name, body, token, number in (
        ("Zenith Labs Inc", zen_body, zenith.token, "ZEN-3"),
        ("Acme Dental LLC", acme_body, acme.token, "ACME-7"),
    ):
        link = re.search(r"http://\S+/magic/\S+", body).group(0)
        assert link.endswith(f"?company={token}"), link
        path = link.split("://", 1)[1].split("/", 1)[1]
        client = app.test_client()
        confirm = client.get(f"/{path}").get_data(as_text=True)
        assert f"company={token}" in confirm
        signed = post(client, f"/{path}")
        assert signed.status_code == 302
        home = client.get("/").get_data(as_text=True)
        assert f"<h1>{name}</h1>" in home and number in home, name


def test_a_link_naming_a_company_the_person_is_not_a_contact_of_falls_back_to_their_own(world):
    svc, app, _, _, globex, _ = world
    with svc.store.write() as db:
        from app.core import logins

        logins.issue_magic_link(db, svc.clock, email=PAT, base_url="http://x", minutes=10)
    payload = json.loads(svc.store.scalar("SELECT payload_json FROM outbox ORDER BY id DESC LIMIT 1"))
    path = payload["context"]["link"].removeprefix("http://x")
    client = app.test_client()
    client.get(path)
    assert post(client, f"{path}?company={globex.token}").status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert "<h1>Acme Dental LLC</h1>" in home and "GLOBEX" not in home


def test_the_receipt_names_the_company_that_was_paid_not_the_persons_first(world):
    svc, app, _, zenith, _, inv = world
    client = app.test_client()
    sign_in(client, PAT)
    post(client, "/switch", {"client": zenith.token})
    token = inv["ZEN-3"].token
    started = post(
        client,
        "/pay",
        {"invoice": [token], "action": "checkout", "method": "card", f"amount-{token}": "480.00"},
    )
    assert started.status_code == 302, started.get_data(as_text=True)
    pay = svc.store.one("SELECT * FROM payments ORDER BY id DESC LIMIT 1")
    assert pay["client_id"] == zenith.id
    payments.record_intent(
        svc.store,
        svc.clock,
        payment_id=pay["id"],
        intent_id="pi_zen",
        amount_minor=48_000,
        processor_status="succeeded",
        currency="usd",
        base_url="http://x",
        timezone=svc.config.tz,
    )
    [receipt] = [
        json.loads(r["payload_json"])
        for r in svc.store.all(
            "SELECT payload_json FROM outbox WHERE kind = 'email' AND payload_json LIKE '%\"receipt\"%'"
        )
    ]
    assert receipt["to"] == [PAT] and receipt["context"]["client_name"] == "Zenith Labs Inc"
    assert receipt["context"]["companies"] == []  # one company: no company list
    text = emails.render(
        "receipt", receipt["context"], branding=svc.config.branding, base_url="http://x"
    ).text
    assert "for Zenith Labs Inc." in text and "Acme" not in text and "- ZEN-3: $480.00 applied" in text
