"""Tables of the admin console and the portal in Chromium at a phone (390 px) and a laptop (1280
px) width: no word breaks mid-word (names wrap at spaces, addresses at their joints), amounts and
dates stay on one line, and no page is wider than the screen; and the invoice pages give their
figures room (list totals beside their labels, an invoice's details card wide enough).

The data is the newcomer's demo case: Birchwood Animal Hospital with a long billing address, an
overdue project invoice on autopay, a credit memo; the clock is frozen at 10:27 on Tuesday,
March 10, 2026 in Chicago. Screenshots go to test-artifacts/layout/.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.core import autopay
from app.core.audit import audit
from app.core.clock import FrozenClock, to_db
from app.services import build_services
from app.web import create_app
from tests.conftest import ARTIFACTS, LiveServer, free_port, make_config
from tests.e2e.layout import broken_words, sideways, wrapped
from tests.web import factories as f
from tests.web.admin.helpers import ADMIN_PASSWORD, make_admin

SHOTS = ARTIFACTS / "layout"
EMAIL = "malgorzata.fitzgerald-wisniewska@birchwoodanimalhospital.example"
WIDTHS = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 800}}


def seed(svc) -> dict[str, str]:
    """The rows behind every page below; returns the tokens and ids the URLs need."""
    birchwood = f.make_client(svc, "Birchwood Animal Hospital")
    summit = f.make_client(svc, "Summit Ridge Orthopedics — Eastside")
    with svc.store.write() as db:
        db.execute("UPDATE clients SET identifier = 'BirchwoodAnimalHospital' WHERE id = ?", (birchwood.id,))
        db.execute("UPDATE clients SET identifier = 'SummitRidgeOrthopedicsEast' WHERE id = ?", (summit.id,))
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "is_default, created_at) VALUES (?, 'pm_card_4242', 'card', 'visa', '4242', 12, 2031, 1, ?)",
            (birchwood.id, to_db(svc.clock.utc_now())),
        )
    f.make_person(svc, birchwood, EMAIL)
    late = f.make_invoice(
        svc, birchwood, "INV-11812", kind="project", project="Firewall replacement", phase="Phase 3 — Tuning",
        total_minor=535_000, issued_on="2026-01-18", due_on="2026-02-17",
    )
    later = f.make_invoice(
        svc, birchwood, "INV-12088", agreement="Managed Services Agreement", total_minor=380_350,
        issued_on="2026-03-01", due_on="2026-03-31", description="Managed services — March 2026",
    )
    f.make_invoice(svc, birchwood, "CM-0042", kind="credit_memo", total_minor=-30_760, due_on="2026-03-01")
    f.make_invoice(svc, summit, "INV-12001", total_minor=508_850, due_on="2026-02-20")
    pay = f.make_payment(svc, birchwood, [(late, 100_000)])
    method = svc.store.scalar("SELECT id FROM payment_methods WHERE client_id = ?", (birchwood.id,))
    autopay.set_rule(
        svc.store, svc.clock, birchwood.id, enabled=True, payment_method_id=method, max_minor=500_000,
        actor=f"login:{EMAIL}",
    )
    now = to_db(svc.clock.utc_now())
    with svc.store.write() as db:
        audit(db, svc.clock, actor=f"login:{EMAIL}", action="payment.started", target=f"payment:{pay.id}",
              detail={"amount_minor": 100_000, "currency": "USD", "invoices": ["INV-11812"],
                      "surcharge_minor": 0})
        audit(db, svc.clock, actor="cli", action="admin.second_factor_enrolled",
              target="admin@northwind-it.example")
        db.execute(
            "INSERT INTO sync_state (connector, object, last_run_at, last_success_at, counts_json) "
            "VALUES ('files', 'invoices', ?, ?, '{\"created\": 2100, \"quarantined\": 2}')",
            (now, now),
        )
    return {"client": str(birchwood.id), "payment": str(pay.id), "late": late.token, "later": later.token}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    clock = FrozenClock(datetime(2026, 3, 10, 10, 27, tzinfo=ZoneInfo("America/Chicago")))
    port = free_port()
    svc = build_services(make_config(tmp_path_factory.mktemp("layout"), port=port), clock=clock)
    ids = seed(svc)
    admin = make_admin(svc, "admin@northwind-it.example", "owner")
    server = LiveServer(create_app(svc), port).start()
    yield svc, server, clock, ids, admin
    server.stop()


def _admin_sign_in(page, server, clock, admin) -> None:
    clock.advance(timedelta(seconds=30))  # a fresh TOTP step: each code signs in once
    page.goto(f"{server.url}/admin/login")
    page.fill("#email", admin.email)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#admin-login-button")
    page.fill("#code", admin.code(clock))
    page.click("#admin-code-button")
    page.wait_for_selector("#admin-identity")


def _portal_sign_in(page, server) -> None:
    page.goto(f"{server.url}/login")
    page.fill("#email", EMAIL)
    page.fill("#password", f.PASSWORD)
    page.click("#login-button")
    page.wait_for_selector("#nav-invoices")


def _look(page, url: str, name: str) -> dict[str, object]:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
    found = {"broken": broken_words(page), "wrapped": wrapped(page), "sideways": sideways(page)}
    return {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("width", list(WIDTHS))
def test_admin_tables_keep_words_amounts_and_dates_whole(world, browser, width):
    _svc, server, clock, ids, admin = world
    context = browser.new_context(viewport=WIDTHS[width])
    page = context.new_page()
    try:
        _admin_sign_in(page, server, clock, admin)
        problems = {
            name: _look(page, f"{server.url}{path}", f"admin-{name}-{width}")
            for name, path in (
                ("dashboard", "/admin/"),
                ("clients", "/admin/clients"),
                ("client", f"/admin/clients/{ids['client']}"),
                ("payments", "/admin/payments"),
                ("payment", f"/admin/payments/{ids['payment']}"),
                ("audit", "/admin/audit"),
                ("sync", "/admin/sync"),
                ("admins", "/admin/admins"),
            )
        }
        upcoming = page.goto(f"{server.url}/admin/") and page.locator("#upcoming-autopay").inner_text()
    finally:
        context.close()
    assert {k: v for k, v in problems.items() if v} == {}
    assert "Birchwood Animal Hospital" in upcoming and "$4,350.00" in upcoming


@pytest.mark.parametrize("width", list(WIDTHS))
def test_portal_tables_keep_words_amounts_and_dates_whole(world, browser, width):
    _svc, server, _clock, ids, _admin = world
    context = browser.new_context(viewport=WIDTHS[width])
    page = context.new_page()
    try:
        _portal_sign_in(page, server)
        problems = {
            name: _look(page, f"{server.url}{path}", f"portal-{name}-{width}")
            for name, path in (
                ("home", "/"),
                ("invoices", "/invoices?status=all"),
                ("invoice", f"/invoices/{ids['late']}"),
                ("autopay", "/autopay"),
                ("payments", "/payments"),
                ("pay", f"/pay?invoice={ids['late']}&invoice={ids['later']}"),
                ("people", "/people"),
            )
        }
    finally:
        context.close()
    assert {k: v for k, v in problems.items() if v} == {}


def test_admin_pages_sit_centred_with_the_portals_measure_on_a_laptop(world, browser):
    _svc, server, clock, _ids, admin = world
    context = browser.new_context(viewport=WIDTHS["laptop"])
    page = context.new_page()
    boxes = {}
    try:
        _admin_sign_in(page, server, clock, admin)
        for name in ("clients", "audit", ""):
            page.goto(f"{server.url}/admin/{name}")
            boxes[name or "dashboard"] = page.evaluate(
                "() => { const m = document.querySelector('main').getBoundingClientRect();"
                " const h = document.querySelector('.admin-header .wrap').getBoundingClientRect();"
                " return [Math.round(m.left), Math.round(innerWidth - m.right), Math.round(m.width),"
                " Math.round(h.left)]; }"
            )
    finally:
        context.close()
    # 72rem (1152 px) wide, 64 px either side of 1280, the header lined up with the content.
    assert boxes == {name: [64, 64, 1152, 64] for name in ("clients", "audit", "dashboard")}


_PAIRS = """() => [...document.querySelectorAll('#selection-totals > div')].map(d => {
  const t = d.querySelector('dt').getBoundingClientRect(), a = d.querySelector('dd').getBoundingClientRect();
  return [d.innerText.replace(/\\s+/g, ' ').trim(), Math.abs(t.top - a.top) < 2 && a.left > t.right];
})"""


def test_the_invoice_list_keeps_each_total_beside_its_label_on_a_phone(world, browser):
    _svc, server, _clock, _ids, _admin = world
    context = browser.new_context(viewport=WIDTHS["phone"])
    page = context.new_page()
    try:
        _portal_sign_in(page, server)
        page.goto(f"{server.url}/invoices?status=all")
        pairs = page.evaluate(_PAIRS)
    finally:
        context.close()
    # INV-11812 5,350.00 + INV-12088 3,803.50 − CM-0042 307.60; balances 4,350.00 + 3,803.50 − 307.60.
    assert pairs == [["Total USD $8,845.90", True], ["Balance USD $7,845.90", True]]


def test_the_invoice_page_gives_its_details_room_and_its_pdf_button_space(world, browser):
    _svc, server, _clock, ids, _admin = world
    found = {}
    for width in WIDTHS:
        context = browser.new_context(viewport=WIDTHS[width])
        page = context.new_page()
        try:
            _portal_sign_in(page, server)
            page.goto(f"{server.url}/invoices/{ids['later']}")
            pdf = page.locator("#invoice-pdf").bounding_box()
            balance = page.locator("main .cards .card.total").bounding_box()
            facts = page.locator("main .cards .facts").bounding_box()
            found[width] = {
                "gap under the PDF button": round(balance["y"] - (pdf["y"] + pdf["height"])),
                "details card at least half the width": facts["width"] >= 0.5 * WIDTHS[width]["width"] - 32,
                "details on one line each": wrapped(page, "main .cards .facts dd"),
            }
        finally:
            context.close()
    # On a phone the button sits 16 px above the balance card; on a laptop it is beside the title.
    assert found["phone"]["gap under the PDF button"] >= 12
    assert found["laptop"]["details card at least half the width"] is True
    assert found["laptop"]["details on one line each"] == []


def test_radio_buttons_and_checkboxes_keep_their_size_beside_a_label_that_wraps_on_a_phone(world, browser):
    _svc, server, _clock, _ids, _admin = world
    context = browser.new_context(viewport=WIDTHS["phone"])
    page = context.new_page()
    try:
        _portal_sign_in(page, server)
        page.goto(f"{server.url}/autopay")
        sizes = page.evaluate(
            """() => [...document.querySelectorAll('main input[type=radio], main input[type=checkbox]')]
                .filter(el => el.offsetParent !== null)
                .map(el => [el.name + '=' + el.value, Math.round(el.getBoundingClientRect().width),
                            Math.round(el.getBoundingClientRect().height)])"""
        )
    finally:
        context.close()
    assert sizes, "the autopay page shows its choices"
    squeezed = [s for s in sizes if (s[1], s[2]) != (20, 20)]  # 1.25rem
    assert squeezed == [], squeezed
