"""Hostile input around payouts and the journal they end in: payout events for payouts Stripe does
not have, ids that are no ids, events replayed out of order, an empty payout, and customer names
that would break a CSV or IIF file (tabs, quotes, line breaks, formula characters, non-ASCII).

Payouts run against the tests' Stripe extension (tests/stripe_ext.py); the journal is the real
file the sink writes, read back with the csv module and split as QuickBooks Desktop splits IIF.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest

from app.core import payouts
from app.jobs import drain_outbox, run_autopay
from sync.accounting.journal import BANK_ACCOUNT, FEE_ACCOUNT, JournalSink
from sync.base import DepositLine, JournalDeposit, JournalPayment
from tests.adversarial.helpers import event, sign
from tests.autopay_world import deliver, enable, engine_services, journal, saved_card, wait_for_event
from tests.factories import make_client, make_invoice

# ---- payout events ------------------------------------------------------------------------------


@pytest.fixture
def s(tmp_path, frozen_clock, stripe_ext, mail):
    stripe_ext.double.reset()  # no money or payouts of earlier tests at the double
    return engine_services(tmp_path, frozen_clock, stripe_ext.double, mail)


def _web_post(s, body: bytes):
    from app.web import create_app

    web = create_app(s).test_client()
    secret = str(s.config.stripe.webhook_secret)
    return web.post(
        "/stripe/webhook",
        data=body,
        headers={"Stripe-Signature": sign(body, secret)},
        content_type="application/json",
    )


def _payouts(s) -> list[dict]:
    return [dict(r) for r in s.store.all("SELECT processor_ref, status, amount_minor FROM payouts")]


def _deposits(s) -> int:
    return int(s.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'accounting_deposit'"))


def _paid_out(s, stripe_ext, amount: int = 10_000) -> dict:
    client_id = make_client(s)
    enable(s, client_id, saved_card(s, stripe_ext.double, client_id))
    make_invoice(s, "INV-P1", total_minor=amount, due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == 1
    for _ in range(3):
        drain_outbox.run(s)
    return stripe_ext.payout("usd")


def test_a_payout_event_for_a_payout_stripe_does_not_have_is_acknowledged_and_books_nothing(s):
    body = json.dumps(
        event(
            "evt_po_ghost",
            "payout.paid",
            {"id": "po_doesnotexist", "object": "payout", "amount": 999_999, "currency": "usd"},
        )
    ).encode()
    response = _web_post(s, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"].startswith("ignored:")
    assert _payouts(s) == [] and _deposits(s) == 0
    row = s.store.one("SELECT processed_at, error FROM stripe_events WHERE id = 'evt_po_ghost'")
    assert row["processed_at"] and "404" in row["error"]


@pytest.mark.parametrize(
    "payout_id",
    ["po_1/../../v1/charges", "po_1?expand[]=destination", "", "po_" + "A" * 5000, "po_\u00e9\u0000"],
    ids=["path", "query", "empty", "huge", "non-ascii and nul"],
)
def test_a_payout_event_whose_id_is_no_id_books_nothing_and_never_reaches_another_object(s, payout_id):
    body = json.dumps(event(f"evt_bad_{len(payout_id)}", "payout.paid", {"id": payout_id})).encode()
    response = _web_post(s, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"].startswith("ignored: Stripe error 404"), response.get_json()
    assert _payouts(s) == [] and _deposits(s) == 0


def test_a_payout_event_without_an_id_is_refused_and_books_nothing(s):
    body = json.dumps(event("evt_po_noid", "payout.paid", {"object": "payout", "amount": 5})).encode()
    response = _web_post(s, body)
    assert response.status_code == 400
    assert "data.object.id are required" in response.get_json()["error"]
    assert _payouts(s) == [] and _deposits(s) == 0


def test_the_event_copy_of_a_payout_is_not_trusted_a_forged_amount_books_stripes_amount(s, stripe_ext):
    po = _paid_out(s, stripe_ext)
    forged = {**po, "amount": 1, "currency": "jpy", "status": "paid"}
    body = json.dumps(event("evt_po_forged", "payout.paid", forged)).encode()
    assert _web_post(s, body).status_code == 200
    assert _payouts(s) == [{"processor_ref": po["id"], "status": "paid", "amount_minor": po["amount"]}]
    assert po["amount"] == 10_000 - 320  # the card fee, 2.9% + 0.30
    assert _deposits(s) == 1


def test_a_failed_event_replayed_after_the_paid_one_keeps_the_payout_booked_once(s, stripe_ext):
    # Events arrive late and out of order: each is read back from Stripe, which says "paid".
    po = _paid_out(s, stripe_ext)
    paid = wait_for_event(stripe_ext.double, "payout.paid", po["id"])
    late_failed = event("evt_po_late_failed", "payout.failed", {**po, "status": "failed"})
    assert deliver(s, late_failed) == "booked"  # Stripe says paid, whatever the event's type
    assert deliver(s, paid) == "already booked"
    assert deliver(s, paid) == "duplicate"
    assert _payouts(s)[0]["status"] == "paid"
    assert _deposits(s) == 1
    assert s.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'payout_failed'") == 0


def test_a_payout_that_failed_at_the_bank_then_a_replayed_paid_event_books_no_deposit(s, stripe_ext):
    client_id = make_client(s)
    enable(s, client_id, saved_card(s, stripe_ext.double, client_id))
    make_invoice(s, "INV-P2", total_minor=5_000, due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == 1
    po = stripe_ext.payout("usd", status="failed", failure_code="account_closed")
    forged_paid = event("evt_po_forged_paid", "payout.paid", {**po, "status": "paid"})
    assert deliver(s, forged_paid) == "failed"
    assert deliver(s, wait_for_event(stripe_ext.double, "payout.failed", po["id"])) in (
        "unchanged",
        "duplicate",
    )
    assert _payouts(s) == [{"processor_ref": po["id"], "status": "failed", "amount_minor": po["amount"]}]
    assert _deposits(s) == 0
    summary = s.store.scalar("SELECT summary FROM exceptions WHERE kind = 'payout_failed'")
    assert "account_closed" in summary and "no deposit was booked" in summary


# ---- the journal: names that break files ---------------------------------------------------------

NAMES = {
    "formula =": '=HYPERLINK("http://evil.example","pay")',
    "formula +": "+1 Support LLC",
    "formula -": "-2 Dental",
    "formula @": "@Home Networks",
    "tab first": "\tTabbed Co",
    "tab inside": "Contoso\tDental",
    "quotes": 'The "Best" IT, Inc.',
    "line breaks": "Fabrikam\r\nLogistics\nLLC",
    "non-ascii": "Müller & Söhne GmbH — Zürich 東京",
}


def _payment(name: str, *, number: str = "INV-1") -> JournalPayment:
    return JournalPayment(
        payment_token="tok1",
        processor_ref="pi_1",
        method="card",
        received_on=date(2026, 3, 31),
        currency="USD",
        amount_minor=12_345,
        client_name=name,
        client_remote_id="250",
        allocations=((number, 12_345),),
    )


@pytest.mark.parametrize("case", list(NAMES))
def test_a_hostile_customer_name_stays_one_csv_cell_and_never_a_formula(tmp_path, case):
    name = NAMES[case]
    sink = JournalSink(tmp_path / "journal.csv")
    sink.push_payment(_payment(name), key="k1")
    sink.push_payment(_payment(name), key="k1")  # a repeat writes nothing
    with (tmp_path / "journal.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2  # clearing debit, receivable credit
    for row in rows:
        assert len(row) == 12 and None not in row
        assert row["customer"][:1] not in ("=", "+", "-", "@", "\t", "\r")
        assert row["customer"].removeprefix("'") == name  # the whole name, quoted or not
    assert [r["debit"] for r in rows] == ["123.45", ""] and [r["credit"] for r in rows] == ["", "123.45"]


@pytest.mark.parametrize("number", ["=1+1", "-INV-7", "@SUM(A1)"])
def test_a_formula_invoice_number_is_text_in_the_csv(tmp_path, number):
    sink = JournalSink(tmp_path / "journal.csv")
    sink.push_payment(_payment("Contoso", number=number), key="k1")
    with (tmp_path / "journal.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    applied = rows[1]
    assert applied["invoice_number"] == "'" + number
    assert applied["memo"][:1] not in ("=", "+", "-", "@")


def _iif_lines(path) -> list[list[str]]:
    raw = path.read_bytes().decode("utf-8")
    assert "\n" not in raw.replace("\r\n", "")  # no stray line break inside a field
    return [line.split("\t") for line in raw.split("\r\n")[3:-1]]


@pytest.mark.parametrize("case", list(NAMES))
def test_a_hostile_customer_name_keeps_every_iif_line_whole(tmp_path, case):
    name = NAMES[case]
    sink = JournalSink(tmp_path / "journal.iif", format="iif")
    sink.push_payment(_payment(name), key="k1")
    sink.push_payment(_payment(name), key="k1")
    lines = _iif_lines(tmp_path / "journal.iif")
    assert [ln[0] for ln in lines] == ["TRNS", "SPL", "ENDTRNS"]
    for line in lines[:2]:
        assert len(line) == 9, line
        assert "\t" not in line[5] and '"' not in line[5]
    assert sum(float(ln[6]) * 100 for ln in lines[:2]) == 0 and lines[0][6] == "123.45"


@pytest.mark.parametrize("case", ["formula =", "formula +", "formula -", "formula @", "non-ascii"])
def test_the_iif_names_the_customer_as_quickbooks_knows_it_without_the_spreadsheet_quote(tmp_path, case):
    # Before: the CSV's formula guard ("'" in front) went into IIF's NAME too, so QuickBooks
    # Desktop met a customer "'@Home Networks" it does not have (and made a new one).
    name = NAMES[case]
    sink = JournalSink(tmp_path / "journal.iif", format="iif")
    sink.push_payment(_payment(name), key="k1")
    trns, spl = _iif_lines(tmp_path / "journal.iif")[:2]
    expected = name.replace('"', "")
    assert trns[5] == expected and spl[5] == expected


def test_a_formula_invoice_number_is_written_plainly_in_the_iif_memo(tmp_path):
    sink = JournalSink(tmp_path / "journal.iif", format="iif")
    sink.push_payment(_payment("Contoso", number="-INV-7"), key="k1")
    spl = _iif_lines(tmp_path / "journal.iif")[1]
    assert spl[8] == "applied to invoice -INV-7"


def test_a_deposit_with_a_hostile_client_name_balances_in_both_formats(tmp_path):
    lines = (
        DepositLine(
            kind="payment",
            processor_ref="ch_1",
            amount_minor=10_000,
            fee_minor=320,
            payment_token="tok1",
            client_name="=cmd|'/C calc'!A0",
        ),
        DepositLine(
            kind="refund",
            processor_ref="re_1",
            amount_minor=-1_000,
            fee_minor=0,
            payment_token="tok1",
            reference="rf1",
            client_name="Fabrikam\nLogistics",
        ),
    )
    deposit = JournalDeposit(
        payout_id="po_1",
        arrival_on=date(2026, 4, 2),
        currency="USD",
        amount_minor=10_000 - 1_000 - 320,
        fee_minor=320,
        lines=lines,
    )
    JournalSink(tmp_path / "j.csv").push_deposit(deposit, key=payouts.deposit_key("po_1"))
    JournalSink(tmp_path / "j.iif", format="iif").push_deposit(deposit, key=payouts.deposit_key("po_1"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "j.csv").read_text(encoding="utf-8"))))
    assert [r["account"] for r in rows][:2] == [BANK_ACCOUNT, FEE_ACCOUNT]
    assert all(r["customer"][:1] not in ("=", "+", "-", "@") for r in rows)
    debit = sum(round(float(r["debit"] or 0) * 100) for r in rows)
    credit = sum(round(float(r["credit"] or 0) * 100) for r in rows)
    assert debit == credit == 10_000
    iif_lines = _iif_lines(tmp_path / "j.iif")
    assert [ln[0] for ln in iif_lines] == ["TRNS", "SPL", "SPL", "SPL", "ENDTRNS"]
    assert iif_lines[2][5] == "=cmd|'/C calc'!A0" and iif_lines[3][5] == "Fabrikam Logistics"


def test_the_journal_of_a_real_payment_by_a_formula_named_client_is_text(s, stripe_ext):
    client_id = make_client(s, "250", '=HYPERLINK("x")')
    enable(s, client_id, saved_card(s, stripe_ext.double, client_id))
    make_invoice(s, "INV-F1", total_minor=4_200, due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == 1
    for _ in range(3):
        drain_outbox.run(s)
    rows = journal(s)
    assert rows and all(r["customer"] == '\'=HYPERLINK("x")' for r in rows)
