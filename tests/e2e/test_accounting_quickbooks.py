"""QuickBooks Online end to end: the admin connects through the OAuth flow, portal payments go
through the real outbox (drain_outbox.run) into the QBO fake, tokens refresh on their own, a
revoked connection parks the entries behind one admin exception until a reconnect, a missing
invoice is an exception that "Retry" re-runs, and "Book again" after a deletion gives a live id."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from app.core.accounting_tokens import StoreVault, TokenCipher
from app.jobs import drain_outbox
from app.services import Services, build_services
from app.web import create_app
from tests.conftest import make_config
from tests.e2e.accounting_world import (
    AuthorizationFront,
    accounting_entries,
    connect,
    invoice_token,
    pay,
)
from tests.factories import make_client, make_invoice
from tests.fakes.qbo import REALM, QboFake
from tests.web.admin.helpers import make_admin, post, sign_in


@pytest.fixture
def qbo():
    with QboFake() as fake:
        yield fake


@pytest.fixture
def front(qbo, frozen_clock):
    with AuthorizationFront(
        qbo.client_id,
        qbo.client_secret,
        qbo.issue_tokens,
        qbo.token_url,
        frozen_clock,
        extra={"realmId": REALM},
    ) as f:
        yield f


@pytest.fixture
def svc(tmp_path, frozen_clock, stripe_double, mail, qbo, front) -> Services:
    extra = f"""
[accounting]
kind = "quickbooks"

[accounting.quickbooks]
client_id = "{qbo.client_id}"
client_secret = "{qbo.client_secret}"
api_base = "{qbo.api_base}"
authorize_url = "{front.authorize_url}"
token_url = "{front.token_url}"
bank_account = "Checking"
timeout_seconds = 2
"""
    cfg = make_config(tmp_path, stripe_base=stripe_double.api_base, smtp_port=mail.port, extra=extra)
    return build_services(cfg, clock=frozen_clock)


@pytest.fixture
def admin(svc):
    return make_admin(svc, "finance@northwind.example", "finance")


@pytest.fixture
def finance(svc, admin, frozen_clock):
    return sign_in(create_app(svc).test_client(), admin, frozen_clock)


@pytest.fixture
def contoso(svc, qbo):
    """Contoso with four invoices in Cashloop and the same four in QuickBooks."""
    client_id = make_client(svc, "250", "Contoso Dental LLC")
    customer = qbo.add_customer("Contoso Dental LLC")
    for number, minor in (("INV-101", 10_000), ("INV-102", 10_000), ("INV-103", 12_000), ("INV-104", 30_000)):
        make_invoice(svc, number, total_minor=minor)
        qbo.add_invoice(number, customer, f"{Decimal(minor) / 100:.2f}")
    return client_id


def _vault(svc: Services) -> StoreVault:
    return StoreVault(
        svc.store, svc.clock, TokenCipher(svc.config), entity_id=svc.entity_id, kind="quickbooks"
    )


def _refs(svc: Services) -> dict[int, str]:
    rows = svc.store.all(
        "SELECT local_id, remote_id FROM external_refs WHERE kind = 'journal_payment' "
        "AND system = 'quickbooks'"
    )
    return {r[0]: r[1] for r in rows}


def _raw_db(svc: Services) -> bytes:
    svc.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return b"".join(p.read_bytes() for p in svc.config.db_path.parent.glob("cashloop.db*"))


def _open_connection_exceptions(svc: Services) -> list:
    return svc.store.all(
        "SELECT * FROM exceptions WHERE kind = 'accounting_connection' AND resolved_at IS NULL"
    )


def test_connecting_stores_the_realm_and_encrypted_tokens(svc, finance, front, qbo):
    done = connect(finance, front)
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/accounting")
    assert front.consents[0]["scope"] == "com.intuit.quickbooks.accounting"
    assert front.exchanges[0]["redirect_uri"] == "http://127.0.0.1:8080/admin/accounting/callback"
    tokens = _vault(svc).load()
    assert tokens is not None and tokens.tenant_id == REALM
    raw = _raw_db(svc)
    assert tokens.access_token.encode() not in raw and tokens.refresh_token.encode() not in raw
    page = finance.get("/admin/accounting").get_data(as_text=True)
    assert "Connected" in page and REALM in page and tokens.access_token not in page
    actions = [
        r[0]
        for r in svc.store.all("SELECT action FROM audit_log WHERE action LIKE 'accounting.%' ORDER BY id")
    ]
    assert actions == ["accounting.connect_started", "accounting.connected"]


def test_the_callback_cannot_be_replayed_after_a_successful_connect(svc, finance, front):
    start = post(finance, "/admin/accounting/connect")
    callback = front.consent(start.headers["Location"])
    path = callback.removeprefix("http://127.0.0.1:8080")
    assert finance.get(path).status_code == 302
    first = _vault(svc).load()
    replay = finance.get(path)
    assert replay.status_code == 400 and "already used" in replay.get_data(as_text=True)
    assert _vault(svc).load() == first and len(front.exchanges) == 1


def test_a_portal_payment_over_three_invoices_lands_as_one_qbo_payment(
    svc, finance, front, qbo, contoso, stripe_double
):
    connect(finance, front)
    payment_id = pay(
        svc,
        stripe_double,
        contoso,
        [
            (invoice_token(svc, "INV-101"), 10_000),
            (invoice_token(svc, "INV-102"), 10_000),
            (invoice_token(svc, "INV-103"), 5_000),
        ],
    )
    report = drain_outbox.run(svc)
    assert report.dead == 0 and report.parked == 0

    [booked] = qbo.live(qbo.payments)
    assert booked["TotalAmt"] == Decimal("250.00")
    lines = sorted((line["LinkedTxn"][0]["TxnId"], line["Amount"]) for line in booked["Line"])
    ids = {n: qbo.invoice(n)["Id"] for n in ("INV-101", "INV-102", "INV-103")}
    assert lines == sorted(
        [
            (ids["INV-101"], Decimal("100.00")),
            (ids["INV-102"], Decimal("100.00")),
            (ids["INV-103"], Decimal("50.00")),
        ]
    )
    assert qbo.invoice("INV-103")["Balance"] == Decimal("70.00")
    assert qbo.invoice("INV-101")["Balance"] == Decimal("0.00")
    assert _refs(svc) == {payment_id: str(booked["Id"])}
    assert [tuple(e)[1:4] for e in accounting_entries(svc)] == [("journal_payment", "done", 1)]
    assert qbo.violations == []


def test_token_expiry_mid_run_refreshes_saves_the_rotated_token_and_goes_on(
    svc, finance, front, qbo, contoso, stripe_double, frozen_clock
):
    connect(finance, front)
    first = _vault(svc).load()
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-101"), 10_000)])
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-102"), 10_000)])
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-104"), 30_000)])

    while not qbo.live(qbo.payments):  # one entry at a time until the first payment is booked
        assert drain_outbox.run(svc, limit=1).done == 1
    assert len(qbo.live(qbo.payments)) == 1
    qbo.expire_access_tokens()  # QBO stops taking the access token before its stated expiry
    report = drain_outbox.run(svc)
    assert report.dead == 0 and report.retried == 0
    second = _vault(svc).load()
    assert second.access_token != first.access_token and second.refresh_token != first.refresh_token

    frozen_clock.advance(timedelta(minutes=58))  # within 5 minutes of expiry: refreshed before use
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-103"), 12_000)])
    assert drain_outbox.run(svc).dead == 0
    third = _vault(svc).load()
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    assert third.expires_at == frozen_clock.utc_now() + timedelta(hours=1)

    assert len(qbo.live(qbo.payments)) == 4
    assert {e["status"] for e in accounting_entries(svc)} == {"done"}
    refreshes = [r for r in qbo.requests if r.path == "/oauth2/v1/tokens/bearer"]
    assert [r.body["grant_type"] for r in refreshes] == ["refresh_token", "refresh_token"]
    raw = _raw_db(svc)
    for t in (second, third):
        assert t.refresh_token.encode() not in raw and t.access_token.encode() not in raw
    row = svc.store.one("SELECT expires_at, status FROM accounting_connections")
    assert row["status"] == "connected" and row["expires_at"].startswith(
        (frozen_clock.utc_now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    )
    assert qbo.violations == []


def test_a_revoked_connection_parks_every_entry_behind_one_exception_until_reconnected(
    svc, finance, admin, front, qbo, contoso, stripe_double, frozen_clock
):
    connect(finance, front)
    qbo.revoke_refresh_tokens()
    qbo.expire_access_tokens()
    paid = [
        pay(svc, stripe_double, contoso, [(invoice_token(svc, n), m)])
        for n, m in (("INV-101", 10_000), ("INV-102", 10_000), ("INV-104", 30_000))
    ]

    for _ in range(svc.config.outbox.max_attempts + 2):  # more drains than attempts: never dead
        report = drain_outbox.run(svc)
        assert report.dead == 0
        frozen_clock.advance(timedelta(seconds=svc.config.outbox.park_seconds + 1))
    entries = accounting_entries(svc)
    assert [(e["kind"], e["status"], e["attempts"]) for e in entries] == [
        ("journal_payment", "pending", 0)
    ] * 3
    assert all(e["parked_at"] and "waiting for the accounting connection" in e["last_error"] for e in entries)
    [exc] = _open_connection_exceptions(svc)
    assert exc["ref"] == f"quickbooks:{svc.entity_id}" and "connected again" in exc["summary"]
    assert svc.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'outbox_dead'") == 0
    assert svc.store.scalar("SELECT status FROM accounting_connections") == "revoked"
    token_calls = [r for r in qbo.requests if r.path == "/oauth2/v1/tokens/bearer"]
    assert len(token_calls) == 1  # refused once; after that the entries wait without calling QBO
    finance = sign_in(create_app(svc).test_client(), admin, frozen_clock)  # the old session timed out
    page = finance.get("/admin/accounting").get_data(as_text=True)
    assert "access was withdrawn" in page and 'id="accounting-waiting">3' in page
    queue = finance.get("/admin/exceptions").get_data(as_text=True)
    assert queue.count("Accounting needs reconnecting") == 1
    assert qbo.live(qbo.payments) == []

    assert connect(finance, front).status_code == 302
    report = drain_outbox.run(svc)  # the clock has not moved: the waiting entries were due at once
    assert report.done >= 3 and report.dead == 0
    assert [(e["status"], e["attempts"], e["parked_at"]) for e in accounting_entries(svc)] == [
        ("done", 1, None)
    ] * 3
    assert set(_refs(svc)) == set(paid) and len(qbo.live(qbo.payments)) == 3
    assert _open_connection_exceptions(svc) == []
    detail = json.loads(
        svc.store.scalar(
            "SELECT detail_json FROM audit_log WHERE action = 'accounting.connected' ORDER BY id DESC LIMIT 1"
        )
    )
    assert detail["waiting_entries"] == 3
    assert qbo.violations == []


def test_a_second_revocation_reopens_the_same_single_exception(
    svc, finance, front, qbo, contoso, stripe_double
):
    connect(finance, front)
    qbo.revoke_refresh_tokens()
    qbo.expire_access_tokens()
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-101"), 10_000)])
    drain_outbox.run(svc)
    connect(finance, front)
    drain_outbox.run(svc)
    assert _open_connection_exceptions(svc) == []

    qbo.revoke_refresh_tokens()
    qbo.expire_access_tokens()
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-102"), 10_000)])
    drain_outbox.run(svc)
    assert len(_open_connection_exceptions(svc)) == 1
    assert svc.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'accounting_connection'") == 1


def test_an_invoice_missing_in_qbo_is_an_exception_that_retry_reruns(svc, finance, front, qbo, stripe_double):
    client_id = make_client(svc, "250", "Contoso Dental LLC")
    customer = qbo.add_customer("Contoso Dental LLC")
    make_invoice(svc, "INV-900", total_minor=45_000)
    connect(finance, front)
    payment_id = pay(svc, stripe_double, client_id, [(invoice_token(svc, "INV-900"), 45_000)])
    drain_outbox.run(svc)

    [entry] = accounting_entries(svc)
    assert entry["status"] == "dead"
    [exc] = svc.store.all("SELECT * FROM exceptions WHERE kind = 'accounting_match'")
    assert exc["ref"] == str(entry["id"]) and "INV-900" in exc["summary"] and "no invoice" in exc["summary"]
    queue = finance.get("/admin/exceptions").get_data(as_text=True)
    assert "Invoice not found in accounting" in queue and f"/admin/outbox/{entry['id']}/retry" in queue

    qbo.add_invoice("INV-900", customer, "450.00")  # the bookkeeper enters the invoice in QBO
    retried = post(finance, f"/admin/outbox/{entry['id']}/retry")
    assert retried.status_code == 302
    drain_outbox.run(svc)
    assert accounting_entries(svc)[0]["status"] == "done"
    assert qbo.invoice("INV-900")["Balance"] == Decimal("0.00")
    assert _refs(svc) == {payment_id: str(qbo.live(qbo.payments)[0]["Id"])}
    assert svc.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'accounting_match'") == 0
    assert qbo.violations == []


def test_book_again_after_the_payment_was_deleted_in_qbo_maps_a_new_live_id(
    svc, finance, front, qbo, contoso, stripe_double
):
    connect(finance, front)
    payment_id = pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-104"), 30_000)])
    drain_outbox.run(svc)
    old_id = _refs(svc)[payment_id]
    qbo.delete_payment(old_id)  # a bookkeeper deletes it; INV-104 is open again in QBO
    assert qbo.invoice("INV-104")["Balance"] == Decimal("300.00")

    response = post(finance, f"/admin/payments/{payment_id}/book-again", follow_redirects=True)
    assert "queued to be booked again" in response.get_data(as_text=True)
    drain_outbox.run(svc)

    live = qbo.live(qbo.payments)
    assert len(live) == 1 and str(live[0]["Id"]) != old_id
    assert _refs(svc) == {payment_id: str(live[0]["Id"])}
    assert qbo.invoice("INV-104")["Balance"] == Decimal("0.00")
    assert [e["status"] for e in accounting_entries(svc)] == ["done", "done"]
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'payment.booked_again'") == 1
    assert qbo.violations == []


def test_never_connected_parks_payments_and_reversals_without_calling_qbo(svc, contoso, qbo, stripe_double):
    from app.core.outbox import enqueue

    payment_id = pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-101"), 10_000)])
    token = svc.store.scalar("SELECT token FROM payments WHERE id = ?", (payment_id,))
    with svc.store.write() as db:
        enqueue(
            db,
            svc.clock,
            kind="journal_reversal",
            key="test-reversal-1",
            payload={
                "kind": "refund",
                "reference": "rf_test",
                "payment_token": token,
                "processor_ref": None,
                "method": "card",
                "occurred_on": "2026-03-10",
                "currency": "USD",
                "amount_minor": 2_500,
                "surcharge_minor": 0,
                "client_name": "Contoso Dental LLC",
                "client_remote_id": "250",
                "allocations": [["INV-101", 2_500]],
            },
        )
    report = drain_outbox.run(svc)
    assert report.parked == 2 and report.dead == 0
    entries = accounting_entries(svc)
    assert [(e["kind"], e["status"], e["attempts"]) for e in entries] == [
        ("journal_payment", "pending", 0),
        ("journal_reversal", "pending", 0),
    ]
    assert all("not connected" in e["last_error"] for e in entries)
    [exc] = _open_connection_exceptions(svc)
    assert "QuickBooks Online needs to be connected again" in exc["summary"]
    assert qbo.requests == []
