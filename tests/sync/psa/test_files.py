"""The files PSA: JSON and CSV folders, bad rows, incremental polls, and payments.out.jsonl."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.config import FilesSettings
from app.core.clock import FrozenClock, to_db
from sync.base import (
    ConnectorError,
    Page,
    PaymentWriteBack,
    Rejected,
    RemoteCompany,
    RemoteContact,
    RemoteInvoice,
)
from sync.psa.files import PAGE_SIZE, FilesSource, iter_json_array
from sync.registry import accounting_sink, psa_source

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectwise"
CSV_HEADER = (
    "invoice_number,company_id,company_name,invoice_date,due_date,currency,kind,line_description,"
    "quantity,unit_price,line_amount,tax,agreement,project,phase,ticket,service,amount_paid\n"
)


def fixture(name: str) -> dict[str, Any]:
    record = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    record.pop("_note", None)
    return record


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def items(pages: list[Page]) -> list[Any]:
    return [i for p in pages for i in p.items]


def last_cursor(pages: list[Page], before: str | None = None) -> str | None:
    return pages[-1].cursor if pages else before


@pytest.fixture
def source(tmp_path: Path, frozen_clock: FrozenClock) -> FilesSource:
    return FilesSource(FilesSettings(path=str(tmp_path)), frozen_clock)


# ---- JSON ------------------------------------------------------------------------------------


def test_json_folder_maps_companies_contacts_and_invoices(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path, "companies.json", [fixture("company.json")])
    write(tmp_path, "contacts.json", [fixture("contact.json")])
    lines = [
        {
            "description": "Managed services",
            "quantity": "1.5",
            "unitPrice": 100.0,
            "amount": 150.0,
            "agreement": "Gold",
        },
        {"description": "Toner", "quantity": 1, "amount": 49.99},
    ]
    write(tmp_path, "invoices.json", [{**fixture("invoice.json"), "lines": lines}])
    (company,) = items(list(source.companies(None)))
    (contact,) = items(list(source.contacts(None)))
    (inv,) = items(list(source.invoices(None)))
    assert isinstance(company, RemoteCompany) and company.billing_contact_remote_id == "90102"
    assert isinstance(contact, RemoteContact) and contact.email == "ap@contoso.example" and contact.is_billing
    assert isinstance(inv, RemoteInvoice) and inv.total_minor == 21649
    assert [
        (x.description, x.quantity, x.unit_price_minor, x.amount_minor, x.agreement) for x in inv.lines
    ] == [("Managed services", "1.5", 10000, 15000, "Gold"), ("Toner", "1", 4999, 4999, None)]


def test_unchanged_json_poll_yields_nothing_and_changed_records_come_alone(
    tmp_path: Path, source: FilesSource
) -> None:
    one = fixture("invoice.json")
    two = {**fixture("invoice.json"), "id": 90202, "invoiceNumber": "CWF-0002"}
    path = write(tmp_path, "invoices.json", [one, two])
    cursor = last_cursor(list(source.invoices(None)))
    assert list(source.invoices(cursor)) == []
    two["_info"] = {"lastUpdated": "2025-04-01T00:00:00Z"}
    write(tmp_path, "invoices.json", [one, two])
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    pages = list(source.invoices(cursor))
    assert [i.number for i in items(pages)] == ["CWF-0002"]
    assert list(source.invoices(last_cursor(pages))) == []


def test_touched_file_with_no_newer_records_only_moves_the_cursor(
    tmp_path: Path, source: FilesSource
) -> None:
    path = write(tmp_path, "invoices.json", [fixture("invoice.json")])
    cursor = last_cursor(list(source.invoices(None)))
    os.utime(path, ns=(10**18, 10**18))
    pages = list(source.invoices(cursor))
    assert [(p.items, p.cursor != cursor) for p in pages] == [([], True)]
    assert list(source.invoices(pages[-1].cursor)) == []


def test_large_json_file_streams_in_pages_of_500(tmp_path: Path, source: FilesSource) -> None:
    base = fixture("invoice.json")
    write(tmp_path, "invoices.json", [{**base, "id": i, "invoiceNumber": f"N{i}"} for i in range(1, 1201)])
    pages = list(source.invoices(None))
    assert [len(p.items) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 200]
    # The file's new state is committed only with its last record: a crash mid-file re-reads it.
    assert "invoices.json" not in pages[0].cursor and "invoices.json" in pages[-1].cursor


def test_json_array_reader_handles_values_split_across_chunks(tmp_path: Path) -> None:
    data = [{"id": 1, "name": "Zoë ✓", "n": 12345.5}, 7, "a,]b", [1, [2]], None, {"total": 1e3}]
    path = write(tmp_path, "x.json", "  \n" + json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    for chunk in (1, 3, 7, 1 << 20):
        assert list(iter_json_array(path, chunk=chunk)) == data
    write(tmp_path, "empty.json", " [ ] ")
    assert list(iter_json_array(tmp_path / "empty.json")) == []


@pytest.mark.parametrize("text", ['[{"id": 1}, {"id": 2', '{"id": 1}', "[1, 2] 3", "[1 2]"])
def test_broken_json_file_is_a_retryable_connector_error(
    tmp_path: Path, source: FilesSource, text: str
) -> None:
    write(tmp_path, "invoices.json", text)
    with pytest.raises(ConnectorError) as err:
        list(source.invoices(None))
    assert err.value.retryable and "invoices.json" in str(err.value)


def test_bad_json_invoice_is_rejected_and_the_rest_maps(tmp_path: Path, source: FilesSource) -> None:
    bad = {**fixture("invoice.json"), "id": 5, "lines": [{"description": "x", "quantity": "-1", "amount": 1}]}
    write(tmp_path, "invoices.json", [bad, fixture("invoice.json")])
    first, second = items(list(source.invoices(None)))
    assert first == Rejected("invoice", "5", "line 1: negative quantity -1", bad)
    assert isinstance(second, RemoteInvoice)


# ---- CSV -------------------------------------------------------------------------------------

GOOD_CSV = CSV_HEADER + (
    "INV-1001,250,Contoso Dental LLC,2025-03-01,2025-03-31,USD,,"
    "Managed services,1,40.00,40.00,5.00,Gold,,,,,20.00\n"
    "INV-1001,,,,,,,Onsite visit,2,2.50,,,,,,#123 Printer down,,\n"
    "INV-1002,251,Kaito Systems KK,2025-03-02,2025-04-01,JPY,product,Router,1,10000,10000,0,,,,,,\n"
)


def test_csv_invoices_group_rows_and_compute_totals(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path, "invoices.csv", GOOD_CSV)
    one, two = items(list(source.invoices(None)))
    assert (one.remote_id, one.company_remote_id, one.currency, one.kind) == (
        "INV-1001",
        "250",
        "USD",
        "agreement",
    )
    assert (one.subtotal_minor, one.tax_minor, one.total_minor, one.paid_minor) == (4500, 500, 5000, 2000)
    assert (one.issued_on, one.due_on) == (date(2025, 3, 1), date(2025, 3, 31))
    assert [(x.description, x.quantity, x.unit_price_minor, x.amount_minor, x.ticket) for x in one.lines] == [
        ("Managed services", "1", 4000, 4000, None),
        ("Onsite visit", "2", 250, 500, "#123 Printer down"),
    ]
    assert (one.agreement, one.ticket) == ("Gold", "#123 Printer down")
    assert (two.currency, two.total_minor, two.kind) == ("JPY", 10000, "product")


def test_csv_companies_are_created_unless_companies_json_has_them(
    tmp_path: Path, source: FilesSource
) -> None:
    write(tmp_path, "companies.json", [{**fixture("company.json"), "id": 250}])
    write(tmp_path, "invoices.csv", GOOD_CSV)
    companies = items(list(source.companies(None)))
    assert [(c.remote_id, c.name) for c in companies] == [
        ("250", "Fake Contoso Dental"),
        ("251", "Kaito Systems KK"),
    ]


def test_bad_csv_rows_are_rejected_with_row_numbers(tmp_path: Path, source: FilesSource) -> None:
    write(
        tmp_path,
        "invoices.csv",
        CSV_HEADER
        + (
            "A-1,250,Contoso,2025-03-01,2025-03-31,,,Labour,-2,10.00,,,,,,,,\n"  # row 2
            "A-2,250,Contoso,31/03/2025,2025-03-31,,,Labour,1,10.00,,,,,,,,\n"  # row 3
            ",250,Contoso,2025-03-01,2025-03-31,,,Labour,1,10.00,,,,,,,,\n"  # row 4
            "A-3,250,Contoso,2025-03-01,2025-03-31,,,Labour,1,10.00,,,,,,,,\n"  # row 5
            "A-4,250,Contoso,2025-03-01,2025-03-31,,,Labour,1,10.00,,,,,,,,\n"  # row 6
            "A-3,250,Contoso,2025-03-01,2025-03-31,,,More labour,1,5.00,,,,,,,,\n"  # row 7
            "A-5,250,Contoso,2025-03-01,2025-03-31,,,Labour,1,10.00,,,,,,,,\n"  # row 8
            "A-5,250,Contoso,2025-03-01,2025-04-30,,,Parts,1,12.345,,,,,,,,\n"  # row 9
            "A-6,250,Contoso,2025-03-01,2025-03-31,EUR,gift,Labour,abc,10.00,,,,,,,,\n"  # row 10
        ),
    )
    got = items(list(source.invoices(None)))
    assert [type(i).__name__ for i in got] == [
        "Rejected",
        "Rejected",
        "Rejected",
        "Rejected",
        "RemoteInvoice",
        "Rejected",
        "Rejected",
    ]
    reasons = {r.remote_id: r.reason for r in got if isinstance(r, Rejected)}
    assert reasons == {
        "A-1": "row 2: negative quantity -2",
        "A-2": "row 3: unparseable invoice_date '31/03/2025' (use YYYY-MM-DD)",
        "invoices.csv#row4": "row 4: missing invoice_number",
        "A-3": "row 5: rows of invoice A-3 are not next to each other; sort the file by invoice_number",
        "A-5": "row 9: due_date '2025-04-30' differs from '2025-03-31' in row 8; "
        "row 9: 12.345 has more decimal places than USD allows",
        "A-6": "row 10: kind must be one of agreement, project, time_and_materials, product, credit_memo, "
        "other, got 'gift'; row 10: quantity 'abc' is not a number",
    }
    assert [i.remote_id for i in got if isinstance(i, RemoteInvoice)] == ["A-4"]


def test_csv_missing_a_required_column_stops_the_poll(tmp_path: Path, source: FilesSource) -> None:
    write(tmp_path, "invoices.csv", "invoice_number,company_id,invoice_date\nA,1,2025-01-01\n")
    with pytest.raises(ConnectorError, match=r"missing column.*due_date, line_description") as err:
        list(source.invoices(None))
    assert not err.value.retryable


def test_unchanged_csv_yields_nothing_and_a_changed_one_is_read_again(
    tmp_path: Path, source: FilesSource
) -> None:
    path = write(tmp_path, "invoices.csv", GOOD_CSV)
    cursor = last_cursor(list(source.invoices(None)))
    assert list(source.invoices(cursor)) == []
    os.utime(path, ns=(1, 1))  # same bytes, new mtime: hashed, not re-read
    pages = list(source.invoices(cursor))
    assert items(pages) == []
    cursor = last_cursor(pages, cursor)
    write(tmp_path, "invoices.csv", GOOD_CSV.replace("Router", "Router (replacement)"))
    os.utime(path, ns=(2, 2))
    assert [i.remote_id for i in items(list(source.invoices(cursor)))] == ["INV-1001", "INV-1002"]


def test_csv_void_and_draft_statuses_follow_the_settings(tmp_path: Path, frozen_clock: FrozenClock) -> None:
    write(
        tmp_path,
        "invoices.csv",
        "invoice_number,company_id,invoice_date,due_date,line_description,"
        "line_amount,status\nV,1,2025-01-01,2025-01-31,x,1.00,Void\n"
        "D,1,2025-01-01,2025-01-31,x,1.00,draft\nO,1,2025-01-01,2025-01-31,x,1.00,\n",
    )
    source = FilesSource(FilesSettings(path=str(tmp_path), currency="EUR"), frozen_clock)
    v, d, o = items(list(source.invoices(None)))
    assert (v.is_void, d.is_approved, o.is_void, o.is_approved, o.currency) == (
        True,
        False,
        False,
        True,
        "EUR",
    )


def test_contacts_csv_rows_map_and_bad_rows_are_rejected(tmp_path: Path, source: FilesSource) -> None:
    write(
        tmp_path,
        "contacts.csv",
        "company_id,first_name,last_name,email,billing\n"
        "250,Zoë,Ångström,AP@Contoso.example,yes\n"
        "250,Bob,,bob@contoso.example,\n"
        "250,No,Mail,,no\n"
        "251,Kai,,kai@kaito.example,maybe\n",
    )
    got = items(list(source.contacts(None)))
    assert [(c.remote_id, c.first_name, c.email, c.is_billing) for c in got[:2]] == [
        ("250:ap@contoso.example", "Zoë", "AP@Contoso.example", True),
        ("250:bob@contoso.example", "Bob", "bob@contoso.example", False),
    ]
    assert [(r.remote_id, r.reason) for r in got[2:]] == [
        ("contacts.csv#row4", "row 4: missing or invalid email ''"),
        ("contacts.csv#row5", "row 5: billing must be yes or no, got 'maybe'"),
    ]


# ---- payments.out.jsonl ----------------------------------------------------------------------


def payment(amount_minor: int = 3000, currency: str = "USD") -> PaymentWriteBack:
    return PaymentWriteBack(
        invoice_remote_id="INV-1001",
        amount_minor=amount_minor,
        currency=currency,
        paid_on=date(2025, 3, 12),
        reference="pay_fake_0001 pi_fake_0001",
    )


def test_payments_out_is_written_once_per_key(
    tmp_path: Path, source: FilesSource, frozen_clock: FrozenClock
) -> None:
    now = to_db(frozen_clock.utc_now())
    assert source.record_payment(payment(), key="v1-k1") == "v1-k1"
    assert source.record_payment(payment(), key="v1-k1") == "v1-k1"
    source.record_payment(payment(10000, "JPY"), key="v1-k2")
    lines = [json.loads(x) for x in (tmp_path / "payments.out.jsonl").read_text().splitlines()]
    assert lines == [
        {
            "key": "v1-k1",
            "invoice_remote_id": "INV-1001",
            "amount": "30.00",
            "currency": "USD",
            "paid_on": "2025-03-12",
            "reference": "pay_fake_0001 pi_fake_0001",
            "written_at": now,
        },
        {
            "key": "v1-k2",
            "invoice_remote_id": "INV-1001",
            "amount": "10000",
            "currency": "JPY",
            "paid_on": "2025-03-12",
            "reference": "pay_fake_0001 pi_fake_0001",
            "written_at": now,
        },
    ]


def test_payments_out_survives_a_torn_last_line(tmp_path: Path, source: FilesSource) -> None:
    (tmp_path / "payments.out.jsonl").write_text('{"key": "v1-old"}\n{"key": "v1-to')
    source.record_payment(payment(), key="v1-new")
    source.record_payment(payment(), key="v1-old")
    lines = (tmp_path / "payments.out.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["key"] == "v1-new"


def test_payments_out_in_a_missing_folder_is_a_connector_error(
    tmp_path: Path, frozen_clock: FrozenClock
) -> None:
    source = FilesSource(FilesSettings(path=str(tmp_path / "gone")), frozen_clock)
    with pytest.raises(ConnectorError, match="cannot record payment"):
        source.record_payment(payment(), key="k")


def test_empty_folder_yields_nothing(source: FilesSource) -> None:
    assert (list(source.companies(None)), list(source.contacts(None)), list(source.invoices(None))) == (
        [],
        [],
        [],
    )


def test_registry_builds_the_files_source(tmp_path: Path, frozen_clock: FrozenClock) -> None:
    config = SimpleNamespace(psa=SimpleNamespace(kind="files", files=FilesSettings(path=str(tmp_path))))
    source = psa_source(config, frozen_clock)  # type: ignore[arg-type]
    assert isinstance(source, FilesSource) and source.kind == "files" and source.supports_payment_writeback


def test_registry_builds_the_journal_sink(tmp_path: Path) -> None:
    config = SimpleNamespace(
        accounting=SimpleNamespace(kind="journal", journal=SimpleNamespace(format="csv")),
        journal_path=tmp_path / "journal.csv",
    )
    assert accounting_sink(config, None, None).kind == "journal"  # type: ignore[arg-type]


def test_the_csv_example_in_files_format_md_imports(tmp_path: Path, source: FilesSource) -> None:
    doc = (Path(__file__).resolve().parents[3] / "sync" / "psa" / "FILES_FORMAT.md").read_text(
        encoding="utf-8"
    )
    example = doc.split("```csv\n", 1)[1].split("```", 1)[0]
    write(tmp_path, "invoices.csv", example)
    (inv,) = items(list(source.invoices(None)))
    assert isinstance(inv, RemoteInvoice)
    assert (inv.number, inv.subtotal_minor, inv.total_minor, inv.paid_minor, len(inv.lines)) == (
        "INV-1001",
        4500,
        5000,
        2000,
        2,
    )
