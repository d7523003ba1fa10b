"""The pay form's validation, the checkout and payment pages that need no processor, and viewers.

Charging through Stripe (begin/confirm with the double) is covered by the checkout tests; here
Stripe is unreachable, so a request that gets past validation ends at "processor unavailable".
"""

from __future__ import annotations

import json
import re

import pytest

from app.web.pay import AmountError, parse_amount
from tests.web import factories as f
from tests.web.conftest import csrf_token, post, sign_in

PROCESSOR_DOWN = "We could not reach the card processor"


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("1250.00", "USD", 125_000),
        ("$1,250", "USD", 125_000),
        (" 12.5 ", "USD", 1_250),
        (".5", "USD", 50),
        ("10000", "JPY", 10_000),
        ("¥10,000", "JPY", 10_000),
        ("18.600", "KWD", 18_600),
    ],
)
def test_parse_amount_accepts_what_people_type(text, currency, minor):
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("", "USD", "Enter an amount."),
        ("ten dollars", "USD", "Enter the amount as a number"),
        ("1e3", "USD", "Enter the amount as a number"),
        ("NaN", "USD", "Enter the amount as a number"),
        ("-5", "USD", "cannot be negative"),
        ("10.001", "USD", "USD amounts have at most 2 decimal places."),
        ("10.5", "JPY", "JPY amounts have no decimal places."),
    ],
)
def test_parse_amount_explains_what_is_wrong(text, currency, message):
    with pytest.raises(AmountError, match=re.escape(message)):
        parse_amount(text, currency)


def _pay(client, invoices, amounts):
    data = {"invoice": [i.token for i in invoices], "action": "checkout"}
    data.update({f"amount-{i.token}": a for i, a in zip(invoices, amounts, strict=True)})
    return post(client, "/pay", data)


def _error(html: str, invoice) -> str:
    match = re.search(rf'id="error-{re.escape(invoice.token)}">([^<]+)<', html)
    return match.group(1) if match else ""


def test_pay_form_defaults_to_what_is_left_to_pay(signed_in, svc, acme):
    a = f.make_invoice(svc, acme, "INV-1", total_minor=125_000)
    f.make_payment(svc, acme, [(a, 25_000)], status="processing")  # in flight: not payable twice
    b = f.make_invoice(svc, acme, "INV-2", total_minor=5_000)
    html = signed_in.get(f"/pay?invoice={a.token}&invoice={b.token}").get_data(as_text=True)
    assert f'id="amount-{a.token}"' in html and 'value="1000.00"' in html and 'value="50.00"' in html
    assert re.search(r'id="pay-total">\$1,050.00<', html)
    assert 'id="continue-button"' in html


def test_pay_form_shows_a_message_for_each_bad_amount(signed_in, svc, acme):
    inv = [f.make_invoice(svc, acme, f"INV-{n}", total_minor=10_000) for n in range(6)]
    response = _pay(signed_in, inv, ["junk", "-1", "1.234", "0", "100.01", "0.50"])
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Enter the amount as a number" in _error(html, inv[0])
    assert "cannot be negative" in _error(html, inv[1])
    assert "at most 2 decimal places" in _error(html, inv[2])
    assert "greater than zero" in _error(html, inv[3])
    assert "$100.00 left to pay" in _error(html, inv[4])
    assert "smallest partial payment is $1.00" in _error(html, inv[5])
    assert 'value="junk"' in html  # what the person typed is kept
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0


def test_valid_amounts_go_on_to_the_checkout(signed_in, svc, acme):
    a = f.make_invoice(svc, acme, "INV-1", total_minor=10_000)
    b = f.make_invoice(svc, acme, "INV-2", total_minor=50)
    response = _pay(signed_in, [a, b], ["$40.00", "0.50"])  # a whole small balance may be below the minimum
    assert response.status_code == 302  # validation passed: on to the checkout page
    token = svc.store.scalar("SELECT token FROM payments WHERE status = 'pending'")
    assert response.headers["Location"].endswith(f"/pay/{token}")
    allocated = svc.store.all("SELECT amount_minor FROM allocations ORDER BY invoice_id")
    assert [r[0] for r in allocated] == [4000, 50]
    page = signed_in.get(f"/pay/{token}")
    assert page.status_code == 503  # the checkout page needs Stripe, unreachable in these tests
    assert PROCESSOR_DOWN in page.get_data(as_text=True)


def test_an_error_from_begin_checkout_is_shown_on_the_form(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-KWD", total_minor=18_605, currency="KWD")
    response = _pay(signed_in, [inv], ["18.605"])
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert re.search(r'id="form-error">[^<]*not chargeable by card', html)


def test_invoices_in_two_currencies_are_paid_separately(signed_in, svc, acme):
    usd = f.make_invoice(svc, acme, "INV-USD")
    jpy = f.make_invoice(svc, acme, "INV-JPY", currency="JPY", total_minor=10_000)
    response = signed_in.get(f"/pay?invoice={usd.token}&invoice={jpy.token}")
    assert response.status_code == 400
    assert "different currencies" in response.get_data(as_text=True)
    html = signed_in.get("/pay?all=due&currency=JPY").get_data(as_text=True)
    assert f'id="amount-{jpy.token}"' in html and usd.token not in html


def test_pay_all_due_lists_every_payable_invoice(signed_in, svc, acme):
    a = f.make_invoice(svc, acme, "INV-1")
    b = f.make_invoice(svc, acme, "INV-2", due_on="2026-03-01")
    paid = f.make_invoice(svc, acme, "INV-3")
    f.make_payment(svc, acme, [(paid, 10_000)])
    html = signed_in.get("/pay?all=due").get_data(as_text=True)
    assert re.findall(r'name="invoice" value="([^"]+)"', html) == [b.token, a.token]


def test_paid_invoices_chosen_for_payment_are_listed_as_skipped(signed_in, svc, acme):
    paid = f.make_invoice(svc, acme, "INV-PAID")
    f.make_payment(svc, acme, [(paid, 10_000)])
    html = signed_in.get(f"/pay?invoice={paid.token}").get_data(as_text=True)
    assert 'id="skipped-invoices"' in html and "pay-form" not in html


def test_choosing_nothing_says_so(signed_in):
    response = signed_in.get("/pay")
    assert response.status_code == 302 and response.headers["Location"] == "/invoices"
    assert "Tick at least one invoice to pay." in signed_in.get("/invoices").get_data(as_text=True)
    assert "Nothing is due" in signed_in.get("/pay?all=due").get_data(as_text=True)


def test_pay_selected_with_nothing_ticked_is_explained_on_the_list_with_its_filters(signed_in, svc, acme):
    from urllib.parse import parse_qsl, urlencode, urlsplit

    f.make_invoice(svc, acme, "INV-4101", kind="project", project="Firewall replacement")
    f.make_invoice(svc, acme, "INV-4102", kind="agreement")
    listed = signed_in.get("/invoices?kind=project&status=all&q=firewall&sort=total&dir=desc").get_data(
        as_text=True
    )
    form = listed.split('id="invoice-selection"')[1].split("</form>")[0]
    carried = re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', form)
    assert dict(carried) == {
        "kind": "project", "status": "all", "q": "firewall", "sort": "total", "dir": "desc"
    }

    # "Pay selected" with no box ticked: the browser sends only the filters.
    response = signed_in.get(f"/pay?{urlencode(carried)}")

    assert response.status_code == 302
    back = urlsplit(response.headers["Location"])
    assert back.path == "/invoices" and dict(parse_qsl(back.query)) == dict(carried)
    page = signed_in.get(response.headers["Location"]).get_data(as_text=True)
    assert '<p class="notice notice-error" role="status">Tick at least one invoice to pay.</p>' in page
    assert 'id="search" value="firewall"' in page and "INV-4101" in page and "INV-4102" not in page

    home = signed_in.get("/pay?from=home")
    assert home.status_code == 302 and home.headers["Location"] == "/"
    assert "Tick at least one invoice to pay." in signed_in.get("/").get_data(as_text=True)


def test_without_partial_payments_the_full_balance_is_charged(tmp_path, clock):
    from app.services import build_services
    from app.web import create_app
    from tests.web.conftest import web_config

    svc = build_services(
        web_config(tmp_path, extra="[portal]\nallow_partial_payments = false\n"), clock=clock
    )
    acme = f.make_client(svc)
    f.make_person(svc, acme, "dana@acme.example")
    inv = f.make_invoice(svc, acme, "INV-1")
    client = create_app(svc).test_client()
    sign_in(client, "dana@acme.example")
    html = client.get(f"/pay?invoice={inv.token}").get_data(as_text=True)
    assert f'id="amount-{inv.token}"' not in html and "$100.00" in html
    response = _pay(client, [inv], ["1.00"])  # a typed amount cannot shrink the charge
    assert response.status_code == 302
    assert svc.store.scalar("SELECT amount_minor FROM payments") == 10_000


def test_the_checkout_page_of_a_finished_payment_goes_to_its_result(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-1")
    done = f.make_payment(svc, acme, [(inv, 10_000)])
    response = signed_in.get(f"/pay/{done.token}")
    assert response.status_code == 302 and response.headers["Location"] == f"/payments/{done.token}"


def test_confirm_refuses_a_malformed_body(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-1")
    pending = f.make_payment(svc, acme, [(inv, 10_000)], status="pending")
    headers = {"X-CSRFToken": csrf_token(signed_in)}
    for body in (
        "not json",
        json.dumps([1, 2]),
        json.dumps({"payment_method": "<script>"}),
        json.dumps({"payment_method": 42}),
    ):
        response = signed_in.post(
            f"/pay/{pending.token}/confirm", data=body, content_type="application/json", headers=headers
        )
        assert response.status_code == 400, body
        data = response.get_json()
        assert data["status"] == "failed" and data["retry"] == f"/pay?invoice={inv.token}"
    assert svc.store.scalar("SELECT status FROM payments") == "pending"


def test_payments_list_and_result_pages(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-9", total_minor=50_000)
    ok = f.make_payment(svc, acme, [(inv, 10_000)])
    failed = f.make_payment(
        svc, acme, [(inv, 20_000)], status="failed", failure_reason="Your card was declined."
    )
    processing = f.make_payment(svc, acme, [(inv, 5_000)], status="processing")
    f.make_payment(svc, acme, [(inv, 7_700)], status="pending")
    listing = signed_in.get("/payments").get_data(as_text=True)
    assert ok.token in listing and failed.token in listing and processing.token in listing
    assert "$77.00" not in listing  # an abandoned checkout is not a payment
    assert "INV-9" in listing

    def status(token: str) -> str:
        html = signed_in.get(f"/payments/{token}").get_data(as_text=True)
        return re.search(r'id="payment-status" role="status">([^<]+)<', html).group(1).strip()

    # Until the outbox has delivered the receipt, the page does not claim it was emailed.
    assert status(ok.token) == "Paid — a receipt is on its way"
    assert status(failed.token) == "Failed: Your card was declined."
    assert status(processing.token) == "Pending — not paid yet"
    assert f'href="/pay?invoice={inv.token}"' in signed_in.get(f"/payments/{failed.token}").get_data(
        as_text=True
    )


def test_viewers_cannot_pay(client, svc, acme):
    f.make_person(svc, acme, "viewer@acme.example", role="viewer")
    inv = f.make_invoice(svc, acme, "INV-1")
    pending = f.make_payment(svc, acme, [(inv, 10_000)], status="pending")
    sign_in(client, "viewer@acme.example")
    assert client.get(f"/pay?invoice={inv.token}").status_code == 403
    assert _pay(client, [inv], ["100.00"]).status_code == 403
    assert client.get(f"/pay/{pending.token}").status_code == 403
    confirm = client.post(
        f"/pay/{pending.token}/confirm",
        data=json.dumps({"payment_method": "pm_x"}),
        content_type="application/json",
        headers={"X-CSRFToken": csrf_token(client)},
    )
    assert confirm.status_code == 403
    assert client.get("/payments").status_code == 200
