"""Every portal page a client uses, in Chromium at a laptop and a phone width: what it shows, a
screenshot kept in test-artifacts/portal/, and an axe-core audit with no serious violations.

The app runs on a loopback port with the Stripe double (the checkout and card pages load its
Stripe.js), the real clock, and a world of invoices of every kind (tests/e2e/portal_world.py).
The browser context bypasses the CSP only so that axe-core can be injected; the pages themselves
run no inline script.
"""

from __future__ import annotations

import re

import pytest

from app.core.clock import local_today
from app.services import build_services
from app.web import create_app
from tests.a11y.axe import serious_violations
from tests.conftest import ARTIFACTS, LiveServer, free_port, make_config
from tests.e2e import portal_world

SHOTS = ARTIFACTS / "portal"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def portal(tmp_path_factory, stripe_double, smtp_sink):
    SHOTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("portal-pages")
    port = free_port()
    cfg = make_config(
        tmp,
        port=port,
        stripe_base=stripe_double.api_base,
        smtp_port=smtp_sink.port,
        replace={
            "invite_billing_contacts = false": (
                'invite_billing_contacts = false\napproval_threshold = "5000.00"'
            )
        },
    )
    services = build_services(cfg)
    world = portal_world.build(services, local_today(services.clock, cfg.tz))
    with services.store.write() as db:
        from app.core import line_disputes

        contoso = world.contoso.id
        line_disputes.open_dispute(
            db,
            services.clock,
            client_id=contoso,
            invoice_id=world.invoices["INV-1044"].id,
            line_no=2,
            reason="The fuser kit was under warranty.",
            raised_by=world.billing,
        )
    server = LiveServer(create_app(services), port).start()
    yield services, world, server
    server.stop()


def _sign_in(page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", portal_world.PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#nav-invoices")


def _visit(page, url: str, name: str, width: str) -> list[dict]:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=SHOTS / f"{name}-{width}.png", full_page=True)
    return serious_violations(page)


@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_every_page_renders_at_laptop_and_phone_width_with_no_serious_accessibility_violations(
    portal, browser, width
):
    _, world, server = portal
    context = browser.new_context(viewport=VIEWPORTS[width], bypass_csp=True)
    page = context.new_page()
    _sign_in(page, server.url, world.billing)
    inv = world.invoices
    pages = {
        "home": "/",
        "list": "/invoices?status=all",
        "detail": f"/invoices/{inv['INV-1043'].token}",
        "detail-in-dispute": f"/invoices/{inv['INV-1044'].token}",
        "credit-memo": f"/invoices/{inv['CM-0007'].token}",
        "pay": f"/pay?invoice={inv['INV-1042'].token}&invoice={inv['INV-1043'].token}",
        "dispute": f"/invoices/{inv['INV-1043'].token}/lines/1/dispute",
        "autopay": "/autopay",
        "payment-methods": "/payment-methods",
        "statements": "/statements",
        "people": "/people",
        "payments": "/payments",
    }
    found = {name: _visit(page, server.url + path, name, width) for name, path in pages.items()}
    # The checkout page (Stripe.js from the double) once the pay form was sent.
    page.goto(server.url + pages["pay"])
    page.click("#continue-button")
    page.wait_for_selector('#card-element input[placeholder="number"]')
    page.screenshot(path=SHOTS / f"checkout-{width}.png", full_page=True)
    found["checkout"] = serious_violations(page)
    context.close()
    assert {name: v for name, v in found.items() if v} == {}
    for name in ("list", "detail", "pay", "autopay", "dispute"):
        assert (SHOTS / f"{name}-{width}.png").stat().st_size > 10_000


def test_a_phone_sees_invoices_first_with_filters_folded_behind_a_button(portal, browser):
    _, world, server = portal
    context = browser.new_context(viewport=VIEWPORTS["phone"])
    page = context.new_page()
    _sign_in(page, server.url, world.billing)
    page.goto(f"{server.url}/invoices?status=all")
    assert page.locator("#filter-panel").get_attribute("open") is None
    assert not page.locator("#search").is_visible()
    assert page.locator("tbody tr[id^=invoice-]").first.bounding_box()["y"] < VIEWPORTS["phone"]["height"]
    page.click("#filter-toggle")
    assert page.locator("#search").is_visible()
    # With a filter in use the panel stays open, so the person sees what narrows the list.
    page.goto(f"{server.url}/invoices?status=all&q=INV")
    assert page.locator("#filter-panel").get_attribute("open") is not None
    # Invoice lines: the description spans the card, its references underneath it.
    page.goto(f"{server.url}/invoices/{world.invoices['INV-1043'].token}")
    cell = page.locator("#line-1 .description-cell").bounding_box()
    row = page.locator("#line-1").bounding_box()
    assert cell["width"] > row["width"] * 0.85
    context.close()


def test_the_pay_total_follows_the_amounts_as_they_are_typed(portal, browser):
    _, world, server = portal
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    _sign_in(page, server.url, world.billing)
    a, b = world.invoices["INV-1042"], world.invoices["INV-1045"]
    page.goto(f"{server.url}/pay?invoice={a.token}&invoice={b.token}")
    assert page.inner_text("#pay-total") == "$1,350.00"
    page.fill(f"#amount-{a.token}", "40.00")
    assert page.inner_text("#pay-total") == "$140.00"
    page.fill(f"#amount-{b.token}", "12.5")
    assert page.inner_text("#pay-total") == "$52.50"
    page.fill(f"#amount-{b.token}", "twelve")
    assert page.inner_text("#pay-total") == "—"
    context.close()


def test_search_filter_and_sort_in_the_browser_return_the_right_rows(portal, browser):
    _, world, server = portal
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    _sign_in(page, server.url, world.billing)
    page.goto(f"{server.url}/invoices")

    def numbers() -> list[str]:
        return [
            re.sub(r"\s+", " ", t).strip() for t in page.locator("tbody tr td.number-cell").all_inner_texts()
        ]

    assert numbers() == ["INV-1042", "INV-1043", "INV-1044", "INV-1045", "INV-1050"]  # unpaid, by due date
    page.fill("#search", "printer")
    page.click("#apply-filters")
    assert numbers() == ["INV-1044"]
    page.goto(f"{server.url}/invoices")
    page.select_option("#filter-project", "Office move")
    page.click("#apply-filters")
    assert numbers() == ["INV-1043"]
    page.goto(f"{server.url}/invoices?status=all")
    page.click("#sort-total")
    assert numbers()[0] == "CM-0007" and numbers()[-1] == "INV-1050"
    page.click("#category-credit_memo")
    assert numbers() == ["CM-0007"]
    assert "−$307.60" in page.inner_text("#category-total-credit_memo-USD")
    context.close()


def _page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_a_phone_never_scrolls_sideways_on_statements_filters_people_or_autopay(portal, browser):
    from datetime import timedelta

    from tests.web import factories as f

    services, world, server = portal
    f.make_contact(
        services,
        world.contoso,
        "malgorzata.fitzgerald@birchwoodanimal.example",
        role="viewer",
        first_name="Małgorzata",
    )
    phone = VIEWPORTS["phone"]["width"]
    context = browser.new_context(viewport=VIEWPORTS["phone"])
    page = context.new_page()
    _sign_in(page, server.url, world.billing)
    today = local_today(services.clock, services.config.tz)
    # This month's statement and last month's: the aging table and the month's invoices fit.
    for day in (today, today.replace(day=1) - timedelta(days=1)):
        page.goto(f"{server.url}/statements/{day:%Y-%m}")
        assert page.locator("#statement-aging tbody tr").count() >= 1
        assert _page_width(page) <= phone, f"statement {day:%Y-%m}"
    page.screenshot(path=SHOTS / "statement-phone.png", full_page=True)

    page.goto(f"{server.url}/invoices?status=all")
    page.click("#filter-toggle")
    assert page.locator("#due-from").is_visible()
    assert _page_width(page) <= phone, "invoices with the filters open"
    # Every field stays inside the panel (a few pixels past it pushed the page sideways before).
    overflow = page.evaluate(
        """() => { const edge = document.querySelector('#invoice-filters').getBoundingClientRect().right;
            return [...document.querySelectorAll('#invoice-filters input, #invoice-filters select')]
              .filter(el => el.getBoundingClientRect().right > edge + 0.5).map(el => el.id); }"""
    )
    assert overflow == []

    page.goto(f"{server.url}/people")
    assert _page_width(page) <= phone, "people"
    # The label stays on one line; only the address itself may break.
    label = page.evaluate(
        """() => { const td = [...document.querySelectorAll('#contacts-table td[data-label="Email"]')]
              .find(el => el.textContent.startsWith('malgorzata'));
            const before = getComputedStyle(td, '::before');
            const pen = document.createElement('canvas').getContext('2d');
            pen.font = before.font;
            return {width: parseFloat(before.width), needed: pen.measureText('Email').width,
                    right: td.getBoundingClientRect().right}; }"""
    )
    assert label["width"] >= label["needed"] - 0.5, label
    assert label["right"] <= phone, label
    email = page.locator('#contacts-table td[data-label="Email"]').last
    email.screenshot(path=SHOTS / "people-email-phone.png")

    # Autopay: the number of days only shows with "days after the invoice date" chosen.
    page.goto(f"{server.url}/autopay")
    assert _page_width(page) <= phone, "autopay"
    page.check("#schedule-due")
    assert not page.locator("#schedule-days").is_visible()
    page.check("#schedule-after")
    assert page.locator("#schedule-days").is_visible()
    context.close()
