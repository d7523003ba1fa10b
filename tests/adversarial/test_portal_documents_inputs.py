"""Hostile input on the portal's new documents and settings: selection PDFs (duplicate, thousands,
foreign and junk ids), "Email me my statement" and the monthly opt-in (months that do not exist or
lie centuries away), skipping and undoing an autopay charge with tokens that are not ours, extra
reminder recipients (header injection, a thousand addresses, IDN, control characters) and the
checkout's method and amount bounds.

The app runs as the portal's own tests run it (tests/web/conftest.py: a real SQLite file, Chicago,
frozen at 2026-03-10); the statement emails go through the outbox to the aiosmtpd sink.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from app.core.client_overrides import MAX_EXTRA_RECIPIENTS, OverrideError, from_form
from app.core.clock import FrozenClock
from app.jobs import drain_outbox
from app.services import build_services
from app.web import create_app
from tests.web import factories as f
from tests.web.conftest import post, sign_in, web_config
from tests.web.test_documents_and_people import pdf_text

NUMBER = re.compile(r"Invoice (INV-\d+)")


@pytest.fixture
def svc(tmp_path):
    # 10:00 in Chicago on Tuesday, March 10, 2026, as the portal's own tests.
    return build_services(web_config(tmp_path), clock=FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC)))


@pytest.fixture
def acme(svc):
    return f.make_client(svc, "Acme Dental LLC")


@pytest.fixture
def globex(svc):
    return f.make_client(svc, "Globex Corporation")


@pytest.fixture
def dana(svc, acme) -> str:
    return f.make_person(svc, acme, "dana@acme.example")


@pytest.fixture
def signed_in(svc, dana):
    web = create_app(svc).test_client()
    sign_in(web, dana)
    return web


def _emails(svc) -> int:
    return int(svc.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'email'"))


def _flash(client) -> str:
    return client.get("/invoices?status=all").get_data(as_text=True)


# ---- selection PDFs -----------------------------------------------------------------------------


def test_the_same_id_ticked_many_times_is_one_invoice_in_the_pdf(signed_in, svc, acme, tmp_path):
    inv = f.make_invoice(svc, acme, "INV-7001", total_minor=1_000)
    response = signed_in.get(
        "/invoices/pdf?" + urlencode([("invoice", inv.token)] * 500 + [("pdf", inv.token)])
    )
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert 'filename="invoice-INV-7001.pdf"' in response.headers["Content-Disposition"]
    assert NUMBER.findall(pdf_text(response.data, tmp_path)) == ["INV-7001"]


def test_ten_thousand_ids_are_refused_with_a_message_before_any_lookup(signed_in, svc, acme):
    query = urlencode([("invoice", f"tok{n:05d}") for n in range(10_000)])
    response = signed_in.get(f"/invoices/pdf?{query}")
    assert response.status_code == 302 and response.headers["Location"].endswith("/invoices")
    assert "You ticked 10000 invoices; one download holds at most 100" in _flash(signed_in)


@pytest.mark.parametrize(
    "junk",
    ["", " ", "../../etc/passwd", "' OR '1'='1", "%00", "A" * 10_000, "\u202e\u0000"],
    ids=["empty", "space", "path", "sql", "nul", "huge", "bidi-nul"],
)
def test_a_junk_id_beside_a_real_one_is_a_404_or_ignored_never_another_pdf(
    signed_in, svc, acme, globex, junk
):
    mine = f.make_invoice(svc, acme, "INV-7101")
    f.make_invoice(svc, globex, "INV-9101")
    response = signed_in.get("/invoices/pdf?" + urlencode([("invoice", mine.token), ("pdf", junk)]))
    if junk == "":  # an empty checkbox value is no id: the real one alone
        assert response.status_code == 200 and b"%PDF" in response.data
    else:
        assert response.status_code == 404
        assert b"%PDF" not in response.data and b"INV-9101" not in response.data


def test_only_junk_or_nothing_ticked_is_the_list_with_a_message(signed_in):
    for query in ("", "invoice=", "pdf=&invoice="):
        response = signed_in.get(f"/invoices/pdf?{query}")
        assert response.status_code == 302
        assert "Tick at least one invoice to download." in _flash(signed_in)


def test_an_id_of_another_company_hidden_among_a_hundred_is_a_404(signed_in, svc, acme, globex):
    mine = [f.make_invoice(svc, acme, f"INV-{7200 + n}", total_minor=100).token for n in range(99)]
    theirs = f.make_invoice(svc, globex, "INV-9201").token
    response = signed_in.get(
        "/invoices/pdf?" + urlencode([("invoice", t) for t in [*mine[:50], theirs, *mine[50:]]])
    )
    assert response.status_code == 404 and b"INV-9201" not in response.data


# ---- statements: months ---------------------------------------------------------------------------


@pytest.fixture
def mailing(svc, mail):
    email = dataclasses.replace(svc.config.email, port=mail.port, security="none")
    svc.config = dataclasses.replace(svc.config, email=email)
    return svc


MONTHS = [
    "2026-13",
    "2026-00",
    "0000-01",
    "9999-12",
    "2026-3",
    "26-03",
    "2026-03-01",
    "2026/02",
    "",
    "+202-02",
    "2026-02\r\nBcc: x@y.z",
    "2027-01",
    "1900-01",
]


@pytest.mark.parametrize("month", MONTHS, ids=[repr(m) for m in MONTHS])
def test_a_month_that_is_not_in_the_list_emails_nothing_and_says_so(mailing, acme, dana, month):
    f.make_invoice(mailing, acme, "INV-FEB", total_minor=20_000, issued_on="2026-02-03", due_on="2026-03-05")
    web = create_app(mailing).test_client()
    sign_in(web, dana)
    response = post(web, "/statements/email", {"month": month, "request_id": "r1"})
    assert response.status_code == 302
    page = web.get("/statements").get_data(as_text=True)
    assert "Choose a month from the list to email its statement." in page
    assert _emails(mailing) == 0


def test_a_month_in_the_list_with_a_huge_request_id_is_one_email(mailing, acme, dana, mail):
    f.make_invoice(mailing, acme, "INV-FEB", total_minor=20_000, issued_on="2026-02-03", due_on="2026-03-05")
    web = create_app(mailing).test_client()
    sign_in(web, dana)
    for _ in range(2):
        assert (
            post(web, "/statements/email", {"month": "2026-02", "request_id": "x" * 100_000}).status_code
            == 302
        )
    assert _emails(mailing) == 1
    drain_outbox.run(mailing)
    [msg] = mail.wait_for(1)
    assert msg["To"] == "dana@acme.example" and "February 2026" in msg["Subject"]


@pytest.mark.parametrize(
    "month", ["2026-13", "0000-01", "9999-12", "99999-01", "2026-02-30", "junk", "2027-01"]
)
def test_a_statement_page_or_pdf_of_a_month_that_is_no_month_is_404(signed_in, month):
    for url in (f"/statements/{month}", f"/statements/{month}/pdf"):
        response = signed_in.get(url)
        assert response.status_code == 404, (url, response.status_code)


def test_the_monthly_opt_in_reads_only_on_as_yes(mailing, acme, dana):
    web = create_app(mailing).test_client()
    sign_in(web, dana)
    for value, expected in (("yes", 0), ("1", 0), ("ON", 0), ("on", 1), ("on\r\nBcc: x", 0)):
        assert post(web, "/statements/subscription", {"monthly": value}).status_code == 302
        subscribed = mailing.store.scalar(
            "SELECT COUNT(*) FROM statement_subscriptions WHERE client_id = ? AND is_enabled = 1", (acme.id,)
        )
        assert subscribed == expected, value


# ---- autopay skip and undo --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/autopay/skip", "/autopay/skip/undo"])
def test_a_skip_or_undo_with_a_token_that_is_not_ours_is_404_and_writes_nothing(signed_in, svc, globex, path):
    theirs = f.make_invoice(svc, globex, "INV-9301").token
    for token in (theirs, "", "A" * 10_000, "' OR 1=1 --"):
        response = post(signed_in, path, {"invoice": token})
        assert response.status_code == 404, token[:20]
    assert svc.store.scalar("SELECT COUNT(*) FROM autopay_skips") == 0


# ---- extra reminder recipients ------------------------------------------------------------------

REFUSED = {
    "header injection crlf": "a@b.example\r\nBcc: x@y.example",
    "header injection cr": "a@b.example\rBcc: x@y.example",
    "nul inside": "a@b.example\x00",
    "escape inside": "ops\x1b[31m@acme.example",
    "delete char": "ops\x7f@acme.example",
    "display name form": "Ops <ops@acme.example>",
    "space inside": "ops team@acme.example",
    "no domain dot": "ops@localhost",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_extra_recipient_that_is_not_one_plain_address_is_refused_by_name(case):
    # Before: a NUL, ESC or DEL inside an address passed (the pattern excluded only whitespace).
    with pytest.raises(OverrideError) as caught:
        from_form({"extra_recipients": f"books@cpa.example\n{REFUSED[case]}"}, "USD")
    message = caught.value.errors["extra_recipients"]
    assert message.startswith("Extra recipients: ") and "is not an email address" in message


def test_a_thousand_extra_recipients_are_refused_with_the_limit():
    text = ",".join(f"user{n}@acme.example" for n in range(1_000))
    with pytest.raises(OverrideError) as caught:
        from_form({"extra_recipients": text}, "USD")
    assert f"at most {MAX_EXTRA_RECIPIENTS} addresses" in caught.value.errors["extra_recipients"]


def test_the_same_address_a_thousand_times_is_one_recipient():
    text = "\n".join(["Books@CPA.example", "books@cpa.example "] * 500)
    assert from_form({"extra_recipients": text}, "USD").extra_recipients == ("Books@cpa.example",)


def test_an_idn_address_and_surrounding_spaces_are_kept_as_typed_minus_the_spaces():
    found = from_form({"extra_recipients": "  jörg@bücher.example ;\t ops@acme.example  "}, "USD")
    assert found.extra_recipients == ("jörg@bücher.example", "ops@acme.example")


# ---- checkout: method and amount bounds -------------------------------------------------------


@pytest.mark.parametrize("method", ["junk", "", "CARD", "card\r\n", "us_bank_account", "ach"])
def test_a_method_that_is_not_offered_is_refused_and_writes_nothing(signed_in, svc, acme, method):
    inv = f.make_invoice(svc, acme, "INV-7401", total_minor=20_000)
    response = post(
        signed_in,
        "/pay",
        {"invoice": inv.token, "action": "checkout", f"amount-{inv.token}": "10.00", "method": method},
    )
    assert response.status_code == 400, response.status_code
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0


@pytest.mark.parametrize(
    "amount, outcome",
    [
        ("200.00", 20_000),
        ("200.01", "left to pay"),
        ("1.00", 100),
        ("0.99", "smallest partial payment is $1.00"),
        ("0.00", "greater than zero"),
        ("-200.00", "negative"),
    ],
)
def test_an_amount_at_the_bounds_is_taken_exactly_or_refused(signed_in, svc, acme, amount, outcome):
    inv = f.make_invoice(svc, acme, "INV-7501", total_minor=20_000)
    response = post(
        signed_in,
        "/pay",
        {"invoice": inv.token, "action": "checkout", f"amount-{inv.token}": amount, "method": "card"},
    )
    if isinstance(outcome, int):
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        assert svc.store.scalar("SELECT SUM(amount_minor) FROM allocations") == outcome
    else:
        assert response.status_code == 400 and outcome in response.get_data(as_text=True)
        assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0


def test_a_month_in_fullwidth_digits_is_read_as_the_month_it_spells(mailing, acme, dana):
    # int() reads other scripts' digits; "２０２６-０２" is February 2026 and emails exactly that.
    f.make_invoice(mailing, acme, "INV-FEB", total_minor=20_000, issued_on="2026-02-03", due_on="2026-03-05")
    web = create_app(mailing).test_client()
    sign_in(web, dana)
    assert post(web, "/statements/email", {"month": "２０２６-０２", "request_id": "r1"}).status_code == 302
    assert "The February 2026 statement is on its way" in web.get("/statements").get_data(as_text=True)
    assert _emails(mailing) == 1


def test_an_idn_extra_recipient_gets_the_reminder_like_anyone(tmp_path, mail):
    from datetime import date

    from app.core.client_overrides import set_overrides
    from app.jobs import send_reminders
    from tests.conftest import make_config
    from tests.factories import make_client, make_invoice
    from tests.jobs.test_reminder_recipients import _at

    clock = FrozenClock(_at(date(2026, 3, 20), 12))
    s = build_services(make_config(tmp_path, smtp_port=mail.port), clock=clock)
    acme = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    make_invoice(s, "INV-6001", client_remote_id="acme", total_minor=50_000, due_on=date(2026, 3, 31))
    extras = from_form({"extra_recipients": "jörg@bücher.example\nops@xn--bcher-kva.example"}, "USD")
    with s.store.write() as db:
        set_overrides(db, clock, acme, extras, actor="admin:test")
    clock.set(_at(date(2026, 3, 26), 9))  # the -5 step of an invoice due March 31
    assert send_reminders.run(s).messages == 3
    drain_outbox.run(s)
    received = mail.wait_for(3)
    assert sorted(m["To"] for m in received) == [
        "ap@acme.example",
        "jörg@bücher.example",
        "ops@xn--bcher-kva.example",
    ]
    assert all("INV-6001" in m.get_body(("plain",)).get_content() for m in received)
