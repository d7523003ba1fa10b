"""Home's figures say what they count: what is open, split into overdue, due today and not due
yet; a credit is shown as credit not yet applied (not as a minus that was never taken off); and
the pay-all button names the amount it pays, the same total the pay page then shows."""

from __future__ import annotations

import re

from tests.web import factories as f


def _text(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|dd|dt|a|strong)>', html, re.S)
    assert found, element_id
    return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())


def test_home_splits_the_open_amount_by_due_date_and_the_button_says_what_it_pays(signed_in, svc, acme):
    # Today is March 10, 2026 (the frozen clock).
    late = f.make_invoice(svc, acme, "INV-11812", total_minor=535_000, due_on="2026-02-17")
    f.make_payment(svc, acme, [(late, 100_000)])
    f.make_invoice(svc, acme, "INV-12088", total_minor=380_350, due_on="2026-03-31")
    f.make_invoice(svc, acme, "INV-12090", total_minor=10_000, due_on="2026-03-10")
    f.make_invoice(svc, acme, "CM-0042", kind="credit_memo", total_minor=-30_760, due_on="2026-03-01",
                   lines=[{"description": "SLA credit", "amount_minor": -30_760}])

    home = signed_in.get("/").get_data(as_text=True)

    assert "Total due" not in home and "Pay all due" not in home
    figures = {k: _text(home, k) for k in (
        "open-total-USD", "overdue-USD", "due-today-USD", "not-yet-due-USD", "credit-available-USD",
        "pay-all-due",
    )}
    assert figures == {
        "open-total-USD": "$8,253.50",  # 4,350.00 + 3,803.50 + 100.00: every open invoice
        "overdue-USD": "$4,350.00",
        "due-today-USD": "$100.00",
        "not-yet-due-USD": "$3,803.50",
        "credit-available-USD": "$307.60",  # no minus: nothing was taken off
        "pay-all-due": "Pay all open invoices: $8,253.50",
    }
    assert "Open invoices" in home and "Credit not yet applied" in home
    assert "It is not taken off the open invoices above" in home

    pay = signed_in.get("/pay?all=due&currency=USD").get_data(as_text=True)
    assert _text(pay, "pay-total") == "$8,253.50"


def test_an_invoice_waiting_for_an_approver_is_open_but_not_in_the_button(signed_in, svc, acme):
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO client_overrides (client_id, approval_threshold_minor, approval_threshold_currency, "
            "updated_at, updated_by) VALUES (?, 100000, 'USD', '2026-03-01T00:00:00Z', 'test')",
            (acme.id,),
        )
    f.make_invoice(svc, acme, "INV-BIG", total_minor=250_000, due_on="2026-03-20")
    f.make_invoice(svc, acme, "INV-SMALL", total_minor=40_000, due_on="2026-03-20")

    home = signed_in.get("/").get_data(as_text=True)

    assert _text(home, "open-total-USD") == "$2,900.00"
    assert _text(home, "awaiting-approval-USD").startswith("$2,500.00 of it waits for an approver's OK")
    assert _text(home, "pay-all-due") == "Pay all open invoices: $400.00"
    pay = signed_in.get("/pay?all=due&currency=USD").get_data(as_text=True)
    assert _text(pay, "pay-total") == "$400.00"
