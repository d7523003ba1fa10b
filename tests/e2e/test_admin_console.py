"""The admin console in Chromium: the dashboard's figures on a seeded dataset, and a check of 500.00
recorded over two invoices showing in the portal, the ledger, the outbox and the audit log.

Real parts: the Flask app on a loopback port (threaded), Chromium through Playwright, a SQLite
file, the aiosmtpd sink for the receipt, the journal CSV and the files connector's write-back.
The clock is frozen at 10:00 on Tuesday, March 10, 2026 in Chicago; the browser types the TOTP
code of that instant. Screenshots go to test-artifacts/admin/.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

import pytest

from app.core.clock import FrozenClock
from app.core.payment_refs import payment_reference
from app.jobs import drain_outbox
from app.services import build_services
from app.web import create_app
from tests.conftest import ARTIFACTS, LiveServer, free_port, make_config
from tests.web import factories
from tests.web.admin.helpers import ADMIN_PASSWORD, make_admin, seed_finance_world

SHOTS = ARTIFACTS / "admin"


@pytest.fixture
def world(tmp_path, mail):
    SHOTS.mkdir(parents=True, exist_ok=True)
    clock = FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))
    port = free_port()
    svc = build_services(make_config(tmp_path, port=port, smtp_port=mail.port), clock=clock)
    server = LiveServer(create_app(svc), port).start()
    yield svc, server, clock
    server.stop()


def _admin_sign_in(page, server, admin, clock, name: str) -> None:
    page.goto(f"{server.url}/admin/")
    page.wait_for_selector("#admin-login-form")
    page.fill("#email", admin.email)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#admin-login-button")
    page.wait_for_selector("#admin-code-form")
    page.screenshot(path=SHOTS / f"{name}-code.png")
    page.fill("#code", admin.code(clock))
    page.click("#admin-code-button")
    page.wait_for_selector("#admin-identity")


def test_the_dashboard_shows_aging_dso_collections_and_adoption_equal_to_hand_computed_values(world, browser):
    svc, server, clock = world
    seed_finance_world(svc)
    owner = make_admin(svc, "owner@northwind.example", "owner")
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        _admin_sign_in(page, server, owner, clock, "dashboard")
        page.wait_for_selector("#ar-total-USD")
        page.screenshot(path=SHOTS / "dashboard.png", full_page=True)
        shown = {
            k: page.locator(f"#{k}".replace("+", "\\+")).inner_text().strip()
            for k in (
                "ar-total-USD",
                "ar-overdue-USD",
                "aging-USD-current",
                "aging-USD-1-30",
                "aging-USD-31-60",
                "aging-USD-61-90",
                "aging-USD-90+",
                "aging-CAD-1-30",
                "dso-USD",
                "dso-CAD",
                "collected-this-USD",
                "collected-last-USD",
                "adoption-clients",
                "adoption-share-USD",
                "failed-count",
            )
        }
        assert shown == {
            "ar-total-USD": "$9,449.99",
            "ar-overdue-USD": "$8,149.99",
            "aging-USD-current": "$1,300.00",
            "aging-USD-1-30": "$2,000.00",
            "aging-USD-31-60": "$1,750.00",
            "aging-USD-61-90": "$3,400.00",
            "aging-USD-90+": "$999.99",
            "aging-CAD-1-30": "CA$250.00",
            "dso-USD": "167 days",
            "dso-CAD": "90 days",
            "collected-this-USD": "$250.00",
            "collected-last-USD": "$800.00",
            "adoption-clients": "2 of 5 (40.0%)",
            "adoption-share-USD": "51.9%",
            "failed-count": "1",
        }
        bars = page.locator("#aging-chart-USD g.bar").evaluate_all("gs => gs.map(g => +g.dataset.value)")
        assert bars == [130_000, 200_000, 175_000, 340_000, 99_999]
        heights = page.locator("#aging-chart-USD rect").evaluate_all(
            "rs => rs.map(r => +r.getAttribute('height'))"
        )
        assert heights.index(max(heights)) == 3 and min(heights) > 0  # 61-90 is the tallest bar
        assert errors == []  # the CSP let everything on the page load (no inline script or style)
    finally:
        context.close()


def test_a_check_of_500_over_two_invoices_shows_in_portal_ledger_outbox_and_audit_log(world, browser, mail):
    svc, server, clock = world
    contoso = factories.make_client(svc, "Contoso Dental LLC")
    dana = factories.make_person(svc, contoso, "ap@contoso.example")
    first = factories.make_invoice(svc, contoso, "INV-1001", total_minor=50_000, paid_elsewhere_minor=20_000)
    second = factories.make_invoice(svc, contoso, "INV-1002", total_minor=70_000)
    finance = make_admin(svc, "finance@northwind.example", "finance")
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    try:
        _admin_sign_in(page, server, finance, clock, "manual-payment")
        page.goto(f"{server.url}/admin/clients/{contoso.id}")
        page.click("#record-payment")
        page.wait_for_selector("#manual-payment-form")
        page.select_option("#method", "check")
        page.fill("#reference", "1042")
        page.fill("#received_on", "2026-03-09")
        page.fill("#amount", "500.00")
        page.fill(f"#alloc-{first.id}", "300.00")
        page.fill(f"#alloc-{second.id}", "250.00")  # first a mistake: 550.00 allocated
        page.click("#record-payment-button")
        page.wait_for_selector("#payment-error")
        assert "add up to $550.00 but the payment is $500.00" in page.inner_text("#payment-error")
        assert page.input_value("#reference") == "1042"  # nothing typed is lost
        page.screenshot(path=SHOTS / "manual-payment-1-error.png", full_page=True)
        page.fill(f"#alloc-{second.id}", "200.00")
        page.click("#record-payment-button")
        page.wait_for_selector("#payment-amount")
        assert page.inner_text("#payment-amount") == "$500.00"
        assert page.inner_text("#payment-reference") == "1042"
        effects = page.locator("#payment-effects tbody tr").all_inner_texts()
        page.screenshot(path=SHOTS / "manual-payment-2-recorded.png", full_page=True)
        page.goto(f"{server.url}/admin/audit?action=payment.recorded")
        audit_rows = page.locator("#audit-table tbody tr").all_inner_texts()
        page.screenshot(path=SHOTS / "manual-payment-3-audit.png", full_page=True)
    finally:
        context.close()

    # The ledger: one succeeded check payment, two allocations, the balances that follow.
    pay = svc.store.one("SELECT * FROM payments")
    assert (pay["method"], pay["status"], pay["amount_minor"], pay["initiated_by"]) == (
        "check",
        "succeeded",
        50_000,
        "admin:finance@northwind.example",
    )
    assert [
        tuple(r)
        for r in svc.store.all("SELECT invoice_id, amount_minor FROM allocations ORDER BY invoice_id")
    ] == [(first.id, 30_000), (second.id, 20_000)]
    assert [
        svc.store.scalar("SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (i.id,))
        for i in (first, second)
    ] == [0, 50_000]
    # The outbox: a receipt, a PSA write-back per invoice and a journal entry, shown on the payment page.
    kinds = sorted(r[0] for r in svc.store.all("SELECT kind FROM outbox WHERE status = 'pending'"))
    assert kinds == ["email", "journal_payment", "psa_payment", "psa_payment"]
    # The page names each effect in words, and says whether it was delivered yet.
    # A write-back per invoice, each naming its invoice.
    words = ["Booked in accounting", "Email to the client"] + [
        f"Written back to the PSA: invoice {n}" for n in ("INV-1001", "INV-1002")
    ]
    assert sorted(e.split("\t")[:2] for e in effects) == sorted([w, "Waiting"] for w in words)
    # The audit log, as the admin saw it.
    assert len(audit_rows) == 1 and "admin:finance@northwind.example" in audit_rows[0]
    assert "payment.recorded_manually" in audit_rows[0] and "INV-1001 $300.00" in audit_rows[0]

    # The portal, as the client sees it.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{server.url}/login")
        page.fill("#email", dana)
        page.fill("#password", factories.PASSWORD)
        page.click("#login-button")
        page.wait_for_selector("#nav-invoices")
        page.goto(f"{server.url}/payments")
        payment_row = page.locator(f"#payment-{pay['token']}").inner_text()
        page.screenshot(path=SHOTS / "manual-payment-4-portal-payments.png", full_page=True)
        page.goto(f"{server.url}/invoices?status=all")
        rows = {
            n: page.locator(f"#invoice-{i.token}").inner_text()
            for n, i in (("1001", first), ("1002", second))
        }
        page.screenshot(path=SHOTS / "manual-payment-5-portal-invoices.png", full_page=True)
    finally:
        context.close()
    assert "$500.00" in payment_row and "INV-1001" in payment_row and "INV-1002" in payment_row
    assert "Paid" in rows["1001"] and "$500.00" in rows["1002"]

    # Delivered: one receipt listing both invoices, two PSA payments, one balanced journal entry.
    report = drain_outbox.run(svc)
    assert (report.done, report.dead) == (4, 0), report.errors
    (receipt,) = mail.wait_for(1)
    text = receipt.get_body(("plain",)).get_content()
    assert (
        receipt["To"] == "ap@contoso.example"
        and "$500.00" in text
        and "$300.00" in text
        and "$200.00" in text
    )
    written = [
        json.loads(line)
        for line in (svc.config.data_path / "psa-export" / "payments.out.jsonl").read_text().splitlines()
    ]
    assert len(written) == 2
    with svc.config.journal_path.open(encoding="utf-8") as fh:
        entry = [r for r in csv.DictReader(fh) if r["payment_reference"] == payment_reference(pay["id"])]
    assert sorted((r["debit"], r["credit"]) for r in entry) == [
        ("", "200.00"),
        ("", "300.00"),
        ("500.00", ""),
    ]


def test_admin_pages_fit_a_phone_with_long_addresses(world, browser):
    from app.core.audit import audit

    svc, server, clock = world
    long_email = "malgorzata.fitzgerald-wisniewska@birchwoodanimalhospital.example"
    client = factories.make_client(svc, "Birchwood Animal Hospital of Greater Springfield")
    factories.make_person(svc, client, long_email)
    inv = factories.make_invoice(svc, client, "INV-11707", total_minor=11_625)
    pay = factories.make_payment(svc, client, [(inv, 11_625)], status="canceled")
    with svc.store.write() as db:
        db.execute("UPDATE payments SET initiated_by = ? WHERE id = ?", (f"login:{long_email}", pay.id))
        audit(db, clock, actor=f"login:{long_email}", action="payment.started", target=f"payment:{pay.id}")
    admin = make_admin(svc, "finance@northwind.example", "finance")
    width = 390
    context = browser.new_context(viewport={"width": width, "height": 844})
    page = context.new_page()
    wide: dict[str, int] = {}
    try:
        _admin_sign_in(page, server, admin, clock, "phone")
        for name, path in (
            ("audit", "/admin/audit"),
            ("client", f"/admin/clients/{client.id}"),
            ("payment", f"/admin/payments/{pay.id}"),
            ("payments", "/admin/payments"),
            ("clients", "/admin/clients"),
        ):
            page.goto(f"{server.url}{path}")
            page.screenshot(path=SHOTS / f"phone-{name}.png", full_page=True)
            scroll = page.evaluate("document.documentElement.scrollWidth")
            if scroll > width:
                wide[name] = scroll
    finally:
        context.close()
    assert wide == {}, f"pages wider than the phone: {wide}"
