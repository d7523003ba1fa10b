"""A contact of Acme never sees Globex: foreign tokens are 404 everywhere and nothing leaks into pages."""

from __future__ import annotations

import json

import pytest

from tests.web import factories as f
from tests.web.conftest import csrf_token, post, sign_in


@pytest.fixture
def two_companies(svc, acme, globex, dana):
    mine = f.make_invoice(svc, acme, "ACME-1", total_minor=10_000, description="Acme support")
    theirs = f.make_invoice(
        svc,
        globex,
        "GLOBEX-SECRET-1",
        total_minor=777_700,
        description="Globex project X",
        due_on="2026-03-01",
    )
    their_payment = f.make_payment(
        svc, globex, [(theirs, 1_234)], created_at=f.datetime(2026, 3, 9, tzinfo=f.UTC)
    )
    their_pending = f.make_payment(svc, globex, [(theirs, 4_321)], status="pending")
    return mine, theirs, their_payment, their_pending


def test_foreign_tokens_are_404_on_every_route(signed_in, two_companies):
    _, theirs, their_payment, their_pending = two_companies
    gets = [
        f"/invoices/{theirs.token}",
        f"/pay?invoice={theirs.token}",
        f"/payments/{their_payment.token}",
        f"/payments/{their_pending.token}",
        f"/pay/{their_pending.token}",
        f"/pay/{their_payment.token}",
    ]
    for url in gets:
        response = signed_in.get(url)
        assert response.status_code == 404, url
        body = response.get_data(as_text=True)
        assert "GLOBEX" not in body and "Globex" not in body and "7,777" not in body, url
    checkout = post(
        signed_in, "/pay", {"invoice": theirs.token, "action": "checkout", f"amount-{theirs.token}": "10.00"}
    )
    assert checkout.status_code == 404
    confirm = signed_in.post(
        f"/pay/{their_pending.token}/confirm",
        data=json.dumps({"payment_method": "pm_card_visa", "save": False}),
        content_type="application/json",
        headers={"X-CSRFToken": csrf_token(signed_in)},
    )
    assert confirm.status_code == 404
    assert "Globex" not in confirm.get_data(as_text=True)


def test_a_foreign_token_mixed_with_own_ones_is_still_404(signed_in, two_companies):
    mine, theirs, _, _ = two_companies
    assert signed_in.get(f"/pay?invoice={mine.token}&invoice={theirs.token}").status_code == 404


def test_foreign_data_never_appears_in_own_pages(signed_in, two_companies):
    mine, *_ = two_companies
    for url in (
        "/",
        "/invoices?status=all",
        "/invoices?status=all&q=SECRET",
        "/payments",
        f"/invoices/{mine.token}",
        f"/pay?invoice={mine.token}",
        "/pay?all=due",
    ):
        body = signed_in.get(url).get_data(as_text=True)
        assert "GLOBEX" not in body and "Globex" not in body, url
        assert "$7,777.00" not in body and "$12.34" not in body, url
    assert "ACME-1" in signed_in.get("/invoices").get_data(as_text=True)


def test_the_session_company_cannot_be_switched_to_a_company_one_does_not_belong_to(
    signed_in, svc, two_companies, globex
):
    response = post(signed_in, "/switch", {"client": globex.token})
    assert response.status_code == 404
    assert "GLOBEX" not in signed_in.get("/invoices?status=all").get_data(as_text=True)


def test_a_person_in_two_companies_switches_between_them(client, svc, acme, globex, two_companies):
    mine, theirs, _, _ = two_companies
    f.make_person(svc, acme, "pat@example.com")
    f.make_contact(svc, globex, "pat@example.com", role="billing")
    sign_in(client, "pat@example.com")
    home = client.get("/").get_data(as_text=True)
    assert 'id="company-switcher"' in home
    assert "ACME-1" in home and "GLOBEX-SECRET-1" not in home
    assert client.get(f"/invoices/{theirs.token}").status_code == 404

    switched = post(client, "/switch", {"client": globex.token})
    assert switched.headers["Location"] == "/"
    home = client.get("/").get_data(as_text=True)
    assert "GLOBEX-SECRET-1" in home and "ACME-1" not in home
    assert client.get(f"/invoices/{theirs.token}").status_code == 200
    assert client.get(f"/invoices/{mine.token}").status_code == 404


def test_losing_a_company_moves_the_session_to_the_remaining_one(client, svc, acme, globex, two_companies):
    _, theirs, _, _ = two_companies
    f.make_person(svc, acme, "pat@example.com")
    f.make_contact(svc, globex, "pat@example.com", role="billing")
    sign_in(client, "pat@example.com")
    post(client, "/switch", {"client": globex.token})
    with svc.store.write() as db:
        db.execute(
            "UPDATE contacts SET is_active = 0 WHERE client_id = ? AND email = 'pat@example.com'",
            (globex.id,),
        )
    assert client.get(f"/invoices/{theirs.token}").status_code == 404
    assert "ACME-1" in client.get("/").get_data(as_text=True)
