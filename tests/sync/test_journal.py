"""The journal export: balanced entries, the right clearing account, idempotent, formula-safe."""

from __future__ import annotations

import csv
from datetime import date

from sync.accounting.journal import JournalSink
from sync.base import JournalPayment


def _payment(method: str = "card", **over) -> JournalPayment:
    values = dict(
        payment_token="tok1",
        processor_ref="pi_1",
        method=method,
        received_on=date(2026, 3, 31),
        currency="USD",
        amount_minor=50000,
        client_name='=HYPERLINK("x")',
        client_remote_id="250",
        allocations=(("INV-1", 30000), ("INV-2", 20000)),
    )
    values.update(over)
    return JournalPayment(**values)


def _rows(path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_a_check_goes_to_undeposited_funds_and_a_card_to_stripe_clearing(tmp_path):
    sink = JournalSink(tmp_path / "journal.csv")
    sink.push_payment(_payment("card"), key="k-card")
    sink.push_payment(_payment("check", payment_token="tok2", processor_ref=None), key="k-check")
    debits = [(r["entry_key"], r["account"], r["debit"]) for r in _rows(sink.path) if r["debit"]]
    assert debits == [("k-card", "Stripe clearing", "500.00"), ("k-check", "Undeposited funds", "500.00")]


def test_each_entry_balances_and_a_repeat_writes_nothing(tmp_path):
    sink = JournalSink(tmp_path / "journal.csv")
    for _ in range(3):
        sink.push_payment(_payment(), key="k1")
    rows = _rows(sink.path)
    assert len(rows) == 3
    debit = sum(int(r["debit"].replace(".", "")) for r in rows if r["debit"])
    credit = sum(int(r["credit"].replace(".", "")) for r in rows if r["credit"])
    assert debit == credit == 50000
    assert all(r["customer"].startswith("'=") for r in rows)  # a formula stays text


def test_an_entry_names_the_payment_by_the_reference_on_its_receipt(tmp_path):
    sink = JournalSink(tmp_path / "journal.csv")
    sink.push_payment(_payment(payment_reference="PAY-000042"), key="k1")
    rows = _rows(sink.path)
    assert {r["payment_reference"] for r in rows} == {"PAY-000042"}
    assert rows[0]["memo"] == "card payment PAY-000042"
    assert all("tok1" not in value for r in rows for value in r.values())
