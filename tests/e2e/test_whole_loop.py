"""The whole loop in Chromium: ConnectWise -> sync -> invitation -> sign-in -> pay two invoices by
card -> paid in the portal, one charge at the processor, one receipt, one PSA payment per invoice,
matching journal lines. Then replays, and another company's contact trying every URL.

Real parts only: the ConnectWise fake (checking requests against the vendor spec), localstripe
through the official library, aiosmtpd, Chromium through Playwright, a SQLite file.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
import time
from decimal import Decimal

import pytest
import requests
import stripe

from app.core.payment_refs import payment_reference
from app.jobs import drain_outbox, poll_psa
from app.services import build_services
from app.web import create_app
from tests.conftest import LiveServer, free_port
from tests.cw_world import contoso, cw_config
from tests.fakes.connectwise import ConnectWiseFake

PAID = ("INV-1042", "INV-1044")  # the agreement and the T&M invoice; the project one stays open
PAID_TOTAL_MINOR = 125000 + 28725


def _invite_link(messages, to: str) -> str:
    for m in messages:
        if to in m["To"]:
            found = re.search(r"http://127\.0\.0\.1:\d+/invite/[\w\-]+", m.get_body(("plain",)).get_content())
            assert found, m.get_body(("plain",)).get_content()
            return found.group(0)
    raise AssertionError(f"no invitation to {to} among {[m['To'] for m in messages]}")


def _accept_invitation(page, link: str, password: str, shots, name: str) -> None:
    page.goto(link)
    page.screenshot(path=shots / f"{name}-1-invitation.png", full_page=True)
    page.fill("#password", password)
    page.fill("#password-confirm", password)
    page.click("#set-password-button")
    page.wait_for_selector("#nav-invoices")


def _fill_card(page, number: str = "4242424242424242") -> None:
    card = page.locator("#card-element")
    card.locator('input[placeholder="number"]').fill(number)
    card.locator('input[placeholder="exp_month"]').fill("12")
    card.locator('input[placeholder="exp_year"]').fill("31")
    card.locator('input[placeholder="cvc"]').fill("123")
    card.locator('input[placeholder="postal_code"]').fill("60601")


class Loop:
    """Everything the tests of this module look at after the one browser payment."""


@pytest.fixture(scope="module")
def loop(tmp_path_factory, stripe_double, smtp_sink, browser):
    from tests.conftest import ARTIFACTS

    shots = ARTIFACTS / "whole_loop"
    shots.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("loop")
    smtp_sink.clear()
    with ConnectWiseFake() as cw:
        world = contoso(cw)
        port = free_port()
        cfg = cw_config(tmp, cw, stripe_base=stripe_double.api_base, smtp_port=smtp_sink.port, port=port)
        services = build_services(cfg)
        server = LiveServer(create_app(services), port).start()
        stripe_double.register_webhook(f"{server.url}/stripe/webhook", str(cfg.stripe.webhook_secret))
        try:
            poll_psa.run(services)
            drain_outbox.run(services)
            invitations = smtp_sink.wait_for(2)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            _accept_invitation(
                page,
                _invite_link(invitations, "ap@contoso.example"),
                "correct horse battery",
                shots,
                "contoso",
            )
            page.goto(f"{server.url}/invoices")
            page.screenshot(path=shots / "contoso-2-invoices.png", full_page=True)
            listed = page.locator("tbody tr[id^=invoice-]").all_inner_texts()
            for number in PAID:
                token = services.store.scalar("SELECT token FROM invoices WHERE number = ?", (number,))
                page.check(f"#select-{token}")
            page.click("#pay-selected")
            page.wait_for_selector("#continue-button")
            page.screenshot(path=shots / "contoso-3-pay.png", full_page=True)
            page.click("#continue-button")
            page.wait_for_selector('#card-element input[placeholder="number"]')
            _fill_card(page)
            page.screenshot(path=shots / "contoso-4-checkout.png", full_page=True)
            page.click("#pay-button")
            page.wait_for_url(re.compile(r".*/payments/[\w\-]+$"), timeout=20_000)
            status = page.locator("#payment-status").inner_text()
            page.screenshot(path=shots / "contoso-5-paid.png", full_page=True)
            page.goto(f"{server.url}/invoices?status=all")
            after = {
                number: page.locator(f"tr:has-text('{number}')").inner_text()
                for number in ("INV-1042", "INV-1043", "INV-1044")
            }
            page.screenshot(path=shots / "contoso-6-invoices-after.png", full_page=True)
            payment_token = services.store.scalar("SELECT token FROM payments WHERE status = 'succeeded'")
            _wait_for_webhook(services)
            drain_outbox.run(services)
            lp = Loop()
            lp.__dict__.update(
                services=services,
                server=server,
                cw=cw,
                world=world,
                listed=listed,
                status=status,
                after=after,
                payment_token=payment_token,
                shots=shots,
                cfg=cfg,
                invitations=invitations,
                context=context,
            )
            yield lp
            context.close()
            assert cw.violations == []
        finally:
            stripe_double.unregister_webhook()
            server.stop()


def _wait_for_webhook(services, timeout: float = 15.0) -> None:
    """localstripe posts events about a second after the call; wait until ours was processed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if services.store.scalar(
            "SELECT COUNT(*) FROM stripe_events WHERE type = 'payment_intent.succeeded' "
            "AND processed_at IS NOT NULL"
        ):
            return
        time.sleep(0.2)
    raise AssertionError("the payment_intent.succeeded webhook did not arrive")


def _receipt_reference(loop) -> str:
    """The "PAY-000123" on the receipt, which the journal carries too."""
    pay_id = loop.services.store.scalar("SELECT id FROM payments WHERE token = ?", (loop.payment_token,))
    return payment_reference(pay_id)


def _intents_for(double, payment_token: str) -> list[dict]:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    return [
        pi.to_dict()
        for pi in client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        if (pi.to_dict().get("metadata") or {}).get("payment_token") == payment_token
    ]


def _receipts(sink) -> list:
    return [m for m in sink.messages if m["Subject"].startswith("Receipt")]


def _journal(cfg) -> list[dict]:
    with cfg.journal_path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cw_payments(cw) -> list[tuple[int, Decimal]]:
    return sorted((p["invoice"]["id"], Decimal(str(p["amount"]))) for p in cw.payments)


def test_contact_pays_two_of_three_invoices_and_every_system_agrees(loop, stripe_double, smtp_sink):
    # The portal listed exactly the three invoices with their totals.
    assert len(loop.listed) == 3
    for number, total in (("INV-1042", "$1,250.00"), ("INV-1043", "$3,400.50"), ("INV-1044", "$287.25")):
        assert any(number in row and total in row for row in loop.listed), (number, loop.listed)
    assert "Paid" in loop.status
    assert "Paid" in loop.after["INV-1042"] and "Paid" in loop.after["INV-1044"]
    assert "Paid" not in loop.after["INV-1043"] and "$3,400.50" in loop.after["INV-1043"]
    # One successful charge at the processor for the sum, to the cent.
    [pi] = _intents_for(stripe_double, loop.payment_token)
    assert (pi["amount"], pi["currency"], pi["status"]) == (PAID_TOTAL_MINOR, "usd", "succeeded")
    # One receipt listing both invoice numbers.
    [receipt] = _receipts(smtp_sink)
    body = receipt.get_body(("plain",)).get_content()
    assert "ap@contoso.example" in receipt["To"] and "$1,537.25" in receipt["Subject"]
    assert "INV-1042: $1,250.00 applied" in body and "INV-1044: $287.25 applied" in body
    # One PSA payment per paid invoice with the right amount, in requests the real API accepts.
    assert _cw_payments(loop.cw) == [(9001, Decimal("1250.00")), (9003, Decimal("287.25"))]
    assert loop.cw.violations == []
    # The journal entry balances and names both invoices.
    rows = [r for r in _journal(loop.cfg) if r["payment_reference"] == _receipt_reference(loop)]
    assert [(r["invoice_number"], r["debit"], r["credit"]) for r in rows] == [
        ("", "1537.25", ""),
        ("INV-1042", "", "1250.00"),
        ("INV-1044", "", "287.25"),
    ]
    assert sorted(p.name for p in loop.shots.glob("contoso-*.png")) == [
        "contoso-1-invitation.png",
        "contoso-2-invoices.png",
        "contoso-3-pay.png",
        "contoso-4-checkout.png",
        "contoso-5-paid.png",
        "contoso-6-invoices-after.png",
    ]


def _signed(body: bytes, secret: str) -> str:
    t = int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def test_outbox_runs_and_webhook_replays_change_nothing(loop, stripe_double, smtp_sink):
    client = stripe.StripeClient(stripe_double.secret_key, base_addresses={"api": stripe_double.api_base})
    [pi] = _intents_for(stripe_double, loop.payment_token)
    events = [
        e.to_dict()
        for e in client.v1.events.list(
            params={"type": "payment_intent.succeeded", "limit": 100}
        ).auto_paging_iter()
    ]
    [event] = [e for e in events if e["data"]["object"]["id"] == pi["id"]]
    body = json.dumps(event).encode()
    for _ in range(2):
        r = requests.post(
            f"{loop.server.url}/stripe/webhook",
            data=body,
            timeout=10,
            headers={
                "Stripe-Signature": _signed(body, str(loop.cfg.stripe.webhook_secret)),
                "Content-Type": "application/json",
            },
        )
        assert r.status_code == 200, r.text
    for _ in range(2):
        drain_outbox.run(loop.services)
    assert len(_receipts(smtp_sink)) == 1
    assert _cw_payments(loop.cw) == [(9001, Decimal("1250.00")), (9003, Decimal("287.25"))]
    rows = [r for r in _journal(loop.cfg) if r["payment_reference"] == _receipt_reference(loop)]
    assert len({r["entry_key"] for r in rows}) == 1 and len(rows) == 3
    assert loop.services.store.scalar("SELECT COUNT(*) FROM payments WHERE status = 'succeeded'") == 1
    assert len(_intents_for(stripe_double, loop.payment_token)) == 1
    # A forged delivery is refused without touching anything.
    r = requests.post(
        f"{loop.server.url}/stripe/webhook",
        data=body,
        timeout=10,
        headers={"Stripe-Signature": _signed(body, "whsec_wrong")},
    )
    assert r.status_code == 400


def test_another_companys_contact_cannot_see_or_pay_these_invoices(loop, browser):
    s = loop.services
    context = browser.new_context()
    page = context.new_page()
    _accept_invitation(
        page,
        _invite_link(loop.invitations, "ap@fabrikam.example"),
        "another good password",
        loop.shots,
        "fabrikam",
    )
    base = loop.server.url
    for path in ("/", "/invoices?status=all", "/payments"):
        html = page.goto(base + path).text()
        assert "INV-104" not in html and "Contoso" not in html, path
    contoso_invoices = [r[0] for r in s.store.all("SELECT token FROM invoices WHERE number LIKE 'INV-104%'")]
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    for token in contoso_invoices:
        resp = page.request.get(f"{base}/invoices/{token}")
        assert resp.status == 404 and "INV-104" not in resp.text()
        resp = page.request.get(f"{base}/pay?invoice={token}")
        assert resp.status in (400, 404) and "INV-104" not in resp.text()
        resp = page.request.post(
            f"{base}/pay", form={"invoice": token, f"amount-{token}": "1.00", "csrf_token": csrf}
        )
        assert resp.status in (400, 404) and "INV-104" not in resp.text()
    for path in (f"/payments/{loop.payment_token}", f"/pay/{loop.payment_token}"):
        resp = page.request.get(base + path)
        assert resp.status == 404 and "1,537.25" not in resp.text(), path
    resp = page.request.post(
        f"{base}/pay/{loop.payment_token}/confirm",
        headers={"X-CSRFToken": csrf},
        data=json.dumps({"payment_method": "pm_card_visa", "save": False}),
    )
    assert resp.status == 404
    page.screenshot(path=loop.shots / "fabrikam-2-own-invoices.png", full_page=True)
    assert (
        s.store.scalar(
            "SELECT COUNT(*) FROM payments WHERE client_id = (SELECT id FROM clients "
            "WHERE name = 'Fabrikam Builders Inc')"
        )
        == 0
    )
    context.close()
