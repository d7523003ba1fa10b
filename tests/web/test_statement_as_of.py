"""A past month's statement shows the open items, balances and aging of that month's last day in
the MSP's zone (Chicago), not today's: payments count from their success, refunds from their own
time. The frozen clock is March 10, 2026; February 28 ends at 06:00 UTC on March 1 (CST).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from app.core.clock import to_db
from tests.web import factories as f
from tests.web.test_documents_and_people import pdf_text


def _open_items(page: str) -> dict[str, tuple[str, str]]:
    """{invoice number: (days late, balance)} of the statement's open-invoices table."""
    table = page.split('id="statement-open"')[1].split("</table>")[0]
    return {
        number: (days.strip(), balance)
        for number, days, balance in re.findall(
            r"<tr><td[^>]*>([A-Z]+-[A-Z0-9]+)</td><td[^>]*>[^<]*</td><td[^>]*>([^<]*)</td>\s*"
            r"<td[^>]*>([^<]*)</td></tr>",
            table,
        )
    }


def _aging(page: str, key: str) -> str:
    return re.search(rf'id="aging-USD-{key}">(?:<strong>)?([^<]*)<', page).group(1)


def _refund(svc, payment: f.Ref, invoice: f.Ref, amount_minor: int, at: datetime) -> None:
    """A refund's reversal as app.core.reversals writes it: a negative allocation at its own time."""
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, kind, source_ref, "
            "created_at) VALUES (?, ?, ?, 'USD', 'refund', ?, ?)",
            (payment.id, invoice.id, -amount_minor, f"refund-test-{payment.id}-{invoice.id}", to_db(at)),
        )


def test_a_past_months_statement_shows_balances_and_aging_as_of_its_last_day(signed_in, svc, acme, tmp_path):
    def utc(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
        return datetime(2026, month, day, hour, minute, tzinfo=UTC)

    # Open on Feb 28 (9 days late), paid in full on March 4.
    late = f.make_invoice(
        svc, acme, "INV-LATE", total_minor=100_000, issued_on="2026-01-20", due_on="2026-02-19"
    )
    f.make_payment(svc, acme, [(late, 100_000)], created_at=utc(4, 15))
    # Not yet due on Feb 28: $100.25 paid on Feb 20, the other $150.25 on March 5.
    part = f.make_invoice(
        svc, acme, "INV-PART", total_minor=25_050, issued_on="2026-02-10", due_on="2026-03-12"
    )
    f.make_payment(svc, acme, [(part, 10_025)], created_at=utc(20, 16, month=2))
    f.make_payment(svc, acme, [(part, 15_025)], created_at=utc(5, 16))
    # Paid on Feb 27: not on the statement.
    paid = f.make_invoice(
        svc, acme, "INV-PAID", total_minor=30_000, issued_on="2026-02-02", due_on="2026-03-04"
    )
    f.make_payment(svc, acme, [(paid, 30_000)], created_at=utc(27, 16, month=2))
    # Paid at 23:30 on Feb 28 in Chicago (05:30 UTC on March 1): paid by the month's end.
    eve = f.make_invoice(
        svc, acme, "INV-EVE", total_minor=50_000, issued_on="2026-02-03", due_on="2026-03-05"
    )
    f.make_payment(svc, acme, [(eve, 50_000)], created_at=utc(1, 5, 30))
    # Paid at 00:30 on March 1 in Chicago: still open on Feb 28.
    dawn = f.make_invoice(
        svc, acme, "INV-DAWN", total_minor=12_345, issued_on="2026-02-04", due_on="2026-03-06"
    )
    f.make_payment(svc, acme, [(dawn, 12_345)], created_at=utc(1, 6, 30))
    # An ACH payment started on Feb 26 that succeeded on March 3: still open on Feb 28.
    ach = f.make_invoice(
        svc, acme, "INV-ACH", total_minor=60_000, issued_on="2026-01-02", due_on="2026-02-01"
    )
    ach_pay = f.make_payment(svc, acme, [(ach, 60_000)], created_at=utc(26, 16, month=2))
    with svc.store.write() as db:
        db.execute("UPDATE payments SET succeeded_at = ? WHERE id = ?", (to_db(utc(3, 16)), ach_pay.id))
    # Paid in January, $75.00 refunded on Feb 25: open again on Feb 28 (and still today).
    refunded = f.make_invoice(
        svc, acme, "INV-REF", total_minor=20_000, issued_on="2026-01-05", due_on="2026-02-04"
    )
    jan = f.make_payment(svc, acme, [(refunded, 20_000)], created_at=utc(15, 16, month=1))
    _refund(svc, jan, refunded, 7_500, utc(25, 16, month=2))
    # Paid on Feb 15, $120.00 refunded on March 2: paid in full on Feb 28.
    later_refund = f.make_invoice(
        svc, acme, "INV-LREF", total_minor=40_000, issued_on="2026-02-01", due_on="2026-03-03"
    )
    feb = f.make_payment(svc, acme, [(later_refund, 40_000)], created_at=utc(15, 16, month=2))
    _refund(svc, feb, later_refund, 12_000, utc(2, 16))
    # Issued in March: not on February's statement.
    f.make_invoice(svc, acme, "INV-MAR", total_minor=9_900, issued_on="2026-03-02", due_on="2026-04-01")

    page = signed_in.get("/statements/2026-02").get_data(as_text=True)
    assert "Open balances and aging as of February 28, 2026." in page
    assert _open_items(page) == {
        "INV-ACH": ("27", "$600.00"),
        "INV-REF": ("24", "$75.00"),
        "INV-LATE": ("9", "$1,000.00"),
        "INV-DAWN": ("", "$123.45"),
        "INV-PART": ("", "$150.25"),
    }
    assert _aging(page, "current") == "$273.70"  # 123.45 + 150.25
    assert _aging(page, "1_30") == "$1,675.00"  # 600.00 + 75.00 + 1,000.00
    assert _aging(page, "31_60") == "$0.00"
    assert _aging(page, "total") == "$1,948.70"
    # February's own payments are its activity; March's are not.
    payments = page.split('id="statement-payments"')[1].split("</table>")[0]
    assert "$100.25" in payments and "$300.00" in payments and "$500.00" in payments
    assert "$150.25" not in payments and "$123.45" not in payments

    text = pdf_text(signed_in.get("/statements/2026-02/pdf").data, tmp_path)
    assert "INV-LATE" in text and "$1,000.00" in text and "$1,948.70" in text
    assert "INV-PAID" not in text.split("Open invoices")[1] and "INV-MAR" not in text

    # This month's statement is as of today: what the refunds reopened and March's invoice.
    march = signed_in.get("/statements/2026-03").get_data(as_text=True)
    assert _open_items(march) == {
        "INV-REF": ("34", "$75.00"),
        "INV-LREF": ("7", "$120.00"),
        "INV-MAR": ("", "$99.00"),
    }
    assert _aging(march, "total") == "$294.00"


def test_a_parents_consolidated_statement_is_as_of_the_months_last_day_too(client, svc):
    from tests.web.conftest import sign_in

    parent = f.make_client(svc, "Holdings Group", remote_id="co-hold")
    east = f.make_client(svc, "East Branch", remote_id="co-east")
    with svc.store.write() as db:
        db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (parent.id, east.id))
    hq = f.make_invoice(svc, parent, "HQ-1", total_minor=5_000, issued_on="2026-02-02", due_on="2026-03-04")
    branch = f.make_invoice(
        svc, east, "EAST-1", total_minor=12_345, issued_on="2026-02-05", due_on="2026-02-20"
    )
    # The parent pays HQ-1 on Feb 27 and EAST-1 on March 3.
    f.make_payment(svc, parent, [(hq, 5_000)], created_at=datetime(2026, 2, 27, 16, 0, tzinfo=UTC))
    f.make_payment(svc, parent, [(branch, 12_345)], created_at=datetime(2026, 3, 3, 16, 0, tzinfo=UTC))
    f.make_person(svc, parent, "ap@holdings.example")
    sign_in(client, "ap@holdings.example")
    page = client.get("/statements/2026-02").get_data(as_text=True)
    assert re.search(r'id="consolidated-total-USD"><strong>\$123\.45<', page)
    east_part = page.split(f'id="statement-company-{east.token}"')[1].split("</section>")[0]
    assert _open_items(east_part) == {"EAST-1": ("8", "$123.45")}
    hq_part = page.split(f'id="statement-company-{parent.token}"')[1].split("</section>")[0]
    assert 'id="statement-open"' not in hq_part
    # Today both are paid: March's statement has nothing due.
    march = client.get("/statements/2026-03").get_data(as_text=True)
    assert 'id="consolidated-nothing-due"' in march
