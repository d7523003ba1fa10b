"""One payment reference everywhere: the "PAY-000123" the portal and receipt PDF print is in the
receipt and payment emails (read back from the aiosmtpd sink), on the admin payment page and list,
and admin Payments search finds a payment by it, by its token and by its Stripe ids."""

from __future__ import annotations

import re
from datetime import date

from app.core.manual_payments import Allocation, record_manual_payment
from app.core.payment_outcomes import after_change
from app.core.payment_refs import parse_payment_reference, payment_reference
from app.core.receipts import resend_receipt
from app.jobs import drain_outbox
from app.services import build_services
from tests.conftest import make_config
from tests.web import factories


def _bodies(message) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_the_reference_reads_back_however_it_is_typed():
    assert payment_reference(2) == "PAY-000002" and payment_reference(1_234_567) == "PAY-1234567"
    for typed in ("PAY-000002", "pay-2", " PAY 000002 ", "PAY000002", "pay_02"):
        assert parse_payment_reference(typed) == 2, typed
    for other in ("PAY-", "PAY-000000", "INV-000002", "2", "PAY-12a", "xPAY-2"):
        assert parse_payment_reference(other) is None, other


def test_receipt_and_bank_return_emails_carry_the_pay_reference_not_the_token(tmp_path, frozen_clock, mail):
    svc = build_services(make_config(tmp_path, smtp_port=mail.port), clock=frozen_clock)
    client = factories.make_client(svc, "Contoso Dental LLC")
    factories.make_contact(svc, client, "ap@contoso.example")
    invoice = factories.make_invoice(svc, client, "INV-1001", total_minor=50_000)
    factories.make_invoice(svc, client, "INV-1002", total_minor=20_000)  # a row id before the payment's
    recorded = record_manual_payment(
        svc.store,
        frozen_clock,
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
    token = svc.store.scalar("SELECT token FROM payments WHERE id = ?", (recorded.payment_id,))
    reference = f"PAY-{recorded.payment_id:06d}"
    drain_outbox.run(svc)
    (receipt,) = mail.wait_for(1)
    text, html = _bodies(receipt)
    assert re.search(rf"Reference:\s+{reference}\n", text)
    assert f"quote {reference} if you contact us" in text and reference in html
    assert token not in text and token not in html

    # A receipt queued before the reference was in emails carries only the token; its resend
    # still tells the client the PAY- reference.
    with svc.store.write() as db:
        db.execute(
            "UPDATE outbox SET payload_json = json_remove(payload_json, '$.context.payment_reference') "
            "WHERE kind = 'email'"
        )
    resend_receipt(svc.store, frozen_clock, recorded.payment_id, actor="admin:test")
    drain_outbox.run(svc)
    resent = mail.wait_for(2)[-1]
    assert reference in _bodies(resent)[0] and token not in _bodies(resent)[0]

    # A bank payment returned after it was under way: its notice names the same kind of reference.
    ach_invoice = factories.make_invoice(svc, client, "INV-1003", total_minor=30_000)
    ach = factories.make_payment(svc, client, [(ach_invoice, 30_000)], status="processing")
    with svc.store.write() as db:
        db.execute("UPDATE payments SET method = 'ach' WHERE id = ?", (ach.id,))
        pay = db.execute("SELECT * FROM payments WHERE id = ?", (ach.id,)).fetchone()
        after_change(
            db,
            frozen_clock,
            pay,
            "failed",
            "insufficient funds",
            base_url=svc.config.cashloop.base_url,
            timezone=svc.config.tz,
        )
    drain_outbox.run(svc)
    returned = mail.wait_for(3)[-1]
    text, html = _bodies(returned)
    assert f"Reference: PAY-{ach.id:06d}" in text and f"PAY-{ach.id:06d}" in html
    assert ach.token not in text and ach.token not in html


def _found(client, q: str) -> list[int]:
    page = client.get("/admin/payments", query_string={"q": q}).get_data(as_text=True)
    return [int(n) for n in re.findall(r'<tr id="payment-(\d+)">', page)]


def test_admin_payments_search_finds_a_payment_by_its_reference_token_or_stripe_ids(svc, as_finance):
    client = factories.make_client(svc, "Birchwood Animal Hospital")
    invoices = [factories.make_invoice(svc, client, f"INV-{n}", total_minor=10_000) for n in range(3)]
    pays = [factories.make_payment(svc, client, [(inv, 5_000)]) for inv in invoices]
    target = pays[1]
    with svc.store.write() as db:
        db.execute(
            "UPDATE payments SET processor_ref = 'pi_test_7g83sUR', charge_ref = 'ch_test_4Kq2' WHERE id = ?",
            (target.id,),
        )
    reference = f"PAY-{target.id:06d}"
    for q in (
        reference,
        reference.lower(),
        f"PAY-{target.id}",
        target.token,
        "pi_test_7g83sUR",
        "ch_test_4Kq2",
    ):
        assert _found(as_finance, q) == [target.id], q
    assert _found(as_finance, "PAY-999999") == []
    assert sorted(_found(as_finance, "Birchwood")) == sorted(p.id for p in pays)

    listing = as_finance.get("/admin/payments").get_data(as_text=True)
    row = listing.split(f'<tr id="payment-{target.id}">')[1].split("</tr>")[0]
    assert f'<a href="/admin/payments/{target.id}">{reference}</a>' in row

    page = as_finance.get(f"/admin/payments/{target.id}").get_data(as_text=True)
    shown = re.search(r'id="payment-pay-reference">([^<]+)<', page).group(1).strip()
    assert shown == reference and f"<title>Payment {reference}" in page
    assert re.search(rf'id="payment-token">{re.escape(target.token)}<', page)


def test_the_admin_payments_csv_export_follows_a_pay_reference_search(svc, as_finance):
    client = factories.make_client(svc, "Birchwood Animal Hospital")
    invoices = [factories.make_invoice(svc, client, f"INV-{n}", total_minor=10_000) for n in range(2)]
    pays = [factories.make_payment(svc, client, [(inv, 5_000 + n)]) for n, inv in enumerate(invoices)]
    response = as_finance.get("/admin/export/payments.csv", query_string={"q": f"PAY-{pays[0].id:06d}"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    body = response.get_data(as_text=True)
    assert pays[0].token in body and pays[1].token not in body
