"""Home, the invoice list and one invoice: what is shown, filtered, totalled, and when it is late."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.web import factories as f


def _numbers(html: str) -> list[str]:
    return re.findall(r'<a href="/invoices/[^"]+">([^<]+)</a>', html)


def _page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.get_data(as_text=True)


def test_home_shows_due_and_overdue_per_currency_urgent_invoices_and_the_last_payment(signed_in, svc, acme):
    late = f.make_invoice(svc, acme, "INV-1001", total_minor=125_000, due_on="2026-03-01")
    f.make_invoice(svc, acme, "INV-1002", total_minor=5_000, due_on="2026-03-20")
    f.make_invoice(svc, acme, "INV-2001", total_minor=1_000_000, currency="JPY", due_on="2026-04-10")
    f.make_payment(svc, acme, [(late, 25_000)])
    html = _page(signed_in, "/")
    assert re.search(r'id="open-total-USD">\$1,050.00<', html)
    assert re.search(r'id="overdue-USD">\$1,000.00<', html)
    assert re.search(r'id="open-total-JPY">¥1,000,000<', html)
    assert "Nothing overdue" in html.split('id="totals-JPY"')[1]
    assert _numbers(html)[:3] == ["INV-1001", "INV-1002", "INV-2001"]
    assert "$250.00 on March 5, 2026" in html
    assert 'id="pay-all-due-USD"' in html and 'id="pay-selected"' in html


def test_home_shows_only_the_five_most_urgent(signed_in, svc, acme):
    for n in range(8):
        f.make_invoice(svc, acme, f"INV-{n}", due_on=f"2026-03-{20 - n:02d}")
    html = _page(signed_in, "/")
    assert _numbers(html) == ["INV-7", "INV-6", "INV-5", "INV-4", "INV-3"]


def test_home_with_nothing_due_says_so(signed_in):
    html = _page(signed_in, "/")
    assert 'id="nothing-due"' in html and "pay-all-due" not in html


def test_only_approved_open_invoices_are_listed(signed_in, svc, acme):
    f.make_invoice(svc, acme, "INV-OPEN")
    f.make_invoice(svc, acme, "INV-VOID", status="void")
    f.make_invoice(svc, acme, "INV-DELETED", status="deleted")
    f.make_invoice(svc, acme, "INV-UNAPPROVED", is_approved=False)
    html = _page(signed_in, "/invoices?status=all")
    assert _numbers(html) == ["INV-OPEN"]
    for hidden in ("INV-VOID", "INV-DELETED", "INV-UNAPPROVED"):
        assert hidden not in html
        token = svc.store.scalar("SELECT token FROM invoices WHERE number = ?", (hidden,))
        assert signed_in.get(f"/invoices/{token}").status_code == 404


def test_status_filter_open_paid_and_all(signed_in, svc, acme):
    paid = f.make_invoice(svc, acme, "INV-PAID", total_minor=5_000)
    f.make_payment(svc, acme, [(paid, 5_000)])
    f.make_invoice(svc, acme, "INV-ELSEWHERE", total_minor=5_000, paid_elsewhere_minor=5_000)
    f.make_invoice(svc, acme, "INV-OPEN", total_minor=5_000)
    f.make_invoice(svc, acme, "INV-LATE", total_minor=5_000, due_on="2026-03-01")
    assert sorted(_numbers(_page(signed_in, "/invoices"))) == ["INV-LATE", "INV-OPEN"]
    assert sorted(_numbers(_page(signed_in, "/invoices?status=paid"))) == ["INV-ELSEWHERE", "INV-PAID"]
    assert _numbers(_page(signed_in, "/invoices?status=overdue")) == ["INV-LATE"]
    assert len(_numbers(_page(signed_in, "/invoices?status=all"))) == 4


def test_kind_filter_and_labels(signed_in, svc, acme):
    f.make_invoice(svc, acme, "INV-A", kind="agreement", agreement="Managed services")
    f.make_invoice(svc, acme, "INV-P", kind="project", project="Office move", phase="Cabling")
    f.make_invoice(svc, acme, "INV-T", kind="time_and_materials")
    html = _page(signed_in, "/invoices?kind=project")
    assert _numbers(html) == ["INV-P"]
    assert "Office move · Cabling" in html and ">Project<" in html
    assert ">T&amp;M<" in _page(signed_in, "/invoices?kind=time_and_materials")
    assert len(_numbers(_page(signed_in, "/invoices?kind=bogus"))) == 3


def test_search_by_number_description_project_and_line_ticket(signed_in, svc, acme):
    f.make_invoice(svc, acme, "INV-1042", description="March agreement")
    f.make_invoice(svc, acme, "INV-2000", project="Server refresh")
    f.make_invoice(
        svc,
        acme,
        "INV-3000",
        lines=[{"description": "Printer fix", "ticket": "T-5521", "amount_minor": 10_000}],
    )
    assert _numbers(_page(signed_in, "/invoices?q=1042")) == ["INV-1042"]
    assert _numbers(_page(signed_in, "/invoices?q=march")) == ["INV-1042"]
    assert _numbers(_page(signed_in, "/invoices?q=refresh")) == ["INV-2000"]
    assert _numbers(_page(signed_in, "/invoices?q=T-5521")) == ["INV-3000"]
    assert _numbers(_page(signed_in, "/invoices?q=%25")) == []  # a LIKE wildcard is just a character


def test_sort_by_number_is_natural_and_reversible(signed_in, svc, acme):
    for number in ("INV-999", "INV-1000", "INV-10"):
        f.make_invoice(svc, acme, number)
    assert _numbers(_page(signed_in, "/invoices?sort=number")) == ["INV-10", "INV-999", "INV-1000"]
    assert _numbers(_page(signed_in, "/invoices?sort=number&dir=desc")) == ["INV-1000", "INV-999", "INV-10"]


def test_sort_by_balance_and_due(signed_in, svc, acme):
    f.make_invoice(svc, acme, "INV-A", total_minor=300, due_on="2026-03-30")
    f.make_invoice(svc, acme, "INV-B", total_minor=100, due_on="2026-03-31")
    f.make_invoice(svc, acme, "INV-C", total_minor=200, due_on="2026-03-29")
    assert _numbers(_page(signed_in, "/invoices?sort=balance")) == ["INV-B", "INV-C", "INV-A"]
    assert _numbers(_page(signed_in, "/invoices")) == ["INV-C", "INV-A", "INV-B"]


def test_paging_50_per_page_with_totals_of_the_whole_selection(signed_in, svc, acme):
    for n in range(60):
        f.make_invoice(svc, acme, f"INV-{n:03d}", total_minor=1_000)
    first = _page(signed_in, "/invoices?sort=number")
    assert len(_numbers(first)) == 50
    assert "60 invoices" in first and "Page 1 of 2" in first
    assert re.search(r'id="selection-balance-USD">\$600.00<', first)
    assert 'id="next-page"' in first
    second = _page(signed_in, "/invoices?sort=number&page=2")
    assert _numbers(second) == [f"INV-{n:03d}" for n in range(50, 60)]
    assert 'id="prev-page"' in second
    assert _numbers(_page(signed_in, "/invoices?sort=number&page=99")) == _numbers(second)
    assert len(_numbers(_page(signed_in, "/invoices?page=junk"))) == 50


def test_list_checkboxes_are_for_payable_invoices_only(signed_in, svc, acme):
    paid = f.make_invoice(svc, acme, "INV-PAID", total_minor=5_000)
    f.make_payment(svc, acme, [(paid, 5_000)])
    busy = f.make_invoice(svc, acme, "INV-BUSY", total_minor=5_000)
    f.make_payment(svc, acme, [(busy, 5_000)], status="processing")
    open_ = f.make_invoice(svc, acme, "INV-OPEN", total_minor=5_000)
    html = _page(signed_in, "/invoices?status=all")
    assert re.findall(r'name="invoice" value="([^"]+)"', html) == [open_.token]
    assert "Payment pending" in html and "Paid" in html


def test_due_today_and_overdue_follow_the_msp_time_zone(signed_in, svc, acme, clock):
    inv = f.make_invoice(svc, acme, "INV-1", due_on="2026-03-09")
    # 04:30 UTC on March 10 is still 23:30 on March 9 in Chicago: due today, not late.
    clock.set(datetime(2026, 3, 10, 4, 30, tzinfo=UTC))
    html = _page(signed_in, f"/invoices/{inv.token}")
    assert "Due today" in html and "Overdue" not in html
    assert 'id="overdue-USD"' in _page(signed_in, "/") and "Nothing overdue" in _page(signed_in, "/")
    # Half past midnight in Chicago: one day late.
    clock.set(datetime(2026, 3, 10, 5, 30, tzinfo=UTC))
    assert "Overdue 1 day<" in _page(signed_in, f"/invoices/{inv.token}")
    assert _numbers(_page(signed_in, "/invoices?status=overdue")) == ["INV-1"]


def test_invoice_page_shows_lines_sums_and_payments(signed_in, svc, acme):
    inv = f.make_invoice(
        svc,
        acme,
        "INV-77",
        total_minor=110_000,
        tax_minor=10_000,
        project="Office move",
        lines=[
            {
                "description": "Cabling",
                "amount_minor": 60_000,
                "ticket": "T-1",
                "phase": "Phase 2",
                "service": "Install",
            },
            {"description": "Agreement", "amount_minor": 40_000, "agreement": "Managed services"},
        ],
    )
    f.make_payment(svc, acme, [(inv, 30_000)])
    f.make_payment(svc, acme, [(inv, 5_000)], status="failed")
    html = _page(signed_in, f"/invoices/{inv.token}")
    assert re.search(r'id="invoice-balance">\$800.00<', html)
    assert re.search(r'id="invoice-subtotal">\$1,000.00<', html)
    assert re.search(r'id="invoice-tax">\$100.00<', html)
    assert re.search(r'id="invoice-total">\$1,100.00<', html)
    assert "Ticket: T-1 · Phase: Phase 2 · Service: Install" in html
    assert "Agreement: Managed services" in html
    payments = html.split('id="invoice-payments"')[1]
    assert "$300.00" in payments and "$50.00" not in payments  # failed attempts are not "applied"
    assert 'id="pay-amount"' in html and 'value="800.00"' in html
    assert "Partly paid" in html


def test_invoice_pay_form_has_no_amount_field_without_partial_payments(tmp_path, clock):
    from app.services import build_services
    from app.web import create_app
    from tests.web.conftest import sign_in, web_config

    svc = build_services(
        web_config(tmp_path, extra="[portal]\nallow_partial_payments = false\n"), clock=clock
    )
    acme = f.make_client(svc)
    f.make_person(svc, acme, "dana@acme.example")
    inv = f.make_invoice(svc, acme, "INV-1")
    client = create_app(svc).test_client()
    sign_in(client, "dana@acme.example")
    html = _page(client, f"/invoices/{inv.token}")
    assert 'id="pay-invoice-button"' in html and 'id="pay-amount"' not in html


def test_viewers_see_invoices_but_no_pay_controls(client, svc, acme):
    f.make_person(svc, acme, "viewer@acme.example", role="viewer")
    inv = f.make_invoice(svc, acme, "INV-1")
    from tests.web.conftest import sign_in

    sign_in(client, "viewer@acme.example")
    for url in ("/", "/invoices", f"/invoices/{inv.token}"):
        html = _page(client, url)
        assert "INV-1" in html
        assert 'name="invoice"' not in html and "pay-selected" not in html and "pay-all-due" not in html
    assert client.get(f"/pay?invoice={inv.token}").status_code == 403
