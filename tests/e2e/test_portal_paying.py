"""Paying in Chromium against the Stripe double: part payments, several invoices in one charge, a saved
card reused without typing it again, approvals before payment, and viewers who only look.

Each test makes its own invoices; the charges are read back from the double through the official
stripe library and the ledger from the SQLite file.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import stripe

from app.core.clock import local_today
from app.services import build_services
from app.web import create_app
from tests.conftest import ARTIFACTS, LiveServer, free_port, make_config
from tests.e2e import portal_world
from tests.factories import balance
from tests.web import factories as f

SHOTS = ARTIFACTS / "portal"


@pytest.fixture(scope="module")
def live(tmp_path_factory, stripe_double, smtp_sink):
    SHOTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("portal-paying")
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
    server = LiveServer(create_app(services), port).start()
    yield services, world, server
    server.stop()


@pytest.fixture
def page_as(live, browser):
    contexts = []

    def open_as(email: str):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{live[2].url}/login")
        page.fill("#email", email)
        page.fill("#password", portal_world.PASSWORD)
        page.click("#login-button")
        page.wait_for_selector("#nav-invoices")
        return page

    yield open_as
    for c in contexts:
        c.close()


def _invoice(live, number: str, total_minor: int, kind: str = "agreement"):
    services, world, _ = live
    today = local_today(services.clock, services.config.tz)
    return f.make_invoice(
        services,
        world.contoso,
        number,
        total_minor=total_minor,
        kind=kind,
        issued_on=today.isoformat(),
        due_on=(today + timedelta(days=30)).isoformat(),
    )


def _fill_card(page, number: str = "4242424242424242") -> None:
    card = page.locator("#card-element")
    card.locator('input[placeholder="number"]').fill(number)
    card.locator('input[placeholder="exp_month"]').fill("12")
    card.locator('input[placeholder="exp_year"]').fill("31")
    card.locator('input[placeholder="cvc"]').fill("123")
    card.locator('input[placeholder="postal_code"]').fill("60601")


def _checkout(page, *, new_card: bool = True, save: bool = False) -> str:
    """From the pay form: continue, pay, and return the payment page's status text."""
    page.click("#continue-button")
    page.wait_for_selector("#pay-button")
    if new_card:
        if page.locator("#method-new").count():  # a card saved by an earlier test is offered first
            page.check("#method-new")
        page.wait_for_selector('#card-element input[placeholder="number"]')
        _fill_card(page)
        if save:
            page.check("#save-card")
    page.click("#pay-button")
    page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
    return page.inner_text("#payment-status")


def _intents(double, token: str) -> list[dict]:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    return [
        pi.to_dict()
        for pi in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if (pi.to_dict().get("metadata") or {}).get("payment_token") == token
    ]


def _last_payment(services):
    return services.store.one("SELECT * FROM payments WHERE status != 'canceled' ORDER BY id DESC LIMIT 1")


def test_paying_40_of_100_leaves_60_due_and_paying_60_closes_the_invoice(live, page_as, stripe_double):
    services, world, server = live
    inv = _invoice(live, "PART-1", 10_000)
    page = page_as(world.billing)
    page.goto(f"{server.url}/invoices/{inv.token}")
    page.fill("#pay-amount", "40.00")
    page.click("#pay-invoice-button")
    page.wait_for_selector("#continue-button")
    assert page.inner_text("#pay-total") == "$40.00"
    assert "Paid" in _checkout(page)
    first = _last_payment(services)
    assert [(pi["amount"], pi["status"]) for pi in _intents(stripe_double, first["token"])] == [
        (4000, "succeeded")
    ]
    assert balance(services, inv.id) == 6_000
    page.goto(f"{server.url}/invoices/{inv.token}")
    assert page.inner_text("#invoice-balance") == "$60.00"
    assert "Partly paid" in page.inner_text("#invoice-status")
    page.screenshot(path=SHOTS / "partly-paid-desktop.png", full_page=True)
    assert page.input_value("#pay-amount") == "60.00"
    page.click("#pay-invoice-button")
    page.wait_for_selector("#continue-button")
    assert "Paid" in _checkout(page)
    second = _last_payment(services)
    assert [(pi["amount"], pi["status"]) for pi in _intents(stripe_double, second["token"])] == [
        (6000, "succeeded")
    ]
    assert balance(services, inv.id) == 0
    page.goto(f"{server.url}/invoices/{inv.token}")
    assert page.inner_text("#invoice-status") == "Paid" and page.inner_text("#invoice-balance") == "$0.00"
    assert page.locator("#pay-invoice-button").count() == 0
    refs = page.locator("#invoice-payments tbody tr").all_inner_texts()
    assert len(refs) == 2 and all(re.search(r"PAY-\d{6}", r) and "Visa •••• 4242" in r for r in refs), refs


def test_paying_three_invoices_at_once_makes_one_charge_and_three_allocations(live, page_as, stripe_double):
    services, world, server = live
    invs = [_invoice(live, f"TRIO-{n}", amount) for n, amount in ((1, 12_345), (2, 6_789), (3, 101))]
    page = page_as(world.billing)
    page.goto(f"{server.url}/invoices?q=TRIO")
    for inv in invs:
        page.check(f"#select-{inv.token}")
    page.click("#pay-selected")
    page.wait_for_selector("#continue-button")
    assert page.inner_text("#pay-total") == "$192.35"
    assert "Paid" in _checkout(page)
    pay = _last_payment(services)
    [pi] = _intents(stripe_double, pay["token"])
    assert (pi["amount"], pi["currency"], pi["status"]) == (19_235, "usd", "succeeded")
    allocations = services.store.all(
        "SELECT i.number, a.amount_minor FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "WHERE a.payment_id = ? ORDER BY i.number",
        (pay["id"],),
    )
    assert [(r["number"], r["amount_minor"]) for r in allocations] == [
        ("TRIO-1", 12_345),
        ("TRIO-2", 6_789),
        ("TRIO-3", 101),
    ]
    assert [balance(services, inv.id) for inv in invs] == [0, 0, 0]


def test_a_saved_card_is_reused_without_typing_it_again(live, page_as, stripe_double):
    services, world, server = live
    first_inv, second_inv = _invoice(live, "SAVE-1", 5_000), _invoice(live, "SAVE-2", 7_500)
    page = page_as(world.billing)
    page.goto(f"{server.url}/pay?invoice={first_inv.token}")
    assert "Paid" in _checkout(page, save=True)
    [saved] = services.store.all(
        "SELECT processor_ref, brand, last4, is_default FROM payment_methods WHERE client_id = ? "
        "AND removed_at IS NULL",
        (world.contoso.id,),
    )
    assert (saved["last4"], saved["is_default"]) == ("4242", 1)
    page.goto(f"{server.url}/pay?invoice={second_inv.token}")
    page.click("#continue-button")
    page.wait_for_selector("#pay-button")
    assert page.is_checked("#method-1")
    assert not page.locator("#new-card").is_visible()  # nothing to type
    page.screenshot(path=SHOTS / "checkout-saved-card-desktop.png", full_page=True)
    page.click("#pay-button")
    page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
    assert "Paid" in page.inner_text("#payment-status")
    pay = _last_payment(services)
    [pi] = _intents(stripe_double, pay["token"])
    assert (pi["amount"], pi["payment_method"], pi["status"]) == (7_500, saved["processor_ref"], "succeeded")
    assert balance(services, second_inv.id) == 0
    # The methods page lists it as the default, and it can be made the autopay method.
    page.goto(f"{server.url}/payment-methods")
    assert "Visa •••• 4242" in page.inner_text(f"#method-{saved['processor_ref']}")
    assert "Default" in page.inner_text(f"#method-{saved['processor_ref']}")


def test_an_invoice_above_the_approval_limit_cannot_be_paid_until_an_approver_approves_it(
    live, page_as, stripe_double
):
    services, world, server = live
    big = _invoice(live, "BIG-1", 600_000, kind="project")
    payments_before = services.store.scalar("SELECT COUNT(*) FROM payments")
    billing = page_as(world.billing)
    billing.goto(f"{server.url}/invoices/{big.token}")
    assert billing.inner_text("#invoice-status") == "Awaiting approval"
    assert (
        billing.locator("#pay-invoice-button").count() == 0
        and billing.locator("#approve-button").count() == 0
    )
    # Even a hand-made form is refused, and nothing is written.
    csrf = billing.locator('meta[name="csrf-token"]').get_attribute("content")
    resp = billing.request.post(
        f"{server.url}/pay",
        form={
            "invoice": big.token,
            f"amount-{big.token}": "6000.00",
            "action": "checkout",
            "csrf_token": csrf,
        },
    )
    assert resp.status == 400 and "approver" in resp.text()
    resp = billing.request.post(f"{server.url}/invoices/{big.token}/approve", form={"csrf_token": csrf})
    assert resp.status == 403
    assert services.store.scalar("SELECT COUNT(*) FROM payments") == payments_before
    approver = page_as(world.approver)
    approver.goto(f"{server.url}/invoices/{big.token}")
    approver.screenshot(path=SHOTS / "approval-desktop.png", full_page=True)
    approver.click("#approve-button")
    approver.wait_for_selector("#approval-state")
    assert "Approved by alex@contoso.example" in approver.inner_text("#approval-state")
    billing.goto(f"{server.url}/invoices/{big.token}")
    billing.click("#pay-invoice-button")
    billing.wait_for_selector("#continue-button")
    assert "Paid" in _checkout(billing)
    assert balance(services, big.id) == 0
    [pi] = _intents(stripe_double, _last_payment(services)["token"])
    assert pi["amount"] == 600_000


def test_a_viewer_sees_invoices_but_cannot_pay_dispute_or_approve(live, page_as):
    services, world, server = live
    inv = _invoice(live, "VIEW-1", 2_000)
    page = page_as(world.viewer)
    page.goto(f"{server.url}/invoices")
    assert "VIEW-1" in page.inner_text("#invoice-table")
    assert page.locator("#pay-selected").count() == 0 and page.locator("input[name=invoice]").count() == 0
    page.goto(f"{server.url}/")
    assert page.locator("#pay-all-due").count() == 0
    page.goto(f"{server.url}/invoices/{inv.token}")
    assert page.locator("#pay-invoice-button").count() == 0 and page.locator("#dispute-line-1").count() == 0
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert page.request.get(f"{server.url}/pay?invoice={inv.token}").status == 403
    assert (
        page.request.post(
            f"{server.url}/pay",
            form={
                "invoice": inv.token,
                f"amount-{inv.token}": "20.00",
                "action": "checkout",
                "csrf_token": csrf,
            },
        ).status
        == 403
    )
    assert (
        page.request.post(
            f"{server.url}/invoices/{inv.token}/lines/1/dispute",
            form={"reason": "I do not like this line at all", "csrf_token": csrf},
        ).status
        == 403
    )
    assert (
        page.request.post(f"{server.url}/invoices/{inv.token}/approve", form={"csrf_token": csrf}).status
        == 403
    )
    assert (
        page.request.post(
            f"{server.url}/payment-methods/save",
            headers={"X-CSRFToken": csrf},
            data=json.dumps({"payment_method": "pm_card_visa"}),
        ).status
        == 403
    )
    assert (
        services.store.scalar(
            "SELECT COUNT(*) FROM payments p JOIN allocations a ON a.payment_id = p.id "
            "WHERE a.invoice_id = ?",
            (inv.id,),
        )
        == 0
    )
    assert services.store.scalar("SELECT COUNT(*) FROM line_disputes WHERE invoice_id = ?", (inv.id,)) == 0
