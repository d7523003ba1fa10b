"""Every PDF is printed on `portal.paper_size` paper (US letter unless set to A4), read back with
poppler's pdfinfo; and the billing address in an invoice PDF is never split over two lines."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from datetime import date

import pytest

from app.services import build_services
from app.web import create_app
from tests.web import factories as f
from tests.web.conftest import sign_in, web_config
from tests.web.test_documents_and_people import pdf_text

# pdfinfo's "Page size" line for each paper.
PAGE = {"letter": "612 x 792 pts (letter)", "a4": "595.276 x 841.89 pts (A4)"}
LONG_EMAIL = "accounts-receivable@northwind-managed-it-services.example"


def _page_sizes(data: bytes, tmp_path) -> set[str]:
    path = tmp_path / "paper.pdf"
    path.write_bytes(data)
    command = ["pdfinfo", "-l", "99", str(path)]
    info = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"Page +\d+ size: +(.+)", info))


@pytest.mark.parametrize(("setting", "paper"), [("", "letter"), ('paper_size = "a4"', "a4")])
def test_every_pdf_is_printed_on_the_configured_paper(tmp_path, clock, setting, paper):
    cfg = web_config(tmp_path, extra=f"\n[portal]\n{setting}\n")
    svc = build_services(cfg, clock=clock)
    acme = f.make_client(svc, "Acme Dental LLC")
    f.make_person(svc, acme, "dana@acme.example")
    inv = f.make_invoice(svc, acme, "INV-9001", issued_on="2026-02-02", due_on="2026-03-04")
    second = f.make_invoice(svc, acme, "INV-9002", issued_on="2026-02-03", due_on="2026-03-05")
    pay = f.make_payment(svc, acme, [(inv, 4_000)])
    client = create_app(svc).test_client()
    sign_in(client, "dana@acme.example")

    documents = {
        "invoice": client.get(f"/invoices/{inv.token}/pdf"),
        "selection": client.get(f"/invoices/pdf?invoice={inv.token}&invoice={second.token}"),
        "receipt": client.get(f"/payments/{pay.token}/receipt"),
        "statement": client.get("/statements/2026-03/pdf"),
    }

    assert {name: r.status_code for name, r in documents.items()} == dict.fromkeys(documents, 200)
    sizes = {name: _page_sizes(r.data, tmp_path) for name, r in documents.items()}
    assert sizes == {name: {PAGE[paper]} for name in documents}


def test_a_long_billing_address_stays_whole_in_the_invoice_pdf(tmp_path, clock):
    cfg = web_config(tmp_path)
    cfg = dataclasses.replace(cfg, branding=dataclasses.replace(cfg.branding, support_email=LONG_EMAIL))
    svc = build_services(cfg, clock=clock)
    acme = f.make_client(svc, "Acme Dental LLC")
    f.make_person(svc, acme, "dana@acme.example")
    inv = f.make_invoice(svc, acme, "INV-9101", due_on=date(2026, 3, 31).isoformat())
    client = create_app(svc).test_client()
    sign_in(client, "dana@acme.example")

    text = pdf_text(client.get(f"/invoices/{inv.token}/pdf").data, tmp_path)

    # Once in the header and once in "Pay online at ..., or contact ...", each on one line.
    assert text.count(LONG_EMAIL) == 2, text
