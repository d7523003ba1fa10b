"""Documents (invoice, statement and receipt PDFs, read back with poppler's pdftotext), the People page
(invitations, roles), saved payment methods (default, remove), the autopay form, and another company's
contact trying every URL and form id of this one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from app.core import autopay, saved_methods
from tests.web import factories as f
from tests.web.conftest import post, sign_in


def pdf_text(data: bytes, tmp_path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext not found: install poppler-utils (./dev installs it)")
    assert data.startswith(b"%PDF-"), data[:20]
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def test_the_invoice_pdf_has_its_lines_tax_payments_and_balance(signed_in, svc, acme, tmp_path):
    inv = f.make_invoice(
        svc,
        acme,
        "INV-7001",
        total_minor=12_650,
        tax_minor=1_150,
        project="Wi-Fi upgrade",
        lines=[
            {"description": "Access points ×3", "amount_minor": 9_000, "project": "Wi-Fi upgrade"},
            {"description": "Survey, Zoë Müller", "amount_minor": 2_500, "ticket": "#881"},
        ],
    )
    pay = f.make_payment(svc, acme, [(inv, 4_000)])
    response = signed_in.get(f"/invoices/{inv.token}/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert 'filename="invoice-INV-7001.pdf"' in response.headers["Content-Disposition"]
    text = pdf_text(response.data, tmp_path)
    for expected in (
        "Invoice INV-7001",
        "Acme Dental LLC",
        "Access points ×3",
        "Survey, Zoë Müller",
        "Ticket: #881",
        "$115.00",
        "$11.50",
        "$126.50",
        "$40.00",
        "$86.50",
        f"PAY-{pay.id:06d}",
        "Northwind IT",
        "http://portal.test/invoices/",
    ):
        assert expected in text, expected


def test_the_monthly_statement_lists_the_months_activity_open_items_and_aging(signed_in, svc, acme, tmp_path):
    # The frozen clock is March 10, 2026, in Chicago.
    f.make_invoice(svc, acme, "INV-JAN", total_minor=10_000, issued_on="2026-01-02", due_on="2026-02-01")
    feb = f.make_invoice(
        svc, acme, "INV-FEB", total_minor=20_000, issued_on="2026-02-03", due_on="2026-03-05"
    )
    f.make_invoice(svc, acme, "INV-MAR", total_minor=40_000, issued_on="2026-03-02", due_on="2026-04-01")
    # Paid at 23:30 on Feb 28 in Chicago (already March 1 in UTC): it belongs to February.
    f.make_payment(svc, acme, [(feb, 5_000)], created_at=datetime(2026, 3, 1, 5, 30, tzinfo=UTC))
    listing = signed_in.get("/statements").get_data(as_text=True)
    assert [m for m in re.findall(r'id="statement-(\d{4}-\d{2})"', listing)] == [
        "2026-03",
        "2026-02",
        "2026-01",
    ]
    page = signed_in.get("/statements/2026-02").get_data(as_text=True)
    assert "INV-FEB" in page.split('id="statement-issued"')[1].split("</table>")[0]
    assert "$50.00" in page.split('id="statement-payments"')[1].split("</table>")[0]
    # As of Feb 28: INV-JAN is 27 days late ($100.00), INV-FEB not yet due ($150.00 left).
    assert re.search(r'id="aging-USD-1_30">\$100\.00<', page)
    assert re.search(r'id="aging-USD-current">\$150\.00<', page)
    text = pdf_text(signed_in.get("/statements/2026-02/pdf").data, tmp_path)
    assert "Statement for February 2026" in text and "INV-JAN" in text and "$250.00" in text
    assert "INV-MAR" not in text
    assert signed_in.get("/statements/2026-13").status_code == 404
    assert signed_in.get("/statements/2027-01").status_code == 404


def test_a_receipt_pdf_exists_for_a_succeeded_payment_only(signed_in, svc, acme, tmp_path):
    inv = f.make_invoice(svc, acme, "INV-R1", total_minor=30_000)
    ok = f.make_payment(svc, acme, [(inv, 10_000)])
    failed = f.make_payment(svc, acme, [(inv, 10_000)], status="failed")
    text = pdf_text(signed_in.get(f"/payments/{ok.token}/receipt").data, tmp_path)
    assert f"Receipt PAY-{ok.id:06d}" in text and "INV-R1" in text and "$100.00" in text and "$200.00" in text
    assert "10:00 AM CST" in text  # 16:00 UTC on March 5 in Chicago
    assert signed_in.get(f"/payments/{failed.token}/receipt").status_code == 404
    page = signed_in.get("/payments").get_data(as_text=True)
    assert f"PAY-{ok.id:06d}" in page and "10:00 AM CST" in page and "Mar 5, 2026" in page


def test_a_billing_contact_invites_a_colleague_as_approver_and_changes_roles(signed_in, svc, acme):
    colleague = f.make_contact(svc, acme, "sam@acme.example", role="viewer", first_name="Sam")
    page = signed_in.get("/people").get_data(as_text=True)
    assert "sam@acme.example" in page and "Not invited" in page
    ref = re.search(r'id="contact-([0-9a-f]{24})">\s*<td data-label="Name">Sam', page).group(1)
    assert post(signed_in, "/people/role", {"contact": ref, "role": "approver"}).status_code == 302
    assert svc.store.scalar("SELECT role FROM contacts WHERE id = ?", (colleague,)) == "approver"
    assert post(signed_in, "/people/invite", {"contact": ref}).status_code == 302
    bad = post(signed_in, "/people/add", {"email": "not an email", "first_name": "", "role": "billing"})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 400 and 'id="error-email"' in html and 'id="error-first"' in html
    assert (
        post(
            signed_in, "/people/add", {"email": "Lee@Acme.example", "first_name": "Lee", "role": "viewer"}
        ).status_code
        == 302
    )
    assert svc.store.scalar("SELECT role FROM contacts WHERE email = 'lee@acme.example'") == "viewer"
    invites = [e for e in f.outbox_emails(svc) if e["template"] == "invitation"]
    assert sorted(e["to"][0] for e in invites) == ["lee@acme.example", "sam@acme.example"]
    me = re.search(r'id="contact-([0-9a-f]{24})">\s*<td data-label="Name">Dana', page).group(1)
    assert post(signed_in, "/people/role", {"contact": me, "role": "viewer"}).status_code == 400


def test_a_viewer_or_approver_cannot_manage_people(client, svc, acme):
    f.make_person(svc, acme, "val@acme.example", role="viewer")
    target = f.make_contact(svc, acme, "sam@acme.example", role="viewer")
    sign_in(client, "val@acme.example")
    page = client.get("/people").get_data(as_text=True)
    assert "sam@acme.example" in page and 'id="add-person-form"' not in page
    assert post(client, "/people/add", {"email": "x@acme.example", "first_name": "X"}).status_code == 403
    assert svc.store.scalar("SELECT role FROM contacts WHERE id = ?", (target,)) == "viewer"


def _saved(svc, client, ref: str, *, default: bool) -> None:
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "is_default, created_at) VALUES (?, ?, 'card', 'visa', ?, 12, 2031, ?, '2026-03-01T00:00:00Z')",
            (client.id, ref, ref[-4:], int(default)),
        )


def test_saved_methods_can_be_made_default_and_removed_and_removal_turns_autopay_off(signed_in, svc, acme):
    _saved(svc, acme, "pm_first_1111", default=True)
    _saved(svc, acme, "pm_second_2222", default=False)
    page = signed_in.get("/payment-methods").get_data(as_text=True)
    assert "Visa •••• 1111" in page and "Visa •••• 2222" in page
    assert post(signed_in, "/payment-methods/default", {"method": "pm_second_2222"}).status_code == 302
    assert [m.processor_ref for m in saved_methods.list_methods(svc.store.db, acme.id)] == [
        "pm_second_2222",
        "pm_first_1111",
    ]
    second = saved_methods.find(svc.store.db, acme.id, "pm_second_2222")
    autopay.set_rule(svc.store, svc.clock, acme.id, enabled=True, payment_method_id=second.id, actor="test")
    assert post(signed_in, "/payment-methods/remove", {"method": "pm_second_2222"}).status_code == 302
    assert [m.processor_ref for m in saved_methods.list_methods(svc.store.db, acme.id)] == ["pm_first_1111"]
    assert saved_methods.list_methods(svc.store.db, acme.id)[0].is_default
    assert autopay.get_rule(svc.store, acme.id).is_enabled is False
    assert svc.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'stripe_detach_method'") == 1
    assert "autopay is now off" in signed_in.get("/payment-methods").get_data(as_text=True)


def test_the_autopay_form_saves_the_rule_and_says_it_in_words(signed_in, svc, acme):
    _saved(svc, acme, "pm_card_4242", default=True)
    bad = post(signed_in, "/autopay", {"enabled": "on", "method": "", "kinds": [], "max_amount": "lots"})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 400 and 'id="error-max"' in html
    assert autopay.get_rule(svc.store, acme.id) is None
    ok = post(
        signed_in,
        "/autopay",
        {
            "enabled": "on",
            "method": "pm_card_4242",
            "kinds": ["agreement", "project"],
            "schedule": "due_date",
            "schedule_days": "0",
            "max_amount": "5,000",
        },
    )
    assert ok.status_code == 302
    rule = autopay.get_rule(svc.store, acme.id)
    assert (rule.is_enabled, rule.kinds, rule.max_minor, rule.schedule) == (
        True,
        ("agreement", "project"),
        500_000,
        "due_date",
    )
    page = signed_in.get("/autopay").get_data(as_text=True)
    assert (
        "Pay agreement and project invoices on their due date with Visa •••• 4242, "
        "up to $5,000.00 per invoice." in page
    )
    # Shown on each invoice it will pay, and on home; not on one it will not (above the maximum).
    small = f.make_invoice(svc, acme, "INV-AUTO", total_minor=12_000, due_on="2026-03-31")
    large = f.make_invoice(svc, acme, "INV-LARGE", total_minor=600_000, due_on="2026-03-31")
    note = re.sub(r"\s+", " ", signed_in.get(f"/invoices/{small.token}").get_data(as_text=True))
    assert "Autopay will pay $120.00 on March 31, 2026 with Visa •••• 4242" in note
    assert 'id="autopay-note"' not in signed_in.get(f"/invoices/{large.token}").get_data(as_text=True)
    assert "Next: $120.00 on March 31, 2026" in re.sub(r"\s+", " ", signed_in.get("/").get_data(as_text=True))


def test_another_companys_contact_reaches_nothing_of_this_one_through_any_url_or_form_id(
    client, svc, acme, globex
):
    from tests.web.conftest import csrf_token

    inv = f.make_invoice(
        svc,
        acme,
        "INV-SECRET",
        total_minor=77_700,
        lines=[{"description": "Secret line", "amount_minor": 77_700}],
    )
    pay = f.make_payment(svc, acme, [(inv, 1_000)])
    _saved(svc, acme, "pm_acme_9999", default=True)
    f.make_person(svc, acme, "dana@acme.example")
    acme_contact = f.make_contact(svc, acme, "sam@acme.example", role="viewer")
    with svc.store.write() as db:
        from app.core import line_disputes

        d = line_disputes.open_dispute(
            db,
            svc.clock,
            client_id=acme.id,
            invoice_id=inv.id,
            line_no=1,
            reason="Acme's own dispute text",
            raised_by="dana@acme.example",
        )
    f.make_person(svc, globex, "eve@globex.example")
    sign_in(client, "eve@globex.example")
    token = csrf_token(client)
    gets = [
        f"/invoices/{inv.token}",
        f"/invoices/{inv.token}/pdf",
        f"/invoices/{inv.token}/lines/1/dispute",
        f"/payments/{pay.token}",
        f"/payments/{pay.token}/receipt",
        f"/pay?invoice={inv.token}",
        f"/pay/{pay.token}",
    ]
    for url in gets:
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert b"INV-SECRET" not in response.data and b"Secret line" not in response.data, url
    posts = {
        f"/invoices/{inv.token}/lines/1/dispute": {"reason": "Eve tries to dispute Acme's line"},
        f"/invoices/{inv.token}/disputes/{d.token}/withdraw": {},
        f"/invoices/{inv.token}/approve": {},
        "/pay": {"invoice": inv.token, f"amount-{inv.token}": "1.00", "action": "checkout"},
        "/payment-methods/default": {"method": "pm_acme_9999"},
        "/payment-methods/remove": {"method": "pm_acme_9999"},
    }
    for url, data in posts.items():
        response = client.post(url, data={**data, "csrf_token": token})
        assert response.status_code in (400, 403, 404), url
        assert b"INV-SECRET" not in response.data, url
    # Contact refs of Acme's people, computed as the People page would, are unknown to Globex's page.
    from app.web.contacts import contact_ref

    with client.application.test_request_context():
        ref = contact_ref(acme_contact)
    for url in ("/people/role", "/people/invite"):
        assert (
            client.post(url, data={"contact": ref, "role": "approver", "csrf_token": token}).status_code
            == 404
        )
    confirm = client.post(
        f"/pay/{pay.token}/confirm",
        headers={"X-CSRFToken": token},
        data=json.dumps({"payment_method": "pm_card_visa"}),
        content_type="application/json",
    )
    assert confirm.status_code == 404
    for url in (
        "/",
        "/invoices?status=all",
        "/payments",
        "/statements",
        "/people",
        "/payment-methods",
        "/autopay",
    ):
        body = client.get(url).get_data(as_text=True)
        assert "INV-SECRET" not in body and "Acme" not in body and "9999" not in body, url
    assert svc.store.scalar("SELECT status FROM line_disputes WHERE id = ?", (d.id,)) == "open"
    assert (
        svc.store.scalar(
            "SELECT removed_at IS NULL AND is_default FROM payment_methods "
            "WHERE processor_ref = 'pm_acme_9999'"
        )
        == 1
    )
    assert svc.store.scalar("SELECT role FROM contacts WHERE id = ?", (acme_contact,)) == "viewer"
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 1
