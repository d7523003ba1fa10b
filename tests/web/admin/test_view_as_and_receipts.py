"""Viewing a client's portal read-only (audited, under a banner, no POST) and resending a receipt."""

from __future__ import annotations

import json
from datetime import date

from app.core.keys import derive_key
from app.core.manual_payments import Allocation, record_manual_payment
from app.jobs import drain_outbox
from app.services import build_services
from app.web import create_app
from tests.conftest import make_config
from tests.web import factories
from tests.web.admin.helpers import make_admin, post, seed_finance_world, sign_in


def test_an_admin_sees_the_clients_portal_read_only_under_a_banner_and_every_page_is_audited(svc, as_finance):
    w = seed_finance_world(svc)
    start = post(as_finance, f"/admin/clients/{w.acme.id}/view-as")
    assert start.status_code == 302 and start.headers["Location"] == "/"
    home = as_finance.get("/").get_data(as_text=True)
    assert 'id="view-as-banner"' in home and "Viewing Acme Dental LLC" in home
    assert "$1,300.00" in home and "Globex" not in home
    assert 'id="pay-all-due"' not in home and 'id="pay-selected"' not in home  # a viewer cannot pay
    assert "A2" in as_finance.get("/invoices").get_data(as_text=True)
    assert as_finance.get(f"/pay?invoice={w.invoices['A1'].token}").status_code == 403
    # Every request other than a GET is refused while viewing, whatever the portal route.
    for url in ("/logout", "/logout-everywhere", "/switch", "/pay", f"/pay/{w.invoices['A1'].token}/confirm"):
        assert post(as_finance, url, {"client": w.globex.token}).status_code == 403, url
    pages = [
        json.loads(r["detail_json"])["path"]
        for r in svc.store.all(
            "SELECT detail_json FROM audit_log WHERE action = 'client.view_as_page' ORDER BY id"
        )
    ]
    assert pages[:2] == ["/", "/invoices"]
    assert (
        svc.store.scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'client.view_as_started' "
            "AND actor = 'admin:finance@northwind.example' AND target = ?",
            (f"client:{w.acme.id}",),
        )
        == 1
    )
    stop = post(as_finance, "/admin/view-as/stop")
    assert stop.headers["Location"] == f"/admin/clients/{w.acme.id}"
    assert as_finance.get("/").headers["Location"].startswith("/login")
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'client.view_as_stopped'") == 1


def test_viewing_as_a_client_never_reaches_another_clients_invoice(svc, as_finance):
    w = seed_finance_world(svc)
    post(as_finance, f"/admin/clients/{w.acme.id}/view-as")
    assert as_finance.get(f"/invoices/{w.invoices['G1'].token}").status_code == 404
    assert as_finance.get(f"/invoices/{w.invoices['A1'].token}").status_code == 200


def _receipt_world(tmp_path, clock, mail):
    """Services whose email goes to the aiosmtpd sink, and one check payment with its receipt sent."""
    svc = build_services(make_config(tmp_path, smtp_port=mail.port), clock=clock)
    client = factories.make_client(svc, "Contoso Dental LLC")
    factories.make_contact(svc, client, "ap@contoso.example")
    invoice = factories.make_invoice(svc, client, "INV-1001", total_minor=50_000)
    recorded = record_manual_payment(
        svc.store,
        clock,
        client_id=client.id,
        method="check",
        amount_minor=50_000,
        allocations=[Allocation(invoice.id, 50_000)],
        reference="1042",
        received_on=date(2026, 3, 9),
        note="",
        actor="admin:test",
        request_key="k",
        base_url=svc.config.cashloop.base_url,
        timezone=svc.config.tz,
    )
    drain_outbox.run(svc)
    assert len(mail.wait_for(1)) == 1
    return svc, recorded.payment_id


def test_resending_a_receipt_sends_one_more_email_each_time_with_a_new_derived_key(
    tmp_path, frozen_clock, mail
):
    svc, payment_id = _receipt_world(tmp_path, frozen_clock, mail)
    owner = make_admin(svc, "owner@msp.example")
    client = sign_in(create_app(svc).test_client(), owner, frozen_clock)
    for _ in range(2):
        response = post(client, f"/admin/payments/{payment_id}/resend-receipt")
        assert response.status_code == 302
    keys = [r[0] for r in svc.store.all("SELECT idem_key FROM outbox WHERE kind = 'email' ORDER BY id")]
    assert keys == [
        derive_key("receipt", payment=payment_id),
        derive_key("receipt-resend", payment=payment_id, n=1),
        derive_key("receipt-resend", payment=payment_id, n=2),
    ]
    drain_outbox.run(svc)
    drain_outbox.run(svc)  # a second drain sends nothing more
    messages = mail.wait_for(3)
    assert len(messages) == 3 and all(m["To"] == "ap@contoso.example" for m in messages)
    assert len({m["Message-ID"] for m in messages}) == 3
    assert "$500.00" in messages[-1].get_body(("plain",)).get_content()
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'payment.receipt_resent'") == 2


def test_a_payment_without_a_receipt_cannot_be_resent(svc, as_finance):
    client = factories.make_client(svc, "No Contacts Ltd")
    invoice = factories.make_invoice(svc, client, "INV-9")
    payment = factories.make_payment(svc, client, [(invoice, 10_000)])
    response = post(as_finance, f"/admin/payments/{payment.id}/resend-receipt")
    page = as_finance.get(response.headers["Location"]).get_data(as_text=True)
    assert "had no receipt" in page
    assert svc.store.scalar("SELECT COUNT(*) FROM outbox") == 0
