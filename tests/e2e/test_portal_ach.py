"""Bank (ACH) payments in Chromium, the way Stripe.js does them: the tests' extension of localstripe
(tests/stripe_ext.py) serves collectBankAccountForSetup / confirmUsBankAccountSetup with a dialog of
Stripe's test accounts, and keeps each debit processing until the test settles or returns it.

A billing contact adds a bank account after reading the debit authorization, pays two invoices with
it in one PaymentIntent, sees them pending (never paid, no receipt); the bank settles -> paid and one
receipt; a second account, added at checkout, is returned for insufficient funds -> the invoices
reopen and the contact is told. A card surcharge is switched on throughout: a bank debit never has it.
Removing the account detaches it at Stripe once. Webhooks arrive over HTTP from the double.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import stripe

from app.core.clock import local_today
from app.core.payment_refs import payment_reference
from app.demo.runner import WEBHOOK_SECRET
from app.jobs import drain_outbox
from app.services import build_services
from app.web import create_app
from tests.autopay_world import journal, mails
from tests.conftest import ARTIFACTS, LiveServer, free_port, make_config
from tests.factories import balance
from tests.web import factories as f

SHOTS = ARTIFACTS / "portal-ach"
SURCHARGE = '\n[surcharge]\nenabled = true\nbasis_points = 300\ncap = "25.00"\n'


@pytest.fixture(scope="module")
def live(tmp_path_factory, stripe_ext_double, smtp_sink):
    SHOTS.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("portal-ach")
    port = free_port()
    cfg = make_config(
        tmp,
        port=port,
        stripe_base=stripe_ext_double.api_base,
        smtp_port=smtp_sink.port,
        replace={"ach_enabled = false": "ach_enabled = true"},
        extra=SURCHARGE,
    )
    services = build_services(cfg)
    client = f.make_client(services, "Contoso Dental LLC")
    billing = f.make_person(services, client, "dana@contoso.example", role="billing")
    server = LiveServer(create_app(services), port).start()
    stripe_ext_double.register_webhook(
        f"{server.url}/stripe/webhook", WEBHOOK_SECRET, webhook_id="portal-ach"
    )
    yield services, client, billing, server
    stripe_ext_double.unregister_webhook("portal-ach")
    server.stop()


@pytest.fixture
def page(live, browser):
    _, _, billing, server = live
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.goto(f"{server.url}/login")
    pg.fill("#email", billing)
    pg.fill("#password", f.PASSWORD)
    pg.click("#login-button")
    pg.wait_for_selector("#nav-invoices")
    yield pg
    context.close()


def _invoice(live, number: str, total_minor: int):
    services, client, _, _ = live
    today = local_today(services.clock, services.config.tz)
    return f.make_invoice(
        services,
        client,
        number,
        total_minor=total_minor,
        issued_on=today.isoformat(),
        due_on=(today + timedelta(days=30)).isoformat(),
    )


def _intents(double, token: str) -> list[dict]:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    return [
        pi.to_dict()
        for pi in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if (pi.to_dict().get("metadata") or {}).get("payment_token") == token
    ]


def _wait_status(services, token: str, status: str, timeout: float = 10.0) -> None:
    """Until the webhook from the double has moved the payment to `status`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if services.store.scalar("SELECT status FROM payments WHERE token = ?", (token,)) == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"payment {token} never became {status}")


def _drain(services) -> None:
    for _ in range(3):
        drain_outbox.run(services)


def _pick_bank(page, account: str) -> None:
    page.wait_for_selector("#ls-bank-dialog")
    page.check(f"#ls-bank-{account}")
    page.click("#ls-bank-link")


def _pay_by_bank(page, server, invoices) -> str:
    """From the pay page of `invoices`, choose the bank, continue; returns the checkout's token."""
    page.goto(f"{server.url}/pay?" + "&".join(f"invoice={inv.token}" for inv in invoices))
    page.check("#method-ach")
    page.click("#continue-button")
    page.wait_for_selector("#pay-button")
    return page.url.rstrip("/").split("/")[-1]


def test_a_bank_account_added_in_the_browser_pays_two_invoices_pending_until_the_bank_settles(
    live, page, stripe_ext, mail
):
    services, client, billing, server = live
    double = stripe_ext.double
    a, b = _invoice(live, "ACH-1", 125_000), _invoice(live, "ACH-2", 28_725)

    # Add the account on the payment methods page, the authorization shown before anything is confirmed.
    page.goto(f"{server.url}/payment-methods")
    page.click("#add-bank")
    page.wait_for_selector("#ach-mandate")
    mandate = page.inner_text("#ach-mandate")
    assert "authorize Northwind IT to debit the bank account" in mandate
    assert "withdraw this authorization" in mandate
    page.screenshot(path=SHOTS / "add-bank-desktop.png", full_page=True)
    page.click("#save-method-button")
    _pick_bank(page, "000123456789")
    page.wait_for_url(re.compile(r".*/payment-methods$"), timeout=20_000)
    [saved] = services.store.all(
        "SELECT processor_ref, type, bank_name, last4, is_default FROM payment_methods WHERE client_id = ?",
        (client.id,),
    )
    assert (saved["type"], saved["bank_name"], saved["last4"], saved["is_default"]) == (
        "us_bank_account",
        "STRIPE TEST BANK",
        "6789",
        1,
    )
    assert "STRIPE TEST BANK •••• 6789" in page.inner_text(f"#method-{saved['processor_ref']}")
    [accepted] = [m for m in stripe_ext.mandates().values() if m["payment_method"] == saved["processor_ref"]]
    assert accepted["customer_acceptance"]["type"] == "online"

    # The pay page: card shows the surcharge, the bank none, and the total follows the choice.
    page.goto(f"{server.url}/pay?invoice={a.token}&invoice={b.token}")
    assert page.inner_text("#pay-total") == "$1,562.25"  # 1,537.25 + 3% (46.12) capped at 25.00
    assert page.inner_text("#pay-surcharge") == "$25.00"
    page.check("#method-ach")
    assert page.inner_text("#pay-total") == "$1,537.25"
    assert not page.locator("#pay-surcharge-line").is_visible()
    page.click("#continue-button")
    page.wait_for_selector("#pay-button")
    token = page.url.rstrip("/").split("/")[-1]
    assert page.is_checked("#method-1")  # the saved account, nothing to enter
    assert "Authorize and pay $1,537.25" in page.inner_text("#pay-button")
    assert page.locator("#ach-mandate").is_visible() and page.locator("#checkout-surcharge").count() == 0
    page.screenshot(path=SHOTS / "checkout-bank-desktop.png", full_page=True)
    page.click("#pay-button")
    page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
    assert page.inner_text("#payment-status") == "Pending — not paid yet"
    assert "Bank payments take a few working days" in page.inner_text("#pending-explained")

    [pi] = _intents(double, token)
    assert (pi["amount"], pi["currency"], pi["status"], pi["payment_method"]) == (
        153_725,
        "usd",
        "processing",
        saved["processor_ref"],
    )
    pay = services.store.one("SELECT * FROM payments WHERE token = ?", (token,))
    assert (pay["method"], pay["surcharge_minor"], pay["status"]) == ("ach", 0, "processing")
    assert (balance(services, a.id), balance(services, b.id)) == (125_000, 28_725)
    for inv in (a, b):
        page.goto(f"{server.url}/invoices/{inv.token}")
        assert page.inner_text("#invoice-status") == "Payment pending"
    _drain(services)
    assert mails(mail, "Receipt") == []

    stripe_ext.settle(pi["id"], "succeeded")
    _wait_status(services, token, "succeeded")
    _drain(services)
    assert (balance(services, a.id), balance(services, b.id)) == (0, 0)
    [receipt] = mails(mail, "Receipt")
    assert receipt["To"] == billing and "$1,537.25" in receipt["Subject"]
    assert "surcharge" not in receipt.get_body(("plain",)).get_content().lower()
    page.goto(f"{server.url}/payments/{token}")
    assert page.inner_text("#payment-status").startswith("Paid")
    assert len(_intents(double, token)) == 1  # one debit, however many events arrived


def test_a_bank_account_added_at_checkout_is_returned_and_the_invoices_reopen(live, page, stripe_ext, mail):
    services, _, billing, server = live
    double = stripe_ext.double
    a, b = _invoice(live, "RET-1", 40_000), _invoice(live, "RET-2", 2_550)
    token = _pay_by_bank(page, server, [a, b])
    if page.locator("#method-new").count():  # an account saved by an earlier test is offered first
        page.check("#method-new")
    page.fill("#account-holder", "")
    page.click("#pay-button")
    page.locator("#payment-status", has_text="Enter the account holder's name.").wait_for()
    page.fill("#account-holder", "Contoso Dental LLC")
    page.click("#pay-button")
    page.wait_for_selector("#ls-bank-dialog")
    page.click("#ls-bank-cancel")  # closing Stripe's dialog charges nothing
    page.locator("#payment-status", has_text="No bank account was chosen").wait_for()
    assert _intents(double, token) == []
    page.click("#pay-button")
    _pick_bank(page, "000222222227")
    page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
    assert page.inner_text("#payment-status") == "Pending — not paid yet"
    [pi] = _intents(double, token)
    assert (pi["amount"], pi["status"]) == (42_550, "processing")
    method = services.store.one(
        "SELECT type, last4 FROM payment_methods WHERE processor_ref = ?", (pi["payment_method"],)
    )
    assert (method["type"], method["last4"]) == ("us_bank_account", "2227")  # kept with its mandate

    stripe_ext.settle(pi["id"], "failed", failure_code="insufficient_funds")
    _wait_status(services, token, "failed")
    _drain(services)
    assert (balance(services, a.id), balance(services, b.id)) == (40_000, 2_550)
    page.goto(f"{server.url}/invoices/{a.token}")
    assert page.inner_text("#invoice-status") != "Payment pending"
    assert page.locator("#pay-invoice-button").count() == 1  # open for payment again
    [notice] = mails(mail, "Your bank payment of $425.50 to Northwind IT failed")
    assert notice["To"] == billing
    assert mails(mail, "Receipt") == []


def test_removing_a_bank_account_detaches_it_at_stripe_once(live, page, stripe_ext):
    services, client, _, server = live
    page.goto(f"{server.url}/payment-methods?add=bank")
    page.click("#save-method-button")
    _pick_bank(page, "000111111113")
    page.wait_for_url(re.compile(r".*/payment-methods$"), timeout=20_000)
    ref = services.store.scalar(
        "SELECT processor_ref FROM payment_methods WHERE client_id = ? AND last4 = '1113'", (client.id,)
    )
    stripe_client = stripe.StripeClient(
        stripe_ext.double.secret_key, base_addresses={"api": stripe_ext.double.api_base}
    )
    assert stripe_client.v1.payment_methods.retrieve(ref).customer is not None
    page.click(f"#remove-{ref}")
    page.wait_for_selector(f"#method-{ref}", state="detached")
    for _ in range(3):  # the outbox runs again and again; Stripe is asked once
        _drain(services)
    detaches = [r for r in stripe_ext.requests() if r["path"] == f"/v1/payment_methods/{ref}/detach"]
    assert len(detaches) == 1 and detaches[0]["key"] == f"detach-{ref}"
    assert stripe_client.v1.payment_methods.retrieve(ref).customer is None
    assert (
        services.store.scalar(
            "SELECT status FROM outbox WHERE kind = 'stripe_detach_method' AND payload_json LIKE ?",
            (f"%{ref}%",),
        )
        == "done"
    )


def _fill_card(page, number: str = "4242424242424242") -> None:
    card = page.locator("#card-element")
    card.locator('input[placeholder="number"]').fill(number)
    card.locator('input[placeholder="exp_month"]').fill("12")
    card.locator('input[placeholder="exp_year"]').fill("31")
    card.locator('input[placeholder="cvc"]').fill("123")
    card.locator('input[placeholder="postal_code"]').fill("60601")


def test_a_card_payment_discloses_the_surcharge_charges_it_in_the_same_intent_and_books_it(
    live, page, stripe_ext, mail
):
    services, _, billing, server = live
    inv = _invoice(live, "SUR-1", 12_345)
    page.goto(f"{server.url}/pay?invoice={inv.token}")
    assert page.is_checked("#method-card")
    assert page.inner_text("#pay-surcharge") == "$3.70"  # 3% of 123.45 = 3.7035
    assert page.inner_text("#pay-total") == "$127.15"
    page.fill(f"#amount-{inv.token}", "100.00")  # a part payment: the surcharge follows the amount
    assert (page.inner_text("#pay-surcharge"), page.inner_text("#pay-total")) == ("$3.00", "$103.00")
    page.check("#method-ach")
    assert page.inner_text("#pay-total") == "$100.00"
    page.check("#method-card")
    assert page.inner_text("#pay-total") == "$103.00"
    page.screenshot(path=SHOTS / "pay-surcharge-desktop.png", full_page=True)
    page.click("#continue-button")
    page.wait_for_selector("#pay-button")
    token = page.url.rstrip("/").split("/")[-1]
    assert page.inner_text("#checkout-surcharge") == "$3.00"
    assert page.inner_text("#pay-button") == "Pay $103.00"
    if page.locator("#method-new").count():
        page.check("#method-new")
    page.wait_for_selector('#card-element input[placeholder="number"]')
    _fill_card(page)
    page.click("#pay-button")
    page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
    assert page.inner_text("#payment-status").startswith("Paid")

    [pi] = _intents(stripe_ext.double, token)
    assert (pi["amount"], pi["status"]) == (10_300, "succeeded")  # one intent: 100.00 + 3.00
    pay = services.store.one("SELECT * FROM payments WHERE token = ?", (token,))
    assert (pay["amount_minor"], pay["surcharge_minor"], pay["method"]) == (10_300, 300, "card")
    assert balance(services, inv.id) == 2_345  # the surcharge is never allocated to the invoice
    _drain(services)
    [receipt] = mails(mail, "Receipt")
    assert receipt["To"] == billing
    assert (
        "Card surcharge:  $3.00 (included in the amount paid)" in receipt.get_body(("plain",)).get_content()
    )
    entry = [
        (r["account"], r["invoice_number"], r["debit"], r["credit"])
        for r in journal(services)
        if r["payment_reference"] == payment_reference(pay["id"])  # the reference on the receipt
    ]
    assert entry == [
        ("Stripe clearing", "", "103.00", ""),
        ("Accounts receivable", "SUR-1", "", "100.00"),
        ("Card surcharge income", "", "", "3.00"),
    ]


def test_the_double_can_settle_a_debit_by_itself_as_the_demo_has_it(stripe_ext):
    client = stripe.StripeClient(
        stripe_ext.double.secret_key, base_addresses={"api": stripe_ext.double.api_base}
    )
    stripe_ext.configure(ach_settle_after_seconds=1)
    customer = client.v1.customers.create(params={"name": "Demo Co"})
    pm = client.v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "billing_details": {"name": "Demo Co"},
            "us_bank_account": {"account_number": "000123456789", "routing_number": "110000000"},
        }
    )
    pi = client.v1.payment_intents.create(
        params={
            "amount": 5_000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": pm.id,
            "payment_method_types": ["us_bank_account"],
            "confirm": True,
        }
    )
    assert pi.status == "processing"
    deadline = time.monotonic() + 10
    while client.v1.payment_intents.retrieve(pi.id).status == "processing" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"


def test_the_fake_stripe_js_pays_a_payment_intent_by_bank_without_saving(browser, stripe_ext):
    """collectBankAccountForPayment / confirmUsBankAccountPayment, for a page that pays without saving."""
    double = stripe_ext.double
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    pi = client.v1.payment_intents.create(
        params={"amount": 7_700, "currency": "usd", "payment_method_types": ["us_bank_account"]}
    )
    context = browser.new_context()
    pg = context.new_page()
    try:
        pg.set_content(f'<script src="{double.js_url}"></script>')
        pg.evaluate(
            """secret => { window.stripe = Stripe("pk_test_123");
                window.collected = stripe.collectBankAccountForPayment({clientSecret: secret, params: {
                  payment_method_type: "us_bank_account",
                  payment_method_data: {billing_details: {name: "Jo Payer"}}}}); }""",
            pi.client_secret,
        )
        _pick_bank(pg, "000123456789")
        collected = pg.evaluate("window.collected")
        assert collected["paymentIntent"]["status"] == "requires_confirmation"
        confirmed = pg.evaluate("secret => stripe.confirmUsBankAccountPayment(secret)", pi.client_secret)
        assert confirmed["paymentIntent"]["status"] == "processing"
        assert confirmed["paymentIntent"]["mandate"].startswith("mandate_")
        refused = pg.evaluate(
            """secret => stripe.collectBankAccountForPayment({clientSecret: secret,
                 params: {payment_method_type: "us_bank_account", payment_method_data: {}}})""",
            pi.client_secret,
        )
        assert "billing_details.name is required" in refused["error"]["message"]
    finally:
        context.close()
    at_stripe = client.v1.payment_intents.retrieve(pi.id)
    assert (at_stripe.status, at_stripe.amount) == ("processing", 7_700)
    stripe_ext.settle(pi.id, "succeeded")
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
