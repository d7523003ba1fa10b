"""The demo dataset: a ConnectWise-shaped export that adds up to the cent and is the same every time."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from app.demo.dataset import KINDS, DatasetSummary, generate
from tests.fakes.connectwise import spec_path

TODAY = date(2026, 3, 10)
CENT = Decimal("0.01")
INVOICE_TYPES = {"Agreement", "CreditMemo", "DownPayment", "Miscellaneous", "Progress", "Standard"}
APPLY_TO_TYPES = {"All", "Agreement", "Project", "ProjectPhase", "SalesOrder", "Ticket"}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def load(folder: Path, name: str) -> list[dict[str, Any]]:
    with (folder / f"{name}.json").open(encoding="utf-8") as fh:
        return json.load(fh, parse_float=Decimal)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[DatasetSummary, dict[str, list[dict[str, Any]]]]:
    folder = tmp_path_factory.mktemp("psa-export")
    summary = generate(folder, today=TODAY)
    return summary, {name: load(folder, name) for name in ("companies", "contacts", "invoices")}


def kind_of(inv: dict[str, Any]) -> str:
    if inv["type"] == "CreditMemo":
        return "credit_memo"
    if inv["type"] == "Agreement":
        return "agreement"
    if "project" in inv:
        return "project"
    if "salesOrder" in inv:
        return "product"
    if inv.get("ticket") or any(line["ticket"] for line in inv["lines"]):
        return "time_and_materials"
    return "other"


def cents(value: Decimal) -> int:
    assert isinstance(value, (Decimal, int)), value
    assert Decimal(value).as_tuple().exponent >= -2, f"{value} has more than 2 decimals"
    return int(Decimal(value) * 100)


def test_counts_match_the_request_and_the_summary(export):
    summary, data = export
    assert summary.companies == len(data["companies"]) == 42
    assert summary.invoices == len(data["invoices"]) == 2100
    assert summary.contacts == len(data["contacts"])
    assert summary.lines == sum(len(i["lines"]) for i in data["invoices"])
    assert sum(summary.by_kind.values()) == summary.invoices


def test_every_invoice_adds_up_to_the_cent(export):
    _, data = export
    for inv in data["invoices"]:
        lines = inv["lines"]
        assert lines, inv["invoiceNumber"]
        for line in lines:
            assert isinstance(line["quantity"], str)
            expected = (Decimal(line["quantity"]) * line["unitPrice"]).quantize(CENT, rounding=ROUND_HALF_UP)
            assert cents(line["amount"]) == cents(expected), (inv["invoiceNumber"], line)
        subtotal = cents(inv["subtotal"])
        assert sum(cents(line["amount"]) for line in lines) == subtotal, inv["invoiceNumber"]
        assert subtotal + cents(inv["salesTax"]) == cents(inv["total"]), inv["invoiceNumber"]
        parts = ("agreementAmount", "serviceTotal", "productTotal", "expenseTotal")
        assert sum(cents(inv[p]) for p in parts) == subtotal, inv["invoiceNumber"]
        assert cents(inv["total"]) - cents(inv["payments"]) - cents(inv["credits"]) == cents(inv["balance"])


def test_every_kind_of_invoice_is_present(export):
    summary, data = export
    counts = Counter(kind_of(inv) for inv in data["invoices"])
    assert counts == Counter({k: v for k, v in summary.by_kind.items()})
    assert set(counts) == set(KINDS)
    assert counts["credit_memo"] >= 3
    assert all(n >= 100 for k, n in counts.items() if k != "credit_memo"), counts
    for inv in data["invoices"]:
        assert inv["type"] in INVOICE_TYPES and inv["applyToType"] in APPLY_TO_TYPES
        if inv["type"] == "CreditMemo":
            assert cents(inv["total"]) < 0
        else:
            assert cents(inv["total"]) > 0


def test_lines_carry_the_references_of_their_kind(export):
    _, data = export
    descriptions = [line["description"] for inv in data["invoices"] for line in inv["lines"]]
    assert any(re.fullmatch(r"Managed workstation × \d+", d) for d in descriptions)
    assert any(re.match(r"#\d{5} \w", d) for d in descriptions)
    assert any(d.startswith("Office 365 migration — Phase 2") for d in descriptions)
    for inv in data["invoices"]:
        kind = kind_of(inv)
        for line in inv["lines"]:
            if kind == "agreement":
                assert line["agreement"] == inv["agreement"]["name"] == "Managed Services Agreement"
            if kind == "project":
                assert (line["project"], line["phase"]) == (inv["project"]["name"], inv["phase"]["name"])
            if kind == "time_and_materials":
                assert re.fullmatch(r"#\d{5} \S.*", line["ticket"])
                if "ticket" in inv:  # one ticket: the line names it as the invoice does
                    assert line["ticket"] == f"#{inv['ticket']['id']} {inv['ticket']['summary']}"
            assert set(line) == {
                "description",
                "quantity",
                "unitPrice",
                "amount",
                "agreement",
                "project",
                "phase",
                "ticket",
                "service",
            }


def test_non_ascii_names_are_present(export):
    _, data = export
    names = {c["name"] for c in data["companies"]}
    assert {"Café Lumière SARL", "Müller & Söhne GmbH", "Søren Dental ApS", "Zoë Ortiz CPA"} <= names
    people = {f"{c['firstName']} {c['lastName']}" for c in data["contacts"]}
    assert sum(1 for p in people if not p.isascii()) >= 10
    emails = [
        item["value"]
        for c in data["contacts"]
        for item in c["communicationItems"]
        if item["communicationType"] == "Email"
    ]
    assert all(e.isascii() and e.endswith(".example") for e in emails)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate(tmp_path / name, today=TODAY, seed=seed, clients=12, invoices=300)
    for file in ("companies.json", "contacts.json", "invoices.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "invoices.json").read_bytes() != (tmp_path / "c" / "invoices.json").read_bytes()


def test_invoices_spread_over_the_24_months_before_today(export):
    summary, data = export
    dates = [date.fromisoformat(inv["date"][:10]) for inv in data["invoices"]]
    assert min(dates) >= date(2024, 3, 10) and max(dates) < TODAY
    assert (summary.first_invoice_on, summary.last_invoice_on) == (min(dates), max(dates))
    months = Counter((d.year, d.month) for d in dates)
    assert len(months) in (24, 25) and all(n >= 30 for n in months.values() if n != months[(2024, 3)])
    agreement_days = {
        date.fromisoformat(i["date"][:10]).day for i in data["invoices"] if i["type"] == "Agreement"
    }
    assert agreement_days == {1}


def test_due_dates_follow_the_billing_terms(export):
    _, data = export
    terms = {c["id"]: c["billingTerms"]["name"] for c in data["companies"]}
    for inv in data["invoices"]:
        assert inv["billingTerms"]["name"] == terms[inv["company"]["id"]]
        days = {"Net 15": 15, "Net 30": 30}[inv["billingTerms"]["name"]]
        issued, due = date.fromisoformat(inv["date"][:10]), date.fromisoformat(inv["dueDate"][:10])
        assert due - issued == timedelta(days=days)


def test_old_invoices_are_mostly_paid_some_partly_and_recent_ones_open(export):
    summary, data = export
    receivable = [i for i in data["invoices"] if i["type"] != "CreditMemo"]

    def issued(inv):
        return date.fromisoformat(inv["date"][:10])

    old = [i for i in receivable if issued(i) < TODAY - timedelta(days=180)]
    paid_old = [i for i in old if cents(i["balance"]) == 0]
    assert len(paid_old) / len(old) > 0.9
    assert all(cents(i["payments"]) + cents(i["credits"]) == cents(i["total"]) for i in paid_old)
    partial = [
        i for i in receivable if 0 < cents(i["payments"]) < cents(i["total"]) and cents(i["balance"]) > 0
    ]
    assert len(partial) >= 20 and summary.partially_paid == len(partial)
    assert all(i["status"]["name"] == "Partially Paid" for i in partial)
    recent = [i for i in receivable if issued(i) >= TODAY - timedelta(days=10)]
    assert len(recent) >= 10 and sum(cents(i["balance"]) > 0 for i in recent) / len(recent) > 0.8
    overdue = [
        i for i in receivable if cents(i["balance"]) > 0 and date.fromisoformat(i["dueDate"][:10]) < TODAY
    ]
    assert len(overdue) >= 20 and summary.overdue == len(overdue)
    for inv in data["invoices"]:
        assert inv["status"]["isClosed"] == (cents(inv["balance"]) == 0)
        assert inv["currency"]["currencyCode"] == "USD"


def test_each_client_has_two_contacts_and_exactly_one_billing_contact(export):
    _, data = export
    by_company: dict[int, list[dict[str, Any]]] = {}
    for contact in data["contacts"]:
        by_company.setdefault(contact["company"]["id"], []).append(contact)
        assert any(
            i["communicationType"] == "Email" and i["type"]["name"] == "Email"
            for i in contact["communicationItems"]
        )
    for company in data["companies"]:
        contacts = by_company[company["id"]]
        assert len(contacts) >= 2, company["name"]
        billing = [c for c in contacts if any(t["name"] == "Billing" for t in c["types"])]
        assert len(billing) == 1, company["name"]
        assert company["billingContact"]["id"] == billing[0]["id"]
        assert not billing[0]["inactiveFlag"]
        assert any(
            t["name"] in ("Service", "Approver") for c in contacts if c is not billing[0] for t in c["types"]
        )


def test_demo_logins_are_billing_contacts_of_clients_with_open_invoices(export):
    summary, data = export
    assert len(summary.demo_logins) == 2
    for login in summary.demo_logins:
        company = next(c for c in data["companies"] if c["id"] == login.company_id)
        assert company["name"] == login.client_name and company["invoiceToEmailAddress"] == login.email
        open_ = [
            i for i in data["invoices"] if i["company"]["id"] == login.company_id and cents(i["balance"]) > 0
        ]
        assert len(open_) == login.open_invoices > 0
        assert sum(cents(i["balance"]) for i in open_) == login.open_balance_minor


def test_timestamps_are_utc_with_z_and_never_after_yesterday(export):
    _, data = export
    latest = datetime(2026, 3, 9, 23, 59, 59, tzinfo=UTC)
    for name, records in data.items():
        for record in records:
            stamp = record["_info"]["lastUpdated"]
            assert TIMESTAMP.match(stamp), (name, stamp)
            assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= latest
    for inv in data["invoices"]:
        assert TIMESTAMP.match(inv["date"]) and TIMESTAMP.match(inv["dueDate"])
        assert inv["_info"]["lastUpdated"][:10] >= inv["date"][:10]


def test_ids_numbers_and_lengths_fit_connectwise(export):
    _, data = export
    for name in ("companies", "contacts", "invoices"):
        ids = [r["id"] for r in data[name]]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
    invoices = data["invoices"]
    # Newest last, as a connector's `id > cursor` paging expects.
    assert [i["id"] for i in invoices] == sorted(i["id"] for i in invoices)
    assert len({i["invoiceNumber"] for i in invoices}) == len(invoices)
    assert all(
        len(i["invoiceNumber"]) <= 15 and len(i["reference"]) <= 50 and len(i["attention"]) <= 60
        for i in invoices
    )
    assert all(len(c["name"]) <= 50 and len(c["identifier"]) <= 30 for c in data["companies"])
    assert len({c["identifier"] for c in data["companies"]}) == len(data["companies"])


def test_records_use_the_connectwise_field_names_and_types(export):
    schemas = json.loads(spec_path().read_text())["components"]["schemas"]
    json_types = {
        "integer": int,
        "number": (int, Decimal),
        "string": str,
        "boolean": bool,
        "object": dict,
        "array": list,
    }
    extensions = {"Invoice": {"lines"}, "Company": set(), "Contact": set()}
    _, data = export
    for schema_name, records in (
        ("Company", data["companies"]),
        ("Contact", data["contacts"]),
        ("Invoice", data["invoices"]),
    ):
        props = schemas[schema_name]["properties"]
        for record in records:
            assert set(record) <= set(props) | extensions[schema_name], set(record) - set(props)
            for key, value in record.items():
                spec = props.get(key)
                if spec is None or value is None:
                    continue
                if "$ref" in spec:
                    ref_props = schemas[spec["$ref"].rsplit("/", 1)[1]]["properties"]
                    assert isinstance(value, dict) and set(value) <= set(ref_props), (schema_name, key, value)
                    continue
                expected = json_types[spec["type"]]
                assert isinstance(value, expected) and not (spec["type"] != "boolean" and value is True), key
                assert len(value) <= spec.get("maxLength", 10**6) if isinstance(value, str) else True
                if "enum" in spec:
                    assert value in spec["enum"], (key, value)


def test_small_sizes_still_hold_every_kind(tmp_path):
    summary = generate(tmp_path, today=date(2025, 1, 1), seed=3, clients=5, invoices=60)
    assert (summary.companies, summary.invoices) == (5, 60)
    assert all(summary.by_kind[k] >= 1 for k in KINDS)
    assert len(summary.demo_logins) == 2


def test_sizes_too_small_are_refused(tmp_path):
    with pytest.raises(ValueError, match="clients"):
        generate(tmp_path, today=TODAY, clients=3)
    with pytest.raises(ValueError, match="invoices"):
        generate(tmp_path, today=TODAY, invoices=10)
