"""CSV exports (AR, payments, audit): exact decimals, UTF-8 with a BOM, no cell a spreadsheet runs."""

from __future__ import annotations

import csv
import io

import pytest

from app.core.audit import audit
from app.core.csv_export import safe_cell, to_csv
from tests.web import factories
from tests.web.admin.helpers import seed_finance_world


def _rows(response) -> list[list[str]]:
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbf"), body[:10]
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://evil.example","x")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_a_cell_starting_with_a_formula_character_is_neutralised(text):
    assert safe_cell(text) == "'" + text
    assert list(csv.reader(io.StringIO(to_csv(["h"], [[text]]).decode("utf-8-sig"))))[1] == ["'" + text]


def test_ordinary_cells_are_left_alone():
    assert [safe_cell(v) for v in ("Acme", "1250.00", "a=b", "", None, 7)] == [
        "Acme",
        "1250.00",
        "a=b",
        "",
        "",
        "7",
    ]


def test_the_ar_export_lists_open_ar_in_exact_decimals_with_days_and_bucket(svc, as_readonly):
    seed_finance_world(svc)
    rows = _rows(as_readonly.get("/admin/export/ar.csv"))
    assert rows[0] == [
        "client",
        "client_id",
        "invoice",
        "kind",
        "issued_on",
        "due_on",
        "days_overdue",
        "aging_bucket",
        "currency",
        "total",
        "paid",
        "balance",
    ]
    by_invoice = {r[2]: r for r in rows[1:]}
    assert sorted(by_invoice) == ["A1", "A2", "G1", "G2", "I1", "I2", "K1", "U1", "U2"]
    assert by_invoice["U2"][5:] == ["2025-12-09", "91", "90+", "USD", "999.99", "0.00", "999.99"]
    assert by_invoice["I1"][9:] == ["1200.00", "200.00", "1000.00"]
    assert by_invoice["A2"][6:8] == ["0", "current"]
    assert by_invoice["K1"][8] == "CAD"
    assert sum(int(r[11].replace(".", "")) for r in rows[1:] if r[8] == "USD") == 944_999


def test_exported_client_names_from_the_psa_cannot_run_as_formulas(svc, as_readonly):
    evil = factories.make_client(svc, '=HYPERLINK("http://evil.example","Click")')
    factories.make_invoice(svc, evil, "@INV-1", total_minor=12_345)
    ar = _rows(as_readonly.get("/admin/export/ar.csv"))
    assert ar[1][0] == '\'=HYPERLINK("http://evil.example","Click")' and ar[1][2] == "'@INV-1"


def test_the_payments_export_follows_the_filters(svc, as_readonly):
    seed_finance_world(svc)
    rows = _rows(as_readonly.get("/admin/export/payments.csv?status=failed"))
    assert (
        len(rows) == 2 and rows[1][2] == "Globex Corporation" and rows[1][5:8] == ["failed", "USD", "2000.00"]
    )
    everything = _rows(as_readonly.get("/admin/export/payments.csv"))
    assert len(everything) == 6
    assert rows[1][0] == "2026-03-05 09:00:00"  # 15:00Z in Chicago (CST, before the DST change)


def test_the_audit_export_follows_the_filters_and_is_itself_audited(svc, as_readonly):
    with svc.store.write() as db:
        audit(
            db,
            svc.clock,
            actor="admin:x@y",
            action="payment.recorded_manually",
            target="payment:1",
            detail={"reference": "-1042"},
        )
        audit(db, svc.clock, actor="stripe", action="payment.succeeded", target="payment:2")
    rows = _rows(as_readonly.get("/admin/export/audit.csv?action=payment.recorded"))
    assert rows[0] == ["at", "actor", "action", "target", "detail"]
    assert [r[2] for r in rows[1:]] == ["payment.recorded_manually"]
    assert rows[1][4] == '{"reference": "-1042"}'
    assert (
        svc.store.scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'export.downloaded' AND "
            "target = 'audit' AND actor = 'admin:auditor@northwind.example'"
        )
        == 1
    )


def test_the_audit_log_filters_by_local_date_range_and_says_when_a_date_is_wrong(svc, as_owner):
    with svc.store.write() as db:
        for at, target in (("2026-03-10T04:30:00.000000Z", "a"), ("2026-03-10T05:30:00.000000Z", "b")):
            db.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail_json) "
                "VALUES (?, 'cli', 'test.marker', ?, '{}')",
                (at, target),
            )
    # 04:30Z on March 10 is 23:30 on March 9 in Chicago (CDT): not on the 10th there.
    page = as_owner.get("/admin/audit?action=test.&since=2026-03-10&until=2026-03-10").get_data(as_text=True)
    assert "1 entry" in page and ">b<" in page and ">a<" not in page
    bad = as_owner.get("/admin/audit?since=12/03/2026")
    assert bad.status_code == 400 and "From date: enter a date such as 2026-03-09" in bad.get_data(
        as_text=True
    )
    assert as_owner.get("/admin/export/audit.csv?until=yesterday").status_code == 400
