"""Hostile input on the portal's pay form and its confirm call, and double clicks.

The app runs on a real SQLite file against the Stripe double; people are signed in the way the
portal's own tests do it (tests/web/conftest.py). The confirm races use the app on a threaded
WSGI server and real HTTP, like gunicorn's gthread worker.
"""

from __future__ import annotations

import re
import threading

import pytest
import requests

from app.web import create_app
from tests.adversarial.helpers import card, csrf_from, intents_for, sign_in_requests, stripe_client
from tests.conftest import LiveServer, free_port
from tests.web import factories as f
from tests.web.conftest import csrf_token, post, sign_in

BALANCE = 200_000  # $2,000.00


@pytest.fixture
def acme(stripe_services):
    return f.make_client(stripe_services, "Acme Dental LLC")


@pytest.fixture
def globex(stripe_services):
    return f.make_client(stripe_services, "Globex Corporation")


@pytest.fixture
def inv(stripe_services, acme):
    return f.make_invoice(stripe_services, acme, "INV-1", total_minor=BALANCE)


@pytest.fixture
def client(stripe_services, acme):
    f.make_person(stripe_services, acme, "dana@acme.example")
    c = create_app(stripe_services).test_client()
    sign_in(c, "dana@acme.example")
    return c


def _pay(client, invoices, amounts, **extra):
    data = {"invoice": [i.token for i in invoices], "action": "checkout", **extra}
    data.update({f"amount-{i.token}": a for i, a in zip(invoices, amounts, strict=True)})
    return post(client, "/pay", data)


def _payments(s) -> int:
    return int(s.store.scalar("SELECT COUNT(*) FROM payments"))


def _allocated(s) -> list[int]:
    return [r[0] for r in s.store.all("SELECT amount_minor FROM allocations ORDER BY id")]


def _error(html: str, invoice) -> str:
    match = re.search(rf'id="error-{re.escape(invoice.token)}">([^<]+)<', html)
    return match.group(1) if match else ""


# ---- amounts ------------------------------------------------------------------------------------

ACCEPTED = {
    "1,000.00": 100_000,
    " 5 ": 500,
    "$5": 500,
    "5.": 500,
    "\t12.50\n": 1_250,
}
REFUSED = {
    "1e3": "Enter the amount as a number",
    "0x10": "Enter the amount as a number",
    "Infinity": "Enter the amount as a number",
    "NaN": "Enter the amount as a number",
    "-0.01": "cannot be negative",
    "0.00": "greater than zero",
    "1\u00a0000": "Enter the amount as a number",  # a no-break space as thousands separator
    "²": "Enter the amount as a number",  # a digit to str.isdigit, not to int()
    "9" * 20_000: "left to pay",
    "0." + "0" * 20_000 + "1": "at most 2 decimal places",
    "1" + "0" * 20_000 + ".00": "left to pay",
}


@pytest.mark.parametrize("text", list(ACCEPTED), ids=[repr(t) for t in ACCEPTED])
def test_an_amount_people_type_is_read_exactly(client, stripe_services, inv, text):
    response = _pay(client, [inv], [text])
    assert response.status_code == 302, _error(response.get_data(as_text=True), inv)
    assert _allocated(stripe_services) == [ACCEPTED[text]]


@pytest.mark.parametrize("text", list(REFUSED), ids=[repr(t)[:30] for t in REFUSED])
def test_an_amount_that_is_no_amount_is_refused_with_a_message_and_nothing_is_written(
    client, stripe_services, inv, text
):
    response = _pay(client, [inv], [text])
    assert response.status_code == 400
    assert REFUSED[text] in _error(response.get_data(as_text=True), inv)
    assert _payments(stripe_services) == 0


@pytest.mark.parametrize(
    "text",
    ["５", "１,０００.５０", "٥", "१२"],
    ids=["fullwidth 5", "fullwidth 1,000.50", "arabic-indic 5", "devanagari 12"],
)
def test_digits_of_other_scripts_are_read_as_the_digits_they_are_or_refused(
    client, stripe_services, inv, text
):
    response = _pay(client, [inv], [text])
    expected = {"５": 500, "１,０００.５０": 100_050, "٥": 500, "१२": 1_200}[text]
    if response.status_code == 302:
        assert _allocated(stripe_services) == [expected]
    else:
        assert response.status_code == 400 and _error(response.get_data(as_text=True), inv)
        assert _payments(stripe_services) == 0


# ---- CSRF and tokens ----------------------------------------------------------------------------


def test_a_pay_form_without_its_csrf_token_is_refused_and_writes_nothing(client, stripe_services, inv):
    data = {"invoice": inv.token, "action": "checkout", f"amount-{inv.token}": "10.00"}
    assert client.post("/pay", data=data).status_code == 400
    assert client.post("/pay", data={**data, "csrf_token": "forged-token"}).status_code == 400
    other = create_app(stripe_services).test_client()
    foreign = csrf_token(other)  # a valid token of another browser's session
    assert client.post("/pay", data={**data, "csrf_token": foreign}).status_code == 400
    assert _payments(stripe_services) == 0


def test_a_confirm_without_its_csrf_header_is_refused(client, stripe_services, inv, stripe_double):
    assert _pay(client, [inv], ["10.00"]).status_code == 302
    token = stripe_services.store.scalar("SELECT token FROM payments")
    response = client.post(f"/pay/{token}/confirm", json={"payment_method": card(stripe_double)})
    assert response.status_code == 400
    assert stripe_services.store.scalar("SELECT status FROM payments") == "pending"
    assert intents_for(stripe_double, token) == []


@pytest.mark.parametrize("forged", ["not-a-token", "A" * 5000, "../../invoices", "%00", "' OR 1=1 --"])
def test_a_forged_invoice_token_is_404_and_writes_nothing(client, stripe_services, inv, forged):
    response = post(
        client,
        "/pay",
        {
            "invoice": [inv.token, forged],
            "action": "checkout",
            f"amount-{inv.token}": "10.00",
            f"amount-{forged}": "10.00",
        },
    )
    assert response.status_code == 404
    assert _payments(stripe_services) == 0


def test_another_companys_invoice_token_is_404_and_writes_nothing(client, stripe_services, inv, globex):
    theirs = f.make_invoice(stripe_services, globex, "GLX-1", total_minor=5_000)
    response = _pay(client, [inv, theirs], ["10.00", "50.00"])
    assert response.status_code == 404 and "GLX-1" not in response.get_data(as_text=True)
    assert _payments(stripe_services) == 0


def test_the_same_invoice_twice_in_one_post_is_allocated_once(client, stripe_services, inv):
    response = post(
        client,
        "/pay",
        {
            "invoice": [inv.token, inv.token],
            "action": "checkout",
            f"amount-{inv.token}": ["1500.00", "1500.00"],
        },
    )
    assert response.status_code in (302, 400)
    assert sum(_allocated(stripe_services)) <= BALANCE
    assert len(_allocated(stripe_services)) <= 1


# ---- confirm: whose card, which string -----------------------------------------------------------


def _pending(client, s, inv, amount="2000.00") -> str:
    assert _pay(client, [inv], [amount]).status_code == 302
    return str(s.store.scalar("SELECT token FROM payments WHERE status = 'pending' ORDER BY id DESC"))


def _confirm(client, token: str, body: dict):
    return client.post(f"/pay/{token}/confirm", json=body, headers={"X-CSRFToken": csrf_token(client)})


@pytest.mark.parametrize("method", ["card_123", "tok_visa", "src_1Abc", "seti_123", "cus_123", "PM_123"])
def test_confirm_with_something_that_is_not_a_payment_method_is_refused_before_stripe(
    client, stripe_services, inv, stripe_double, method
):
    token = _pending(client, stripe_services, inv)
    response = _confirm(client, token, {"payment_method": method})
    assert response.status_code == 400 and response.get_json()["status"] == "failed"
    assert stripe_services.store.scalar("SELECT status FROM payments WHERE token = ?", (token,)) == "pending"
    assert intents_for(stripe_double, token) == []


def test_confirm_with_a_payment_method_id_stripe_does_not_know_charges_nothing_and_is_no_500(
    client, stripe_services, inv, stripe_double
):
    token = _pending(client, stripe_services, inv)
    response = _confirm(client, token, {"payment_method": "pm_doesnotexist"})
    assert response.status_code < 500
    assert response.get_json()["status"] != "succeeded"
    assert intents_for(stripe_double, token) == []
    assert (
        stripe_services.store.scalar("SELECT status FROM payments WHERE token = ?", (token,)) != "succeeded"
    )


def test_confirm_with_another_customers_saved_card_is_refused_and_charges_nothing(
    client, stripe_services, inv, stripe_double
):
    # Globex's card, saved on Globex's Stripe customer. Its id is not secret to everyone who ever
    # saw Globex's checkout page, a log line or a support ticket.
    api = stripe_client(stripe_double)
    other_customer = api.v1.customers.create(params={"name": "Globex Corporation"})
    theirs = card(stripe_double)
    api.v1.payment_methods.attach(theirs, params={"customer": other_customer.id})
    token = _pending(client, stripe_services, inv)

    response = _confirm(client, token, {"payment_method": theirs, "save": True})

    charged = intents_for(stripe_double, token)
    remembered = stripe_services.store.all("SELECT processor_ref FROM payment_methods")
    assert charged == [], f"charged {[(pi['amount'], pi['status']) for pi in charged]} to Globex's card"
    assert response.status_code == 400, response.get_json()
    assert [r[0] for r in remembered] == []


def test_confirm_with_a_card_another_company_saved_through_cashloop_is_refused_before_stripe(
    client, stripe_services, inv, globex, stripe_double
):
    theirs = card(stripe_double)
    with stripe_services.store.write() as db:
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "is_default, created_at) VALUES (?, ?, 'card', 'visa', '4242', 12, 2031, 1, ?)",
            (globex.id, theirs, f.SYNCED_AT),
        )
    token = _pending(client, stripe_services, inv)

    response = _confirm(client, token, {"payment_method": theirs, "save": True})

    assert response.status_code == 400, response.get_json()
    assert intents_for(stripe_double, token) == []
    assert stripe_services.store.scalar("SELECT status FROM payments WHERE token = ?", (token,)) == "pending"


# ---- double clicks -------------------------------------------------------------------------------


@pytest.fixture
def live(stripe_services, acme):
    f.make_person(stripe_services, acme, "dana@acme.example")
    server = LiveServer(create_app(stripe_services), free_port()).start()
    yield server
    server.stop()


def _browser(live) -> requests.Session:
    session = requests.Session()
    sign_in_requests(session, live.url, "dana@acme.example", f.PASSWORD)
    return session


def _start(session, live, inv, amount: str = "2000.00") -> str:
    page = session.get(f"{live.url}/pay?invoice={inv.token}", timeout=10)
    r = session.post(
        f"{live.url}/pay",
        data={
            "invoice": inv.token,
            "action": "checkout",
            f"amount-{inv.token}": amount,
            "csrf_token": csrf_from(page.text),
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text[:1000]
    token = r.headers["Location"].rsplit("/", 1)[1]
    assert session.get(f"{live.url}/pay/{token}", timeout=20).status_code == 200  # makes the SetupIntent
    return token


def _confirm_concurrently(session, live, tokens_and_methods: list[tuple[str, str]]) -> list[tuple[int, dict]]:
    csrf = csrf_from(session.get(f"{live.url}/payments", timeout=10).text)
    barrier = threading.Barrier(len(tokens_and_methods))
    results: list[tuple[int, dict]] = [(0, {})] * len(tokens_and_methods)

    def click(i: int, token: str, method: str) -> None:
        # Each click is its own connection carrying the same session cookie, as a browser's would.
        s = requests.Session()
        s.cookies.update(session.cookies)
        barrier.wait()
        r = s.post(
            f"{live.url}/pay/{token}/confirm",
            json={"payment_method": method, "save": False},
            headers={"X-CSRFToken": csrf},
            timeout=60,
        )
        results[i] = (r.status_code, r.json())

    threads = [threading.Thread(target=click, args=(i, t, m)) for i, (t, m) in enumerate(tokens_and_methods)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    return results


def test_double_clicking_confirm_creates_exactly_one_payment_intent(
    live, stripe_services, stripe_double, inv
):
    browser = _browser(live)
    token = _start(browser, live, inv)
    method = card(stripe_double)

    results = _confirm_concurrently(browser, live, [(token, method), (token, method)])

    assert all(code == 200 for code, _ in results), results
    [pi] = intents_for(stripe_double, token)
    assert (pi["amount"], pi["status"]) == (BALANCE, "succeeded")
    assert sorted(body["status"] for _, body in results).count("succeeded") >= 1
    assert (
        stripe_services.store.scalar("SELECT status FROM payments WHERE token = ?", (token,)) == "succeeded"
    )
    assert len(f.outbox_emails(stripe_services)) == 1


def test_five_frantic_clicks_with_different_cards_still_charge_once(
    live, stripe_services, stripe_double, inv
):
    browser = _browser(live)
    token = _start(browser, live, inv)

    results = _confirm_concurrently(browser, live, [(token, card(stripe_double)) for _ in range(5)])

    assert all(code == 200 for code, _ in results), results
    assert len(intents_for(stripe_double, token)) == 1
    assert (
        stripe_services.store.scalar(
            "SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (inv.id,)
        )
        == 0
    )


def test_two_checkouts_of_the_same_invoice_confirmed_at_once_charge_it_once(
    live, stripe_services, stripe_double, inv
):
    browser = _browser(live)
    first = _start(browser, live, inv)  # a second tab starts another checkout for the same invoice,
    second = _start(browser, live, inv)  # which cancels the first while it is still pending

    results = _confirm_concurrently(
        browser, live, [(first, card(stripe_double)), (second, card(stripe_double))]
    )

    assert all(code < 500 for code, _ in results), results
    assert len(intents_for(stripe_double, first)) + len(intents_for(stripe_double, second)) == 1
    assert (
        stripe_services.store.scalar(
            "SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (inv.id,)
        )
        == 0
    )
