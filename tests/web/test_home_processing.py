"""Home's open amount leaves out what a payment still clearing (a bank payment) will pay, as "Pay
all open invoices" does, and shows that part apart as "Being processed"."""

from __future__ import annotations

import re

from tests.web import factories as f


def _processing_ach(svc, client: f.Ref, allocations: list[tuple[f.Ref, int]]) -> f.Ref:
    pay = f.make_payment(svc, client, allocations, status="processing")
    with svc.store.write() as db:
        db.execute("UPDATE payments SET method = 'ach' WHERE id = ?", (pay.id,))
    return pay


def _amount(html: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}">(?:<strong>)?([^<]+)<', html).group(1)


def test_total_due_leaves_out_a_clearing_bank_payment_and_matches_pay_all_due(signed_in, svc, acme):
    # The frozen clock is March 10, 2026.
    f.make_invoice(svc, acme, "INV-LATE", total_minor=535_000, due_on="2026-02-18")
    clearing = f.make_invoice(svc, acme, "INV-ACH", total_minor=380_350, due_on="2026-03-31")
    part = f.make_invoice(svc, acme, "INV-PART", total_minor=100_000, due_on="2026-03-01")
    _processing_ach(svc, acme, [(clearing, 380_350), (part, 40_025)])

    home = signed_in.get("/").get_data(as_text=True)
    assert _amount(home, "open-total-USD") == "$5,949.75"  # 5,350.00 + 599.75 (1,000.00 less 400.25)
    assert _amount(home, "overdue-USD") == "$5,949.75"  # INV-PART's clearing part is not overdue
    processing = re.search(r'id="processing-USD">Being processed: <strong>([^<]+)</strong>', home)
    assert processing and processing.group(1) == "$4,203.75"  # 3,803.50 + 400.25
    assert 'id="pay-all-due"' in home

    pay = signed_in.get("/pay?all=due&currency=USD").get_data(as_text=True)
    assert _amount(pay, "pay-total") == "$5,949.75"
    assert "INV-ACH" in pay.split('id="skipped-invoices"')[1].split("</p>")[0]
    assert "INV-ACH" not in pay.split('id="pay-table"')[1].split("</table>")[0]


def test_when_everything_owed_is_clearing_nothing_is_left_to_pay_from_home(signed_in, svc, acme):
    clearing = f.make_invoice(svc, acme, "INV-ACH", total_minor=380_350, due_on="2026-03-31")
    _processing_ach(svc, acme, [(clearing, 380_350)])
    home = signed_in.get("/").get_data(as_text=True)
    assert _amount(home, "open-total-USD") == "$0.00"
    assert "Nothing overdue" in home.split('id="totals-USD"')[1]
    assert re.search(r'id="processing-USD">Being processed: <strong>\$3,803\.50</strong>', home)
    assert 'id="pay-all-due"' not in home


def test_without_payments_in_flight_there_is_no_being_processed_line(signed_in, svc, acme):
    inv = f.make_invoice(svc, acme, "INV-1", total_minor=12_345, due_on="2026-03-31")
    f.make_payment(svc, acme, [(inv, 2_345)], status="failed")
    home = signed_in.get("/").get_data(as_text=True)
    assert _amount(home, "open-total-USD") == "$123.45"
    assert 'id="processing-USD"' not in home
