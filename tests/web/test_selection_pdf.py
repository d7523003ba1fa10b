"""PDFs of a selection: the ticked invoices of the list in one file, in list order, read back with
poppler's pdftotext; another company's id refuses the whole request; a limit with a message."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from app.web.documents import MAX_SELECTION
from tests.web import factories as f
from tests.web.conftest import sign_in
from tests.web.test_documents_and_people import pdf_text

NUMBER = re.compile(r"Invoice (INV-\d+)")


def _flashes(client) -> str:
    return client.get("/invoices?status=all").get_data(as_text=True)


def test_the_selection_pdf_holds_exactly_the_ticked_invoices_in_list_order(signed_in, svc, acme, tmp_path):
    a = f.make_invoice(svc, acme, "INV-8001", total_minor=1_000, due_on="2026-03-20")
    b = f.make_invoice(svc, acme, "INV-8002", total_minor=2_000, due_on="2026-03-25")
    f.make_invoice(svc, acme, "INV-8003", total_minor=3_000, due_on="2026-03-28")  # not ticked
    paid = f.make_invoice(svc, acme, "INV-8004", total_minor=4_000, due_on="2026-03-30")
    f.make_payment(svc, acme, [(paid, 4_000)])
    page = signed_in.get("/invoices?status=all&sort=due&dir=desc").get_data(as_text=True)
    # Every row can be ticked: the payable ones for paying too, the paid one only for the PDF.
    assert f'name="pdf" value="{paid.token}"' in page and f'name="invoice" value="{a.token}"' in page
    assert 'id="download-selected"' in page and 'formaction="/invoices/pdf"' in page

    # The order the list showed (due date, newest first), as the browser submits the form.
    query = urlencode([("pdf", paid.token), ("invoice", b.token), ("invoice", a.token)])
    response = signed_in.get(f"/invoices/pdf?{query}")

    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert 'filename="invoices-3-2026-03-10.pdf"' in response.headers["Content-Disposition"]
    text = pdf_text(response.data, tmp_path)
    assert NUMBER.findall(text) == ["INV-8004", "INV-8002", "INV-8001"]
    assert "INV-8003" not in text
    assert text.count("Page 1 of 1") == 3  # each invoice keeps its own page numbers
    assert "$20.00" in text and "$40.00" in text


def test_one_invoice_of_another_company_refuses_the_whole_selection(signed_in, svc, acme, globex, tmp_path):
    mine = f.make_invoice(svc, acme, "INV-8101")
    theirs = f.make_invoice(svc, globex, "INV-9101")
    response = signed_in.get(
        f"/invoices/pdf?{urlencode([('invoice', mine.token), ('invoice', theirs.token)])}"
    )
    assert response.status_code == 404
    assert b"INV-9101" not in response.data and b"%PDF" not in response.data
    assert signed_in.get(f"/invoices/pdf?pdf={theirs.token}").status_code == 404
    assert signed_in.get("/invoices/pdf?pdf=no-such-token").status_code == 404


def test_too_many_or_none_ticked_is_explained_on_the_list(signed_in, svc, acme):
    tokens = [
        f.make_invoice(svc, acme, f"INV-{8200 + n}", total_minor=100).token for n in range(MAX_SELECTION + 1)
    ]
    response = signed_in.get(f"/invoices/pdf?{urlencode([('invoice', t) for t in tokens])}")
    assert response.status_code == 302 and response.headers["Location"].endswith("/invoices")
    assert (
        f"You ticked {MAX_SELECTION + 1} invoices; one download holds at most {MAX_SELECTION}."
        in _flashes(signed_in)
    )
    assert signed_in.get("/invoices/pdf").status_code == 302
    assert "Tick at least one invoice to download." in _flashes(signed_in)
    # The list's filters ride along with the selection, and the way back keeps them.
    kept = signed_in.get("/invoices/pdf?status=all&q=INV-82&sort=number&dir=desc")
    assert kept.headers["Location"] == "/invoices?status=all&q=INV-82&sort=number&dir=desc"
    exactly = signed_in.get(f"/invoices/pdf?{urlencode([('invoice', t) for t in tokens[:MAX_SELECTION]])}")
    assert exactly.status_code == 200 and exactly.data.startswith(b"%PDF-")


def test_a_viewer_downloads_a_selection_without_any_pay_control(client, svc, acme, tmp_path):
    f.make_person(svc, acme, "viewer@acme.example", role="viewer")
    inv = f.make_invoice(svc, acme, "INV-8301")
    sign_in(client, "viewer@acme.example")
    page = client.get("/invoices").get_data(as_text=True)
    assert f'name="pdf" value="{inv.token}"' in page and 'id="pay-selected"' not in page
    assert 'aria-label="Select invoice INV-8301"' in page
    response = client.get(f"/invoices/pdf?pdf={inv.token}")
    assert 'filename="invoice-INV-8301.pdf"' in response.headers["Content-Disposition"]
    assert NUMBER.findall(pdf_text(response.data, tmp_path)) == ["INV-8301"]
