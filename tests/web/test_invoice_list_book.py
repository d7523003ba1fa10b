"""The invoice list computed from the client's book (its invoices and lines read once per change):
a search never matches across two fields, case is ignored, lines' text counts; new data shows at
once; another client's invoices never appear."""

from __future__ import annotations

import re

from tests.web import factories as f


def _numbers(client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, url
    return re.findall(r'<a href="/invoices/[^"]+">([^<]+)</a>', response.get_data(as_text=True))


def test_search_and_line_filters_over_the_book(signed_in, svc, acme):
    f.make_invoice(svc, acme, "INV-1", description="Printer", lines=[
        {"description": "Toner", "service": "Hardware", "amount_minor": 10_000}])
    f.make_invoice(svc, acme, "INV-2", project="Office move", lines=[
        {"description": "Cabling 50_%", "project": "Wi-Fi upgrade", "amount_minor": 10_000}])
    other = f.make_client(svc, "Other Co")
    f.make_invoice(svc, other, "INV-9", description="Printer")
    assert _numbers(signed_in, "/invoices?status=all&q=PRINTER") == ["INV-1"]
    assert _numbers(signed_in, "/invoices?status=all&q=toner") == ["INV-1"]  # a line's description
    assert _numbers(signed_in, "/invoices?status=all&q=PrinterToner") == []  # never across fields
    assert _numbers(signed_in, "/invoices?status=all&q=50_%25") == ["INV-2"]  # literal _ and %
    assert _numbers(signed_in, "/invoices?status=all&q=5_") == []
    assert _numbers(signed_in, "/invoices?status=all&service=Hardware") == ["INV-1"]
    assert _numbers(signed_in, "/invoices?status=all&project=Wi-Fi+upgrade") == ["INV-2"]  # on a line
    assert _numbers(signed_in, "/invoices?status=all&project=Office+move") == ["INV-2"]  # on the invoice
    assert _numbers(signed_in, "/invoices?status=all&project=Office") == []  # a filter is exact
    # A new invoice and a change to one are in the very next page (the book is read again).
    f.make_invoice(svc, acme, "INV-3", description="Printer drum")
    assert _numbers(signed_in, "/invoices?status=all&q=printer&sort=number") == ["INV-1", "INV-3"]
    with svc.store.write() as db:
        db.execute("UPDATE invoices SET description = 'Scanner' WHERE number = 'INV-1'")
    assert _numbers(signed_in, "/invoices?status=all&q=printer&sort=number") == ["INV-3"]
