"""requires_action end to end in Chromium: autopay charges a card whose bank wants 3-D Secure;
nothing is charged, one email carries a link; the contact follows it, signs in, confirms in
localstripe's Stripe.js modal, and the invoice is paid once with one receipt.

Run twice: against plain localstripe (which leaves the PaymentIntent in requires_action) and
against the tests' extension answering as Stripe does off-session (authentication_required)."""

from __future__ import annotations

import re
from datetime import date

import pytest

from app.core.logins import set_password
from app.jobs import drain_outbox, run_autopay
from app.web import create_app
from tests.autopay_world import enable, engine_services, intents, mails, saved_card, succeeded_charges
from tests.conftest import LiveServer, free_port
from tests.factories import balance, make_client, make_invoice

PASSWORD = "correct horse battery"


@pytest.mark.parametrize("flavour", ["localstripe", "stripe_error"])
def test_the_emailed_link_completes_a_payment_the_bank_held_for_3d_secure(
    flavour, tmp_path, frozen_clock, stripe_double, stripe_ext, mail, browser, artifacts
):
    double = stripe_double if flavour == "localstripe" else stripe_ext.double
    if flavour == "stripe_error":
        stripe_ext.configure(offsession_auth_error=True)
    port = free_port()
    s = engine_services(tmp_path, frozen_clock, double, mail, port=port)
    client_id = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    enable(s, client_id, saved_card(s, double, client_id, "4000002500003155"))
    number = f"INV-3DS-{flavour}"
    inv = make_invoice(s, number, client_remote_id="acme", total_minor=64_000, due_on=date(2026, 3, 10))
    with s.store.write() as db:
        set_password(db, s.clock, "ap@acme.example", PASSWORD)

    assert run_autopay.run(s).requires_action == 1
    for _ in range(2):
        drain_outbox.run(s)
    [notice] = mails(mail, "Please confirm your payment of $640.00")
    link = re.search(
        r"http://127\.0\.0\.1:\d+/payments/[\w\-]+/authenticate", notice.get_body(("plain",)).get_content()
    )
    assert link and succeeded_charges(double, number) == 0

    server = LiveServer(create_app(s), port).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(link.group(0))
        page.fill("#email", "ap@acme.example")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_selector("#confirm-button")
        page.screenshot(path=artifacts / f"{flavour}-1-confirm.png", full_page=True)
        page.click("#confirm-button")
        page.get_by_text("Complete authentication").click()
        page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
        status = page.locator("#payment-status").inner_text()
        page.screenshot(path=artifacts / f"{flavour}-2-paid.png", full_page=True)
    finally:
        context.close()
        server.stop()
    for _ in range(2):
        drain_outbox.run(s)

    assert "Paid" in status
    assert [pi["status"] for pi in intents(double, invoices=number)] == ["succeeded"]
    assert balance(s, inv) == 0 and len(mails(mail, "Receipt: $640.00")) == 1
    assert s.store.scalar("SELECT status FROM autopay_attempts") == "succeeded"
