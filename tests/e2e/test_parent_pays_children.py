"""A parent company pays two children's invoices in one charge, in Chromium, end to end.

ConnectWise names the parent (East through parentCompany, West through billToCompany); the sync
links both, although the children arrive before their parent. The parent's billing contact sees
the invoices grouped by company and pays three of them in one card payment: one charge of the
exact sum at the processor, one payment row of the parent, one allocation per invoice, one PSA
payment per invoice at the ConnectWise fake, journal lines naming each company, and one receipt
listing both companies. A child's contact then sees only its own company.
"""

from __future__ import annotations

import csv
import re
import time
from decimal import Decimal

import pytest
import stripe

from app.core.payment_refs import payment_reference
from app.jobs import drain_outbox, poll_psa
from app.services import build_services
from app.web import create_app
from tests.a11y.axe import serious_violations
from tests.conftest import ARTIFACTS, LiveServer, free_port
from tests.cw_world import company, contact, cw_config, invoice
from tests.fakes.connectwise import ConnectWiseFake
from tests.web import factories as f

PAID = {"E-100": Decimal("500.00"), "E-101": Decimal("125.50"), "W-200": Decimal("730.25")}
PAID_TOTAL_MINOR = 50_000 + 12_550 + 73_025


def _fill_card(page) -> None:
    card = page.locator("#card-element")
    card.locator('input[placeholder="number"]').fill("4242424242424242")
    card.locator('input[placeholder="exp_month"]').fill("12")
    card.locator('input[placeholder="exp_year"]').fill("31")
    card.locator('input[placeholder="cvc"]').fill("123")
    card.locator('input[placeholder="postal_code"]').fill("60601")


def _sign_in(browser, url: str, email: str):
    # bypass_csp: axe-core is injected as an inline script (the app itself needs no exception).
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{url}/login")
    page.fill("#email", email)
    page.fill("#password", f.PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#nav-invoices")
    return context, page


def _wait_for_webhook(services, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if services.store.scalar(
            "SELECT COUNT(*) FROM stripe_events WHERE type = 'payment_intent.succeeded' "
            "AND processed_at IS NOT NULL"
        ):
            return
        time.sleep(0.2)
    raise AssertionError("the payment_intent.succeeded webhook did not arrive")


@pytest.fixture(scope="module")
def paid(tmp_path_factory, stripe_double, smtp_sink, browser):
    shots = ARTIFACTS / "parent_pays_children"
    shots.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("parent")
    smtp_sink.clear()
    with ConnectWiseFake() as cw:
        east = company(cw, 401, "Northwind East LLC", "NorthwindEast")
        west = company(cw, 402, "Northwind West LLC", "NorthwindWest")
        holdings = company(cw, 410, "Northwind Holdings Inc", "NorthwindHoldings")
        east.update(
            parentCompany={"id": 410, "identifier": "NorthwindHoldings", "name": "Northwind Holdings Inc"},
            billToCompany={"id": 401, "identifier": "NorthwindEast", "name": "Northwind East LLC"},
        )
        west.update(
            billToCompany={"id": 410, "identifier": "NorthwindHoldings", "name": "Northwind Holdings Inc"}
        )
        contact(cw, 4101, holdings, "Hana", "Ito", "ap@holdings.example", billing=True)
        contact(cw, 4011, east, "Eli", "Stone", "ap@east.example", billing=True)
        contact(cw, 4021, west, "Wes", "Park", "ap@west.example", billing=True)
        invoice(cw, 9401, "E-100", east, kind="agreement", total="500.00")
        invoice(cw, 9402, "E-101", east, kind="time_and_materials", total="125.50", tax="10.50")
        invoice(cw, 9403, "W-200", west, kind="project", total="730.25", tax="30.25")
        invoice(cw, 9404, "H-1", holdings, kind="agreement", total="99.00")
        port = free_port()
        cfg = cw_config(
            tmp, cw, stripe_base=stripe_double.api_base, smtp_port=smtp_sink.port, port=port, invite=False
        )
        services = build_services(cfg)
        server = LiveServer(create_app(services), port).start()
        stripe_double.register_webhook(f"{server.url}/stripe/webhook", str(cfg.stripe.webhook_secret))
        try:
            poll_psa.run(services)
            f.make_login(services, "ap@holdings.example")
            f.make_login(services, "ap@east.example")
            context, page = _sign_in(browser, server.url, "ap@holdings.example")
            page.goto(f"{server.url}/invoices")
            headings = page.locator("h2.company-name").all_inner_texts()
            totals = {t: page.inner_text(f"#overall-balance-{t}") for t in ("USD",)}
            page.screenshot(path=shots / "1-grouped-invoices.png", full_page=True)
            axe = {"grouped invoices": serious_violations(page)}
            tokens = {}
            for number in PAID:
                tokens[number] = services.store.scalar(
                    "SELECT token FROM invoices WHERE number = ?", (number,)
                )
                page.check(f"#select-{tokens[number]}")
            page.click("#pay-selected")
            page.wait_for_selector("#continue-button")
            labels = {n: page.inner_text(f"#company-of-{t}") for n, t in tokens.items()}
            pay_total = page.inner_text("#pay-total")
            page.screenshot(path=shots / "2-pay-form.png", full_page=True)
            axe["pay form"] = serious_violations(page)
            page.click("#continue-button")
            page.wait_for_selector('#card-element input[placeholder="number"]')
            _fill_card(page)
            page.click("#pay-button")
            page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
            status = page.inner_text("#payment-status")
            lines = page.locator("#payment-lines tbody tr").all_inner_texts()
            page.screenshot(path=shots / "3-paid.png", full_page=True)
            _wait_for_webhook(services)
            drain_outbox.run(services)
            page.goto(f"{server.url}/statements/2026-03")
            statement_names = page.locator("h2.company-name").all_inner_texts()
            page.screenshot(path=shots / "4-consolidated-statement.png", full_page=True)
            axe["consolidated statement"] = serious_violations(page)
            context.close()
            child_context, child = _sign_in(browser, server.url, "ap@east.example")
            child.goto(f"{server.url}/invoices?status=all")
            child_rows = child.locator("tbody tr[id^=invoice-]").all_inner_texts()
            foreign = child.goto(f"{server.url}/invoices/{tokens['W-200']}")
            foreign_status = foreign.status if foreign else None
            child_context.close()
            yield {
                "services": services,
                "cfg": cfg,
                "cw": cw,
                "headings": headings,
                "totals": totals,
                "labels": labels,
                "pay_total": pay_total,
                "status": status,
                "lines": lines,
                "child_rows": child_rows,
                "axe": axe,
                "statement_names": statement_names,
                "foreign_status": foreign_status,
                "tokens": tokens,
            }
            assert cw.violations == []
        finally:
            stripe_double.unregister_webhook()
            server.stop()


def test_the_sync_links_both_children_to_the_parent(paid):
    s = paid["services"]
    parents = {
        r["name"]: r["parent"]
        for r in s.store.all(
            "SELECT c.name, p.name AS parent FROM clients c LEFT JOIN clients p ON p.id = c.parent_id"
        )
    }
    assert parents == {
        "Northwind East LLC": "Northwind Holdings Inc",
        "Northwind West LLC": "Northwind Holdings Inc",
        "Northwind Holdings Inc": None,
    }


def test_the_parent_sees_the_invoices_grouped_and_pays_both_children_in_one_charge(
    paid, stripe_double, smtp_sink
):
    s = paid["services"]
    assert paid["headings"] == ["Northwind Holdings Inc", "Northwind East LLC", "Northwind West LLC"]
    assert paid["totals"]["USD"] == "$1,454.75"
    assert paid["labels"] == {
        "E-100": "Northwind East LLC",
        "E-101": "Northwind East LLC",
        "W-200": "Northwind West LLC",
    }
    assert paid["pay_total"] == "$1,355.75"
    assert paid["axe"] == {"grouped invoices": [], "pay form": [], "consolidated statement": []}
    assert paid["statement_names"] == ["Northwind Holdings Inc", "Northwind East LLC", "Northwind West LLC"]
    assert "Paid" in paid["status"]
    assert any("Northwind West LLC" in ln and "W-200" in ln for ln in paid["lines"])
    # One charge at the processor, for the exact sum.
    [pay] = s.store.all("SELECT * FROM payments WHERE status = 'succeeded'")
    client = stripe.StripeClient(stripe_double.secret_key, base_addresses={"api": stripe_double.api_base})
    intents = [
        pi.to_dict()
        for pi in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if (pi.to_dict().get("metadata") or {}).get("payment_token") == pay["token"]
    ]
    assert [(pi["amount"], pi["currency"], pi["status"]) for pi in intents] == [
        (PAID_TOTAL_MINOR, "usd", "succeeded")
    ]
    # One payment of the parent, one allocation per child invoice.
    holdings = s.store.scalar("SELECT id FROM clients WHERE name = 'Northwind Holdings Inc'")
    assert (pay["client_id"], pay["amount_minor"]) == (holdings, PAID_TOTAL_MINOR)
    allocations = s.store.all(
        "SELECT i.number, c.name, a.amount_minor FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "JOIN clients c ON c.id = i.client_id WHERE a.payment_id = ? ORDER BY i.number",
        (pay["id"],),
    )
    assert [tuple(r) for r in allocations] == [
        ("E-100", "Northwind East LLC", 50_000),
        ("E-101", "Northwind East LLC", 12_550),
        ("W-200", "Northwind West LLC", 73_025),
    ]
    # Each child's invoice got its payment at ConnectWise, in requests the real API accepts.
    assert sorted((p["invoice"]["id"], Decimal(str(p["amount"]))) for p in paid["cw"].payments) == [
        (9401, Decimal("500.00")),
        (9402, Decimal("125.50")),
        (9403, Decimal("730.25")),
    ]
    assert paid["cw"].violations == []
    # The journal entry balances; each credit names its invoice's company.
    with paid["cfg"].journal_path.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["payment_reference"] == payment_reference(pay["id"])]
    assert [(r["customer"], r["invoice_number"], r["debit"], r["credit"]) for r in rows] == [
        ("Northwind Holdings Inc", "", "1355.75", ""),
        ("Northwind East LLC", "E-100", "", "500.00"),
        ("Northwind East LLC", "E-101", "", "125.50"),
        ("Northwind West LLC", "W-200", "", "730.25"),
    ]
    # One receipt, to the parent's billing contact, listing both companies with their invoices.
    receipts = [m for m in smtp_sink.messages if m["Subject"].startswith("Receipt")]
    assert len(receipts) == 1 and "ap@holdings.example" in receipts[0]["To"]
    body = receipts[0].get_body(("plain",)).get_content()
    assert "It pays invoices of Northwind East LLC, Northwind West LLC." in body
    east_at, west_at = body.index("Northwind East LLC:"), body.index("Northwind West LLC:")
    assert east_at < body.index("- E-100: $500.00 applied") < body.index("- E-101: $125.50 applied") < west_at
    assert west_at < body.index("- W-200: $730.25 applied")


def test_the_childs_contact_sees_its_own_invoices_paid_and_nothing_of_the_sibling(paid):
    rows = paid["child_rows"]
    assert len(rows) == 2 and all("Paid" in r for r in rows)
    assert any("E-100" in r for r in rows) and not any("W-200" in r or "H-1" in r for r in rows)
    assert paid["foreign_status"] == 404
