"""Xero end to end: connecting through the admin (one organisation, or a pick among several),
payments through the real outbox into the Xero fake as one batch, refresh with rotated tokens,
revocation parking the entries until a reconnect, "Book again" after a deletion, and a Stripe
payout booked as one bank transfer plus its fee line."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from app.core import payouts
from app.core.accounting_tokens import StoreVault, TokenCipher
from app.jobs import drain_outbox
from app.services import Services, build_services
from app.web import create_app
from tests.conftest import make_config
from tests.e2e.accounting_world import accounting_entries, invoice_token, pay
from tests.factories import make_client, make_invoice
from tests.fakes._spec import LoopbackServer
from tests.fakes.xero import XeroFake
from tests.web.admin.helpers import make_admin, post, sign_in

SCOPE = "offline_access accounting.transactions accounting.contacts accounting.settings.read"


@pytest.fixture
def xero(frozen_clock):
    with XeroFake(now=frozen_clock.utc_now) as fake:
        yield fake


def _config(tmp_path, stripe_double, mail, xero: XeroFake, *, connections_url: str | None = None):
    extra = f"""
[accounting]
kind = "xero"

[accounting.xero]
client_id = "{xero.client_id}"
client_secret = "{xero.client_secret}"
api_base = "{xero.api_base}"
connections_url = "{connections_url or xero.connections_url}"
authorize_url = "{xero.base_url}/identity/connect/authorize"
token_url = "{xero.token_url}"
clearing_account = "090"
bank_account = "091"
fee_account = "404"
surcharge_account = "260"
timeout_seconds = 2
"""
    return make_config(tmp_path, stripe_base=stripe_double.api_base, smtp_port=mail.port, extra=extra)


@pytest.fixture
def svc(tmp_path, frozen_clock, stripe_double, mail, xero) -> Services:
    return build_services(_config(tmp_path, stripe_double, mail, xero), clock=frozen_clock)


@pytest.fixture
def admin(svc):
    return make_admin(svc, "owner@northwind.example", "owner")


@pytest.fixture
def owner(svc, admin, frozen_clock):
    return sign_in(create_app(svc).test_client(), admin, frozen_clock)


@pytest.fixture
def contoso(svc, xero):
    client_id = make_client(svc, "250", "Contoso Dental LLC")
    for number, minor in (("INV-101", 10_000), ("INV-102", 10_000), ("INV-103", 12_000), ("INV-104", 30_000)):
        make_invoice(svc, number, total_minor=minor)
        xero.add_invoice(number, f"{Decimal(minor) / 100:.2f}", contact="Contoso Dental LLC")
    return client_id


def connect(client, xero: XeroFake) -> Any:
    """Connect, allow at Xero (which hands out a code for our redirect URI), come back."""
    start = post(client, "/admin/accounting/connect")
    assert start.status_code == 302, start.get_data(as_text=True)[:300]
    consent = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["Location"]).query).items()}
    assert consent["scope"] == SCOPE and consent["client_id"] == xero.client_id
    back = urlsplit(consent["redirect_uri"])
    query = urlencode({"code": xero.authorization_code(), "state": consent["state"]})
    return client.get(f"{back.path}?{query}")


def _vault(svc: Services) -> StoreVault:
    return StoreVault(svc.store, svc.clock, TokenCipher(svc.config), entity_id=svc.entity_id, kind="xero")


def _refs(svc: Services) -> dict[int, str]:
    rows = svc.store.all(
        "SELECT local_id, remote_id FROM external_refs WHERE kind = 'journal_payment' AND system = 'xero'"
    )
    return {r[0]: r[1] for r in rows}


def _raw_db(svc: Services) -> bytes:
    svc.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return b"".join(p.read_bytes() for p in svc.config.db_path.parent.glob("cashloop.db*"))


def _applied(xero: XeroFake) -> list[tuple[str, Decimal]]:
    numbers = {i["InvoiceID"]: i["InvoiceNumber"] for i in xero.invoices}
    return sorted((numbers[p["InvoiceID"]], p["Amount"]) for p in xero.live_payments())


def test_connecting_one_organisation_stores_its_tenant(svc, owner, xero):
    done = connect(owner, xero)
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/accounting")
    tokens = _vault(svc).load()
    assert tokens is not None and (tokens.tenant_id, tokens.tenant_name) == (xero.tenant_id, xero.tenant_name)
    assert tokens.access_token.encode() not in _raw_db(svc)
    page = owner.get("/admin/accounting").get_data(as_text=True)
    assert "Connected" in page and xero.tenant_name in page
    [listing] = [r for r in xero.requests if r.path == "/connections"]
    assert listing.headers["authorization"] == f"Bearer {tokens.access_token}"
    assert xero.violations == []


def test_several_organisations_let_the_admin_pick_one(tmp_path, frozen_clock, stripe_double, mail, xero):
    other = "0b9a7e55-1d4c-4f8e-9a0b-2c3d4e5f6a7b"

    def connections(method: str, target: str, headers: dict[str, str], body: bytes):
        # The same sign-in authorised two organisations; Xero lists both for the token.
        status, _, listed = xero.handle(method, "/connections", headers, body)
        rows = json.loads(listed) if isinstance(listed, bytes) else listed
        if status == 200:
            rows = [*rows, {**rows[0], "id": "c2", "tenantId": other, "tenantName": "Northwind Holdings"}]
        return status, {}, rows

    server = LoopbackServer(connections)
    port = server.start()
    try:
        cfg = _config(
            tmp_path, stripe_double, mail, xero, connections_url=f"http://127.0.0.1:{port}/connections"
        )
        svc = build_services(cfg, clock=frozen_clock)
        client = sign_in(
            create_app(svc).test_client(), make_admin(svc, "o@northwind.example", "owner"), frozen_clock
        )
        pick = connect(client, xero)
        page = pick.get_data(as_text=True)
        assert pick.status_code == 200 and "Which Xero organisation?" in page
        assert "Northwind Holdings" in page and xero.tenant_name in page
        assert _vault(svc).load() is None  # nothing is connected until the admin chooses
        choice = svc.store.scalar("SELECT id FROM accounting_oauth_states")
        chosen = post(client, "/admin/accounting/tenant", {"choice": str(choice), "tenant_id": other})
        assert chosen.status_code == 302
        tokens = _vault(svc).load()
        assert (tokens.tenant_id, tokens.tenant_name) == (other, "Northwind Holdings")
        again = post(client, "/admin/accounting/tenant", {"choice": str(choice), "tenant_id": xero.tenant_id})
        assert again.status_code == 400 and "chosen already" in again.get_data(as_text=True)
        assert _vault(svc).load().tenant_id == other
        assert svc.store.scalar("SELECT pending_tokens_enc FROM accounting_oauth_states") is None
    finally:
        server.stop()


def test_a_payment_over_three_invoices_lands_as_one_xero_booking(svc, owner, xero, contoso, stripe_double):
    connect(owner, xero)
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

    [batch] = xero.live_batches()
    assert batch["TotalAmount"] == Decimal("250.00")
    assert _applied(xero) == [
        ("INV-101", Decimal("100.00")),
        ("INV-102", Decimal("100.00")),
        ("INV-103", Decimal("50.00")),
    ]
    assert xero.invoice("INV-103")["AmountDue"] == Decimal("70.00")
    assert _refs(svc) == {payment_id: f"BatchPayment:{batch['BatchPaymentID']}"}
    assert all(r.headers.get("xero-tenant-id") == xero.tenant_id for r in xero.api_requests())
    assert xero.violations == []


def test_token_expiry_refreshes_and_stores_the_rotated_token_encrypted(
    svc, owner, xero, contoso, stripe_double, frozen_clock
):
    connect(owner, xero)
    first = _vault(svc).load()
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-101"), 10_000)])
    assert drain_outbox.run(svc).dead == 0
    frozen_clock.advance(timedelta(minutes=26))  # Xero's 30 minutes are nearly up
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-102"), 10_000)])
    assert drain_outbox.run(svc).dead == 0
    second = _vault(svc).load()
    assert second.refresh_token != first.refresh_token and second.tenant_id == xero.tenant_id

    xero.expire_access_tokens()  # refused early: a 401, one refresh, the call repeated
    pay(svc, stripe_double, contoso, [(invoice_token(svc, "INV-104"), 30_000)])
    assert drain_outbox.run(svc).dead == 0
    third = _vault(svc).load()
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)
    assert len(xero.live_payments()) == 3 and {e["status"] for e in accounting_entries(svc)} == {"done"}
    raw = _raw_db(svc)
    assert second.refresh_token.encode() not in raw and third.refresh_token.encode() not in raw
    assert xero.violations == []


def test_a_revoked_organisation_parks_entries_until_reconnected(
    svc, owner, admin, xero, contoso, stripe_double, frozen_clock
):
    connect(owner, xero)
    xero.revoke()
    paid = [
        pay(svc, stripe_double, contoso, [(invoice_token(svc, n), m)])
        for n, m in (("INV-101", 10_000), ("INV-104", 30_000))
    ]
    for _ in range(3):
        assert drain_outbox.run(svc).dead == 0
        frozen_clock.advance(timedelta(seconds=svc.config.outbox.park_seconds + 1))
    assert [(e["status"], e["attempts"]) for e in accounting_entries(svc)] == [("pending", 0)] * 2
    assert (
        svc.store.scalar(
            "SELECT COUNT(*) FROM exceptions WHERE kind = 'accounting_connection' AND resolved_at IS NULL"
        )
        == 1
    )
    assert xero.live_payments() == []

    owner = sign_in(create_app(svc).test_client(), admin, frozen_clock)
    assert connect(owner, xero).status_code == 302
    drain_outbox.run(svc)
    assert [e["status"] for e in accounting_entries(svc)] == ["done", "done"]
    assert set(_refs(svc)) == set(paid)
    assert (
        svc.store.scalar(
            "SELECT COUNT(*) FROM exceptions WHERE kind = 'accounting_connection' AND resolved_at IS NULL"
        )
        == 0
    )
    assert xero.violations == []


def test_book_again_after_a_deletion_in_xero_maps_a_new_live_booking(
    svc, owner, xero, contoso, stripe_double
):
    connect(owner, xero)
    payment_id = pay(
        svc,
        stripe_double,
        contoso,
        [(invoice_token(svc, "INV-101"), 10_000), (invoice_token(svc, "INV-102"), 10_000)],
    )
    drain_outbox.run(svc)
    old = _refs(svc)[payment_id]
    xero.delete_payment_in_xero(old)
    assert xero.invoice("INV-101")["AmountDue"] == Decimal("100.00")

    assert post(owner, f"/admin/payments/{payment_id}/book-again").status_code == 302
    drain_outbox.run(svc)
    [batch] = xero.live_batches()
    assert (
        _refs(svc) == {payment_id: f"BatchPayment:{batch['BatchPaymentID']}"}
        and _refs(svc)[payment_id] != old
    )
    assert xero.invoice("INV-101")["AmountDue"] == Decimal("0.00")
    assert [e["status"] for e in accounting_entries(svc)] == ["done", "done"]
    assert xero.violations == []


def test_a_stripe_payout_through_the_outbox_is_one_bank_transfer_and_one_fee_line(
    tmp_path, frozen_clock, stripe_ext, mail, xero
):
    double = stripe_ext.double
    double.reset()  # the payout takes everything available: only this test's payments
    svc = build_services(_config(tmp_path, double, mail, xero), clock=frozen_clock)
    owner = sign_in(
        create_app(svc).test_client(), make_admin(svc, "o@northwind.example", "owner"), frozen_clock
    )
    connect(owner, xero)
    client_id = make_client(svc, "250", "Contoso Dental LLC")
    for number, minor in (("INV-201", 10_000), ("INV-202", 15_000)):
        make_invoice(svc, number, total_minor=minor)
        xero.add_invoice(number, f"{Decimal(minor) / 100:.2f}", contact="Contoso Dental LLC")
    pay(svc, double, client_id, [(invoice_token(svc, "INV-201"), 10_000)])
    pay(svc, double, client_id, [(invoice_token(svc, "INV-202"), 15_000)])
    assert drain_outbox.run(svc).dead == 0
    assert xero.balance("090") == Decimal("250.00")  # both payments wait in the clearing account

    po = stripe_ext.payout("usd")
    assert payouts.sync_payout(svc, po["id"]) == "booked"
    report = drain_outbox.run(svc)

    assert report.dead == 0 and report.parked == 0
    [payload] = [
        json.loads(r[0])
        for r in svc.store.all("SELECT payload_json FROM outbox WHERE kind = 'accounting_deposit'")
    ]
    assert payload["amount_minor"] == po["amount"] == 25_000 - payload["fee_minor"]
    fees = Decimal(payload["fee_minor"]) / 100
    assert [
        (t["Reference"], t["FromBankAccount"]["Code"], t["ToBankAccount"]["Code"])
        for t in xero.bank_transfers
    ] == [(po["id"], "090", "091")]
    assert xero.balance("091") == Decimal(po["amount"]) / 100  # the bank got exactly the payout
    [fee_line] = [t for t in xero.live_bank_transactions() if t["Reference"] == f"{po['id']} fees"]
    assert (fee_line["Type"], fee_line["BankAccount"]["Code"], fee_line["Total"]) == ("SPEND", "090", fees)
    assert xero.balance("090") == 0 and xero.balance("404") == fees
    [entry] = [e for e in accounting_entries(svc) if e["kind"] == "accounting_deposit"]
    assert entry["status"] == "done"
    remote = svc.store.scalar(
        "SELECT remote_id FROM external_refs WHERE kind = 'accounting_deposit' AND system = 'xero'"
    )
    assert remote == f"BankTransfer:{xero.bank_transfers[0]['BankTransferID']}"
    assert xero.violations == []
