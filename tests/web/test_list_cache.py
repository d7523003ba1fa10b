"""The invoice list's page cache never shows a stale page: every kind of change moves its key."""

from __future__ import annotations

import re

from app.core import approvals, line_disputes
from tests.web import factories as f
from tests.web.conftest import post


def _rows(client) -> list[str]:
    html = client.get("/invoices?status=all").get_data(as_text=True)
    return re.findall(r'<tr id="invoice-[^"]+">.*?</tr>', html, re.S)


def test_a_new_invoice_a_payment_a_dispute_an_approval_and_a_psa_edit_each_show_at_once(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    assert "Not yet due" in _rows(signed_in)[0]
    f.make_invoice(svc, acme, "INV-2", total_minor=20_000)
    assert len(_rows(signed_in)) == 2
    f.make_payment(svc, acme, [(inv, 10_000)])
    assert "Paid" in _rows(signed_in)[0]
    other = f.make_invoice(
        svc, acme, "INV-3", total_minor=30_000, lines=[{"description": "Visit", "amount_minor": 30_000}]
    )
    with svc.store.write() as db:
        line_disputes.open_dispute(
            db,
            svc.clock,
            client_id=acme.id,
            invoice_id=other.id,
            line_no=1,
            reason="Never happened at all",
            raised_by="dana@acme.example",
        )
    assert any("In dispute" in r for r in _rows(signed_in))
    with svc.store.write() as db:  # the admin queue's generic resolve ends the dispute
        db.execute(
            "UPDATE exceptions SET resolved_at = '2026-03-11T00:00:00.000000Z' WHERE kind = 'line_dispute'"
        )
    assert not any("In dispute" in r for r in _rows(signed_in))
    with svc.store.write() as db:  # a PSA edit of the total
        db.execute("UPDATE invoices SET total_minor = 25000, subtotal_minor = 25000 WHERE number = 'INV-2'")
    assert any("$250.00" in r for r in _rows(signed_in))
    with svc.store.write() as db:
        approvals.approve(
            db, svc.clock, invoice_id=other.id, client_id=acme.id, approver="a@acme.example", role="approver"
        )
    assert (
        post(
            signed_in, f"/invoices/{other.token}/lines/1/dispute", {"reason": "Still wrong, see email"}
        ).status_code
        == 302
    )
    assert any("In dispute" in r for r in _rows(signed_in))
