"""The invoice list for a client with 500 invoices: every sort, filter and search returns exactly the
rows it should, in the right order, with counts and totals per kind to the cent.

The expected rows are computed here in Python from what was written, not read back from the app.
"""

from __future__ import annotations

import random
import re
from datetime import date, timedelta

import pytest

from tests.web import factories as f

KINDS = ("agreement", "project", "time_and_materials", "product")
PROJECTS = ("Office move", "Server refresh", "Wi-Fi upgrade")
AGREEMENTS = ("Managed services — Gold", "Backup plan")
SERVICES = ("Help desk", "Onsite support", "Hardware")
TODAY = date(2026, 3, 10)  # the web tests' frozen clock, in Chicago


def _numbers(html: str) -> list[str]:
    return re.findall(r'<a href="/invoices/[^"]+">([^<]+)</a>', html)


@pytest.fixture
def book(svc, acme):
    """500 invoices with seeded variety; returns their facts for computing expectations."""
    rnd = random.Random(4)
    rows = []
    for n in range(500):
        kind = KINDS[n % 4]
        total = rnd.randrange(1_000, 500_000)
        issued = TODAY - timedelta(days=rnd.randrange(0, 700))
        due = issued + timedelta(days=30)
        project = PROJECTS[n % 3] if kind == "project" else None
        agreement = AGREEMENTS[n % 2] if kind == "agreement" else None
        service = SERVICES[n % 3]
        ticket = f"#{7000 + n} Laptop won't boot" if kind == "time_and_materials" else None
        paid_elsewhere = total if n % 7 == 0 else (total // 2 if n % 11 == 0 else 0)
        number = f"INV-{n + 1}"
        f.make_invoice(
            svc,
            acme,
            number,
            kind=kind,
            total_minor=total,
            issued_on=issued.isoformat(),
            due_on=due.isoformat(),
            project=project,
            agreement=agreement,
            ticket=ticket,
            paid_elsewhere_minor=paid_elsewhere,
            description=f"Work order {n:04d}",
            lines=[
                {
                    "description": f"Line for {number}",
                    "amount_minor": total,
                    "service": service,
                    "project": project,
                    "ticket": ticket,
                }
            ],
        )
        rows.append(
            {
                "number": number,
                "kind": kind,
                "total": total,
                "balance": total - paid_elsewhere,
                "issued": issued,
                "due": due,
                "project": project,
                "agreement": agreement,
                "service": service,
                "ticket": ticket,
                "desc": f"Work order {n:04d}",
            }
        )
    return rows


def _all_pages(client, query: str) -> list[str]:
    out, page = [], 1
    while True:
        html = client.get(f"/invoices?{query}&page={page}").get_data(as_text=True)
        got = _numbers(html)
        out += got
        if 'id="next-page"' not in html:
            return out
        page += 1


def _natural(number: str) -> tuple[int, str]:
    return (len(number), number)


def test_every_sort_returns_all_500_in_the_right_order(signed_in, book):
    by = {
        "number": lambda r: (_natural(r["number"]),),
        "total": lambda r: (r["total"],),
        "balance": lambda r: (r["balance"],),
        "date": lambda r: (r["issued"],),
        "due": lambda r: (r["due"],),
    }
    ids = {r["number"]: i for i, r in enumerate(book, start=1)}  # rowid order breaks ties
    for sort, key in by.items():
        for direction in ("asc", "desc"):
            expected = sorted(
                book, key=lambda r, k=key: (*k(r), ids[r["number"]]), reverse=direction == "desc"
            )
            got = _all_pages(signed_in, f"status=all&sort={sort}&dir={direction}")
            assert got == [r["number"] for r in expected], (sort, direction)


def test_filters_by_kind_status_project_agreement_service_and_due_range_return_exactly_their_rows(
    signed_in, book
):
    def expect(pred, sort_key=lambda r: (r["due"], _natural(r["number"]))):
        return [r["number"] for r in sorted((r for r in book if pred(r)), key=sort_key)]

    unpaid = lambda r: r["balance"] > 0  # noqa: E731
    cases = {
        "kind=project": lambda r: unpaid(r) and r["kind"] == "project",
        "status=all&kind=time_and_materials": lambda r: r["kind"] == "time_and_materials",
        "status=paid": lambda r: r["balance"] <= 0,
        "status=partly_paid": lambda r: 0 < r["balance"] < r["total"],
        "status=overdue": lambda r: unpaid(r) and r["due"] < TODAY,
        "status=all&project=Server+refresh": lambda r: r["project"] == "Server refresh",
        "status=all&agreement=Backup+plan": lambda r: r["agreement"] == "Backup plan",
        "status=all&service=Onsite+support": lambda r: r["service"] == "Onsite support",
        "status=all&due_from=2025-06-01&due_to=2025-08-31": lambda r: (
            date(2025, 6, 1) <= r["due"] <= date(2025, 8, 31)
        ),
        "status=unpaid&kind=agreement&service=Help+desk&due_from=2025-01-01": lambda r: (
            unpaid(r)
            and r["kind"] == "agreement"
            and r["service"] == "Help desk"
            and r["due"] >= date(2025, 1, 1)
        ),
    }
    for query, pred in cases.items():
        got = _all_pages(signed_in, query)
        # Same due date: the list breaks the tie by row id, which is number order here.
        assert sorted(got, key=lambda n: next(r["due"] for r in book if r["number"] == n)) == got, query
        assert sorted(got, key=_natural) == sorted(expect(pred), key=_natural), query


def test_search_finds_number_description_ticket_project_and_line_text(signed_in, book):
    cases = {
        "INV-42": [r for r in book if "INV-42" in r["number"]],
        "work+order+0099": [r for r in book if r["desc"] == "Work order 0099"],
        "7013": [r for r in book if r["ticket"] and "7013" in r["ticket"]],
        "wi-fi": [r for r in book if r["project"] == "Wi-Fi upgrade"],
        "Line+for+INV-77": [r for r in book if r["number"] == "INV-77" or r["number"].startswith("INV-77")],
    }
    for q, rows in cases.items():
        got = _all_pages(signed_in, f"status=all&q={q}&sort=number")
        assert got == sorted((r["number"] for r in rows), key=_natural), q


def test_counts_and_totals_per_kind_are_those_of_the_selection(signed_in, book):
    html = signed_in.get("/invoices?status=all").get_data(as_text=True)
    from app.core.emails import money

    for kind in KINDS:
        rows = [r for r in book if r["kind"] == kind]
        owed = sum(max(0, r["balance"]) for r in rows)
        block = html.split(f'id="category-{kind}"')[1].split("</a>")[0]
        assert f'<span class="category-count">{len(rows)}</span>' in block
        assert f"{money(owed, 'USD')} due" in block
    assert "500 invoices" in html and "Page 1 of 10" in html
    total = sum(r["total"] for r in book)
    assert re.search(rf'id="selection-total-USD">{re.escape(money(total, "USD"))}<', html)


def test_a_bad_date_in_the_filter_is_explained_and_the_list_still_shows(signed_in, book):
    response = signed_in.get("/invoices?status=all&due_from=31/12/2025")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="due-from-error"' in html and "YYYY-MM-DD" in html
    assert "500 invoices" in html


def test_the_list_query_uses_the_clients_index_not_a_scan_of_every_invoice(svc, book):
    from app.web.invoice_list import InvoiceFilters, list_invoices

    plans = []
    original = svc.store.all

    def capture(sql, params=()):
        if "WITH paid" in sql:
            plans.extend(r["detail"] for r in original("EXPLAIN QUERY PLAN " + sql, params))
        return original(sql, params)

    svc.store.all = capture  # type: ignore[method-assign]
    try:
        list_invoices(svc.store, 1, TODAY, InvoiceFilters(status="all"), thresholds={})
    finally:
        svc.store.all = original  # type: ignore[method-assign]
    text = "\n".join(plans)
    assert "SCAN i" not in text and "SCAN ci" not in text, text
    assert "invoices_client_visible" in text or "invoices_client" in text, text
