"""The Accounting page and the start of the connect flow, without a vendor: what each role sees,
the consent redirect, state checks in the callback, disconnect and "Book again in accounting"."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from app.core.accounting_tokens import StoreVault, TokenCipher
from app.core.keys import derive_key, hash_token
from app.core.outbox import enqueue
from app.services import Services, build_services
from sync.accounting.oauth import TokenSet
from tests.web import factories
from tests.web.admin.helpers import make_admin, post, sign_in
from tests.web.conftest import web_config

QBO_TOML = """
[accounting]
kind = "quickbooks"

[accounting.quickbooks]
client_id = "ABcdEF0123456789"
client_secret = "qbo-client-secret"
api_base = "http://127.0.0.1:9/v3"
authorize_url = "http://127.0.0.1:9/connect/oauth2"
token_url = "http://127.0.0.1:9/oauth2/v1/tokens/bearer"
bank_account = "Checking"
"""


@pytest.fixture
def svc(tmp_path, clock) -> Services:
    return build_services(
        web_config(tmp_path, base_url="http://pay.northwind.example/", extra=QBO_TOML), clock=clock
    )


def _vault(svc: Services) -> StoreVault:
    return StoreVault(
        svc.store, svc.clock, TokenCipher(svc.config), entity_id=svc.entity_id, kind="quickbooks"
    )


def _connect(client) -> dict[str, list[str]]:
    response = post(client, "/admin/accounting/connect")
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://127.0.0.1:9/connect/oauth2"
    return parse_qs(location.query)


def test_every_role_sees_the_page_and_only_writers_get_the_buttons(svc, as_owner, as_finance, as_readonly):
    for client in (as_owner, as_finance):
        page = client.get("/admin/accounting").get_data(as_text=True)
        assert "QuickBooks Online" in page and "Not connected" in page
        assert 'id="accounting-connect"' in page
        assert "http://pay.northwind.example/admin/accounting/callback" in page
    page = as_readonly.get("/admin/accounting")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Not connected" in text
    assert 'id="accounting-connect"' not in text and 'id="accounting-disconnect"' not in text
    assert 'id="accounting-read-only"' in text
    assert 'id="nav-accounting"' in text


def test_connect_sends_the_admin_to_the_consent_page_with_a_stored_single_state(svc, as_finance):
    query = _connect(as_finance)
    assert query["client_id"] == ["ABcdEF0123456789"]
    assert query["response_type"] == ["code"]
    assert query["scope"] == ["com.intuit.quickbooks.accounting"]
    assert query["redirect_uri"] == ["http://pay.northwind.example/admin/accounting/callback"]
    state = query["state"][0]
    assert len(state) >= 40
    row = svc.store.one("SELECT * FROM accounting_oauth_states")
    assert row["state_hash"] == hash_token(state) and row["used_at"] is None
    assert (
        svc.store.scalar("SELECT COUNT(*) FROM accounting_oauth_states WHERE state_hash = ?", (state,)) == 0
    )
    assert svc.store.scalar("SELECT action FROM audit_log WHERE action LIKE 'accounting.%'") == (
        "accounting.connect_started"
    )


def test_the_callback_refuses_an_unknown_state_and_a_state_of_another_session(
    app: Flask, svc, as_finance, clock
):
    query = _connect(as_finance)
    forged = as_finance.get("/admin/accounting/callback?state=forged&code=abc&realmId=1")
    assert forged.status_code == 400 and "does not belong" in forged.get_data(as_text=True)

    other = sign_in(app.test_client(), make_admin(svc, "second@northwind.example", "owner"), clock)
    foreign = other.get(f"/admin/accounting/callback?state={query['state'][0]}&code=abc&realmId=1")
    assert foreign.status_code == 400 and "another admin session" in foreign.get_data(as_text=True)
    assert svc.store.scalar("SELECT used_at FROM accounting_oauth_states") is None  # still the owner's
    assert _vault(svc).load() is None
    failures = svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'accounting.connect_failed'")
    assert failures == 2


def test_a_vendor_refusal_uses_up_the_state_and_a_replay_is_refused(svc, as_owner):
    state = _connect(as_owner)["state"][0]
    denied = as_owner.get(f"/admin/accounting/callback?state={state}&error=access_denied")
    assert denied.status_code == 400 and "did not grant access: access_denied" in denied.get_data(
        as_text=True
    )
    replay = as_owner.get(f"/admin/accounting/callback?state={state}&code=abc&realmId=1")
    assert replay.status_code == 400 and "already used" in replay.get_data(as_text=True)
    assert _vault(svc).load() is None


def test_an_expired_state_is_refused(svc, as_owner, clock):
    from datetime import timedelta

    state = _connect(as_owner)["state"][0]
    clock.advance(timedelta(minutes=16))
    late = as_owner.get(f"/admin/accounting/callback?state={state}&code=abc&realmId=1")
    assert late.status_code == 400 and "longer than 15 minutes" in late.get_data(as_text=True)


def test_a_callback_without_the_admin_cookie_reloads_itself_same_site(app: Flask, svc):
    # The vendor's redirect is cross-site, so a SameSite=Strict cookie is held back on it.
    bare = app.test_client().get("/admin/accounting/callback?state=s&code=c&realmId=42")
    text = bare.get_data(as_text=True)
    assert bare.status_code == 200 and 'http-equiv="refresh"' in text
    assert "resume=1" in text and "realmId=42" in text and "code=c" in text
    again = app.test_client().get("/admin/accounting/callback?state=s&code=c&realmId=42&resume=1")
    assert again.status_code == 302 and "/admin/login" in again.headers["Location"]


def test_a_read_only_admin_cannot_connect_disconnect_or_finish_a_callback(svc, as_readonly):
    _vault(svc).save(TokenSet("a", "r", svc.clock.utc_now(), "123", "Books"))
    for url in ("/admin/accounting/connect", "/admin/accounting/disconnect", "/admin/accounting/tenant"):
        response = post(as_readonly, url)
        assert response.status_code == 403 and "read-only" in response.get_data(as_text=True), url
    callback = as_readonly.get("/admin/accounting/callback?state=x&code=y&realmId=1")
    assert callback.status_code == 403
    assert svc.store.scalar("SELECT COUNT(*) FROM accounting_oauth_states") == 0
    assert _vault(svc).load() is not None


def test_disconnect_deletes_the_tokens_and_is_audited(svc, as_owner):
    _vault(svc).save(TokenSet("access-x", "refresh-x", svc.clock.utc_now(), "123", "Northwind Books"))
    page = as_owner.get("/admin/accounting").get_data(as_text=True)
    assert (
        "Connected" in page
        and "Northwind Books" in page
        and "refresh-x" not in page
        and "access-x" not in page
    )
    response = post(as_owner, "/admin/accounting/disconnect", follow_redirects=True)
    assert "disconnected" in response.get_data(as_text=True)
    assert _vault(svc).load() is None
    audit = svc.store.one(
        "SELECT actor, action, target FROM audit_log WHERE action = 'accounting.disconnected'"
    )
    assert tuple(audit) == (
        "admin:owner@northwind.example",
        "accounting.disconnected",
        "accounting:quickbooks",
    )


def _succeeded_payment_with_entry(svc: Services):
    acme = factories.make_client(svc, "Acme Dental LLC")
    a1 = factories.make_invoice(svc, acme, "A1", total_minor=10_000)
    pay = factories.make_payment(svc, acme, [(a1, 10_000)])
    with svc.store.write() as db:
        enqueue(
            db,
            svc.clock,
            kind="journal_payment",
            key=derive_key("journal", payment=pay.id),
            payload={"payment_id": pay.id, "payment_token": pay.token, "amount_minor": 10_000},
        )
        db.execute("UPDATE outbox SET status = 'done'")
    return pay


def test_book_again_enqueues_a_new_key_each_time_and_is_audited(svc, as_finance):
    pay = _succeeded_payment_with_entry(svc)
    page = as_finance.get(f"/admin/payments/{pay.id}").get_data(as_text=True)
    assert 'id="book-again"' in page
    response = post(as_finance, f"/admin/payments/{pay.id}/book-again", follow_redirects=True)
    assert "queued to be booked again" in response.get_data(as_text=True)
    again = post(as_finance, f"/admin/payments/{pay.id}/book-again", follow_redirects=True)
    assert "already waiting to be booked" in again.get_data(as_text=True)

    rows = svc.store.all(
        "SELECT idem_key, status, payload_json FROM outbox WHERE kind = 'journal_payment' ORDER BY id"
    )
    assert [r["idem_key"] for r in rows] == [
        derive_key("journal", payment=pay.id),
        derive_key("journal", payment=pay.id, generation=2),
    ]
    assert json.loads(rows[1]["payload_json"]) == {
        "payment_id": pay.id,
        "payment_token": pay.token,
        "amount_minor": 10_000,
        "generation": 2,
    }
    audit = svc.store.one(
        "SELECT actor, target, detail_json FROM audit_log WHERE action = 'payment.booked_again'"
    )
    assert audit["actor"] == "admin:finance@northwind.example" and audit["target"] == f"payment:{pay.id}"
    assert json.loads(audit["detail_json"])["generation"] == 2


def test_a_read_only_admin_cannot_book_again(svc, as_readonly):
    pay = _succeeded_payment_with_entry(svc)
    assert 'id="book-again"' not in as_readonly.get(f"/admin/payments/{pay.id}").get_data(as_text=True)
    response = post(as_readonly, f"/admin/payments/{pay.id}/book-again")
    assert response.status_code == 403
    assert svc.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'journal_payment'") == 1


def test_the_journal_kind_shows_its_file_and_no_connect_button(tmp_path, clock):
    svc = build_services(web_config(tmp_path), clock=clock)
    from app.web import create_app

    client = sign_in(create_app(svc).test_client(), make_admin(svc, "o@northwind.example", "owner"), clock)
    page = client.get("/admin/accounting").get_data(as_text=True)
    assert "The journal export" in page and str(svc.config.journal_path) in page
    assert 'id="accounting-connect"' not in page
    assert post(client, "/admin/accounting/connect").status_code == 404
    pay = _succeeded_payment_with_entry(svc)
    assert 'id="book-again"' not in client.get(f"/admin/payments/{pay.id}").get_data(as_text=True)
    assert post(client, f"/admin/payments/{pay.id}/book-again").status_code == 404
    assert svc.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'journal_payment'") == 1
