"""Line disputes and approvals through the portal: what each writes, who may do it, and what it pauses.

A dispute pauses reminders and autopay for that invoice only (`is_in_dispute`), opens one
"line_dispute" exception, and queues one "psa_dispute_note"; the PSA connectors here cannot add
notes, which the dispute records instead of failing.
"""

from __future__ import annotations

import json
import re

from app.core import approvals, line_disputes
from app.jobs import drain_outbox
from sync.base import supports_dispute_notes
from tests.web import factories as f
from tests.web.conftest import post, sign_in

REASON = "We were billed twice for this onsite visit."


def _lines(invoice_ref, svc, n=2):
    return [
        {"description": f"Onsite visit {i}", "amount_minor": 5_000, "ticket": f"#77{i}"}
        for i in range(1, n + 1)
    ]


def test_disputing_a_line_marks_only_that_invoice_and_queues_the_finance_team_and_the_psa(
    signed_in, svc, acme
):
    inv = f.make_invoice(svc, acme, "INV-D1", total_minor=10_000, lines=_lines(None, svc))
    other = f.make_invoice(svc, acme, "INV-D2", total_minor=10_000)
    form = signed_in.get(f"/invoices/{inv.token}/lines/2/dispute").get_data(as_text=True)
    assert "Onsite visit 2" in form and "$50.00" in form
    response = post(signed_in, f"/invoices/{inv.token}/lines/2/dispute", {"reason": REASON})
    assert response.status_code == 302
    db = svc.store.db
    assert line_disputes.is_in_dispute(db, inv.id) and not line_disputes.is_in_dispute(db, other.id)
    [d] = svc.store.all("SELECT * FROM line_disputes")
    assert (d["line_no"], d["line_amount_minor"], d["reason"], d["raised_by"], d["status"]) == (
        2,
        5_000,
        REASON,
        "dana@acme.example",
        "open",
    )
    [exc] = svc.store.all("SELECT * FROM exceptions WHERE kind = 'line_dispute'")
    assert (
        exc["ref"] == f"line_dispute:{d['id']}" and "INV-D1" in exc["summary"] and exc["resolved_at"] is None
    )
    [note] = svc.store.all("SELECT * FROM outbox WHERE kind = 'psa_dispute_note'")
    payload = json.loads(note["payload_json"])
    assert (payload["invoice_number"], payload["line_description"], payload["ticket"]) == (
        "INV-D1",
        "Onsite visit 2",
        "#772",
    )
    page = signed_in.get(f"/invoices/{inv.token}").get_data(as_text=True)
    assert "In dispute" in page and 'id="dispute-notice"' in page and REASON in page
    assert "In dispute" not in signed_in.get(f"/invoices/{other.token}").get_data(as_text=True)
    listing = signed_in.get("/invoices?status=in_dispute").get_data(as_text=True)
    assert re.findall(r'<a href="/invoices/[^"]+">([^<]+)</a>', listing) == ["INV-D1"]


def test_the_psa_note_is_recorded_as_unsupported_where_the_connector_cannot_add_one(signed_in, svc, acme):
    from sync.psa.connectwise import ConnectWise
    from sync.psa.files import FilesSource

    assert not supports_dispute_notes(ConnectWise) and not supports_dispute_notes(FilesSource)
    inv = f.make_invoice(svc, acme, "INV-D3", lines=_lines(None, svc, 1))
    post(signed_in, f"/invoices/{inv.token}/lines/1/dispute", {"reason": REASON})
    report = drain_outbox.run(svc)
    assert report.dead == 0
    d = svc.store.one("SELECT psa_note_status, psa_note_error FROM line_disputes")
    assert d["psa_note_status"] == "unsupported" and "cannot add notes" in d["psa_note_error"]
    assert svc.store.scalar("SELECT status FROM outbox WHERE kind = 'psa_dispute_note'") == "done"


def test_a_dispute_needs_a_real_reason_and_one_line_is_disputed_once(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-D4", lines=_lines(None, svc, 1))
    short = post(signed_in, f"/invoices/{inv.token}/lines/1/dispute", {"reason": "  bad  "})
    assert short.status_code == 400 and "at least 10 characters" in short.get_data(as_text=True)
    assert svc.store.scalar("SELECT COUNT(*) FROM line_disputes") == 0
    assert post(signed_in, f"/invoices/{inv.token}/lines/1/dispute", {"reason": REASON}).status_code == 302
    again = post(signed_in, f"/invoices/{inv.token}/lines/1/dispute", {"reason": REASON + " Again."})
    assert again.status_code == 400 and "already in dispute" in again.get_data(as_text=True)
    assert svc.store.scalar("SELECT COUNT(*) FROM line_disputes") == 1
    assert signed_in.get(f"/invoices/{inv.token}/lines/9/dispute").status_code == 404


def test_withdrawing_or_the_finance_team_resolving_ends_the_dispute(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-D5", lines=_lines(None, svc))
    post(signed_in, f"/invoices/{inv.token}/lines/1/dispute", {"reason": REASON})
    token = svc.store.scalar("SELECT token FROM line_disputes")
    assert post(signed_in, f"/invoices/{inv.token}/disputes/{token}/withdraw").status_code == 302
    assert not line_disputes.is_in_dispute(svc.store.db, inv.id)
    assert svc.store.scalar("SELECT resolved_at IS NOT NULL FROM exceptions WHERE kind = 'line_dispute'") == 1
    # A second dispute of the same line, closed with the admin queue's generic resolve.
    post(signed_in, f"/invoices/{inv.token}/lines/1/dispute", {"reason": REASON})
    assert line_disputes.is_in_dispute(svc.store.db, inv.id)
    with svc.store.write() as db:
        db.execute(
            "UPDATE exceptions SET resolved_at = '2026-03-11T00:00:00.000000Z' "
            "WHERE kind = 'line_dispute' AND resolved_at IS NULL"
        )
    assert not line_disputes.is_in_dispute(svc.store.db, inv.id)
    assert "Settled" in signed_in.get(f"/invoices/{inv.token}").get_data(as_text=True)


def test_a_credit_memo_shows_as_credit_available_with_no_due_date(signed_in, svc, acme):
    memo = f.make_invoice(
        svc,
        acme,
        "CM-1",
        kind="credit_memo",
        total_minor=-30_760,
        lines=[{"description": "SLA credit", "amount_minor": -30_760}],
    )
    f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    home = signed_in.get("/").get_data(as_text=True)
    assert re.search(r'id="credit-available-USD">\$307\.60<', home)
    assert re.search(r'id="open-total-USD">\$100\.00<', home)  # the credit is not netted silently
    page = signed_in.get(f"/invoices/{memo.token}").get_data(as_text=True)
    assert "<title>Credit memo CM-1" in page and 'id="invoice-due"' not in page
    assert "−$307.60" in page and "Its billing team applies it to an invoice of" in page
    # No promise of when: the MSP applies credits in its PSA, on its own schedule.
    assert "next invoice" not in page and "next invoice" not in home
    assert "It is not taken off the open invoices above" in home.split('id="credit-hint-USD">')[1].split(
        "</p>"
    )[0]
    assert 'id="pay-invoice-button"' not in page and "/lines/1/dispute" not in page


def test_an_approver_approves_and_only_then_may_anyone_pay(client, svc, acme, tmp_path):
    from app.services import build_services
    from app.web import create_app
    from tests.web.conftest import web_config

    (tmp_path / "approvals").mkdir()
    cfg = web_config(tmp_path / "approvals", extra='\n[portal]\napproval_threshold = "5000.00"\n')
    s = build_services(cfg, clock=svc.clock)
    co = f.make_client(s, "Acme Dental LLC")
    f.make_person(s, co, "dana@acme.example", role="billing")
    f.make_person(s, co, "alex@acme.example", role="approver")
    big = f.make_invoice(s, co, "INV-BIG", total_minor=500_001)
    small = f.make_invoice(s, co, "INV-SMALL", total_minor=500_000)
    db = s.store.db
    assert approvals.needs_approval(db, big.id, default_threshold="5000.00")
    assert not approvals.needs_approval(db, small.id, default_threshold="5000.00")
    app_client = create_app(s).test_client()
    sign_in(app_client, "dana@acme.example")
    page = app_client.get(f"/invoices/{big.token}").get_data(as_text=True)
    assert "Awaiting approval" in page and 'id="pay-invoice-button"' not in page
    refused = post(
        app_client, "/pay", {"invoice": big.token, f"amount-{big.token}": "5000.01", "action": "checkout"}
    )
    assert refused.status_code == 400 and "approver" in refused.get_data(as_text=True)
    assert post(app_client, f"/invoices/{big.token}/approve").status_code == 403
    assert s.store.scalar("SELECT COUNT(*) FROM payments") == 0
    approver = create_app(s).test_client()
    sign_in(approver, "alex@acme.example")
    assert post(approver, f"/invoices/{big.token}/approve").status_code == 302
    assert approvals.is_approved(db, big.id)
    assert "Approved by alex@acme.example" in app_client.get(f"/invoices/{big.token}").get_data(as_text=True)
    # A PSA edit of the total needs a new approval.
    with s.store.write() as w:
        w.execute("UPDATE invoices SET total_minor = 600000, subtotal_minor = 600000 WHERE id = ?", (big.id,))
    assert approvals.awaits_approval(db, big.id, default_threshold="5000.00")
