"""Hostile PSA records, through the real poll: the ConnectWise fake (vendor shapes, spec-checked
requests) and the files connector on a real folder. A bad record is quarantined with a specific
reason or imported correctly; the rest of the page is imported; the poll never crashes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from app.core import logins
from app.core.emails import render
from app.jobs import drain_outbox, poll_psa
from app.services import build_services
from app.web import create_app
from tests.cw_world import company, contact, contoso, cw_config, invoice, invoice_numbers, open_quarantine
from tests.web.conftest import post

PASSWORD = "correct horse battery"


GOOD = {"INV-1042", "INV-1043", "INV-1044", "INV-2001"}


# ---- amounts ----------------------------------------------------------------------------------


def test_invoices_with_unreadable_totals_are_quarantined_and_the_rest_of_the_page_imports(cw, cw_services):
    world = contoso(cw)
    c = world["company"]
    bad = {
        9301: "abc",  # a string that is no number
        9302: float("nan"),  # JSON NaN (the fake writes it as the NaN literal CW's JSON library emits)
        9303: float("inf"),  # Infinity; 1e400 in JSON parses to the same float
        9305: "-Infinity",
        9306: "12.345",  # more decimals than USD has
        9307: True,  # a boolean
        9308: {"amount": 5},  # an object
    }
    for iid, total in bad.items():
        rec = invoice(cw, iid, f"INV-X{iid}", c, kind="agreement", total="10.00")
        rec["total"] = total

    report = poll_psa.run(cw_services)

    assert report.error is None
    assert invoice_numbers(cw_services) == GOOD
    reasons = open_quarantine(cw_services)
    assert set(reasons) == {str(i) for i in bad}
    for iid in bad:
        assert "total" in reasons[str(iid)], (iid, reasons[str(iid)])
    assert cw.violations == []


@pytest.mark.parametrize("total", [1e20, "1e400", 10**30], ids=["float 1e20", "string 1e400", "int 10^30"])
def test_an_absurdly_large_total_is_quarantined_and_does_not_crash_the_poll(cw, cw_services, total):
    world = contoso(cw)
    c = world["company"]
    # All are finite decimals whose minor units exceed SQLite's 64-bit INTEGER.
    huge = invoice(cw, 9311, "INV-HUGE", c, kind="agreement", total="10.00")
    huge.update(total=total, subtotal=total, agreementAmount=total, balance=total)

    try:
        report = poll_psa.run(cw_services)
    except Exception as exc:
        pytest.fail(f"the poll crashed on one record: {type(exc).__name__}: {exc}")

    assert report.error is None
    assert invoice_numbers(cw_services) == GOOD
    assert "9311" in open_quarantine(cw_services)


def test_a_negative_invoice_that_is_not_a_credit_memo_is_quarantined_or_shown_as_a_credit(cw, cw_services):
    world = contoso(cw)
    neg = invoice(cw, 9321, "INV-NEG", world["company"], kind="agreement", total="10.00")
    neg.update(
        total=-250.0, subtotal=-250.0, agreementAmount=-250.0, balance=-250.0
    )  # type stays "Agreement"

    report = poll_psa.run(cw_services)

    assert report.error is None
    assert invoice_numbers(cw_services) >= GOOD
    row = cw_services.store.one("SELECT kind, status FROM invoices WHERE number = 'INV-NEG'")
    reasons = open_quarantine(cw_services)
    # Imported as an ordinary open invoice, its negative balance makes the portal call it "Paid".
    assert ("9321" in reasons and "negative" in reasons["9321"].lower()) or (
        row is not None and row["kind"] == "credit_memo"
    ), (dict(row) if row else None, reasons)


def test_a_second_invoice_with_the_same_number_and_another_id_is_quarantined(cw, cw_services):
    world = contoso(cw)
    # INV-1042 already exists with id 9001; this is a different record carrying the same number.
    invoice(cw, 9331, "INV-1042", world["company"], kind="agreement", total="77.00")

    report = poll_psa.run(cw_services)

    assert report.error is None
    count = cw_services.store.scalar("SELECT COUNT(*) FROM invoices WHERE number = 'INV-1042'")
    reasons = open_quarantine(cw_services)
    # Receipts, the journal's AR lines and the portal's search all name invoices by number only.
    assert count == 1 and "9331" in reasons and "INV-1042" in reasons["9331"], (count, reasons)


# ---- contacts and their email addresses ---------------------------------------------------------


def test_a_contact_without_an_email_is_imported_and_not_invited(cw, cw_services):
    world = contoso(cw)
    rec = contact(cw, 2599, world["company"], "No", "Email", "unused@example", billing=True)
    rec["communicationItems"] = []

    report = poll_psa.run(cw_services)

    assert report.error is None
    row = cw_services.store.one("SELECT email, role FROM contacts WHERE remote_id = '2599'")
    assert row is not None and row["email"] is None and row["role"] == "billing"
    invited = [
        json.loads(r[0])["to"]
        for r in cw_services.store.all("SELECT payload_json FROM outbox WHERE kind = 'email'")
    ]
    assert all(to and all(addr for addr in to) for to in invited), invited


def _invite_link(services, address_fragment: str) -> str:
    for r in services.store.all("SELECT payload_json FROM outbox WHERE kind = 'email'"):
        payload = json.loads(r[0])
        if payload["template"] == "invitation" and any(address_fragment in a for a in payload["to"]):
            return payload["context"]["link"]
    raise AssertionError(f"no invitation to {address_fragment}")


def test_a_billing_contact_whose_psa_email_has_capitals_and_spaces_can_accept_the_invitation(cw, cw_services):
    c = company(cw, 270, "Capital Letters Ltd", "CapLtd")
    contact(cw, 2701, c, "Pat", "Upper", "  Pat.Upper@Capital.Example  ", billing=True)
    invoice(cw, 9341, "INV-CAP1", c, kind="agreement", total="100.00")
    poll_psa.run(cw_services)

    link = _invite_link(cw_services, "Capital.Example")
    client = create_app(cw_services).test_client()
    path = "/" + link.split("/", 3)[3]
    assert client.get(path).status_code == 200
    response = post(client, path, {"password": PASSWORD, "password_confirm": PASSWORD})
    # The invitation token and the login are stored lower-case; the contact row keeps the PSA's case.
    assert response.status_code == 302, response.get_data(as_text=True)[:1500]
    home = client.get("/invoices").get_data(as_text=True)
    assert "INV-CAP1" in home


def test_a_person_typing_their_address_in_lower_case_reaches_a_contact_stored_with_capitals(cw, cw_services):
    c = company(cw, 271, "Mixed Case Inc", "MixedCase")
    contact(cw, 2711, c, "Lee", "Mixed", "Lee.Mixed@Example.COM", billing=True)
    invoice(cw, 9342, "INV-MIX1", c, kind="agreement", total="100.00")
    poll_psa.run(cw_services)
    with cw_services.store.write() as db:
        logins.set_password(db, cw_services.clock, "lee.mixed@example.com", PASSWORD)

    client = create_app(cw_services).test_client()
    response = post(client, "/login", {"email": "lee.mixed@example.com", "password": PASSWORD})

    assert response.status_code == 302, re.sub(r"\s+", " ", response.get_data(as_text=True))[:800]


def test_a_psa_email_with_a_space_inside_is_never_sent_an_invitation(cw, cw_services):
    c = company(cw, 272, "Typo Corp", "Typo")
    contact(cw, 2721, c, "Sam", "Typo", "sam @typo.example", billing=True)
    invoice(cw, 9343, "INV-TYPO", c, kind="agreement", total="100.00")

    report = poll_psa.run(cw_services)

    assert report.error is None and "INV-TYPO" in invoice_numbers(cw_services)
    sent_to = [
        a
        for p in (
            json.loads(r[0])
            for r in cw_services.store.all("SELECT payload_json FROM outbox WHERE kind = 'email'")
        )
        for a in p["to"]
    ]
    assert not any(" " in a for a in sent_to), sent_to


def test_a_psa_email_holding_two_addresses_never_sends_the_invitation_link_to_both(
    cw, tmp_path, frozen_clock, mail
):
    services = build_services(cw_config(tmp_path, cw, smtp_port=mail.port), clock=frozen_clock)
    c = company(cw, 273, "Two Address LLC", "TwoAddr")
    contact(cw, 2731, c, "Ana", "Two", "ap@twoaddr.example, outsider@elsewhere.example", billing=True)
    invoice(cw, 9344, "INV-TWO", c, kind="agreement", total="100.00")

    poll_psa.run(services)
    drain_outbox.run(services)

    # Whoever holds the invitation link sets the password of the login that reaches this company.
    delivered = [m for m in mail.messages if "outsider@elsewhere.example" in (m["To"] or "")]
    assert delivered == [], [m["To"] for m in delivered]


# ---- names that are markup, bidi text, and very long -------------------------------------------


SCRIPT = "<script>alert('xss')</script>"
IMG = '<img src=x onerror="alert(1)">'


def test_company_and_invoice_text_with_html_is_shown_escaped_in_the_portal_and_emails(cw, cw_services):
    c = company(cw, 280, f"Evil {SCRIPT} Co", "Evil")
    contact(cw, 2801, c, f"Mal{IMG}", "Lory", "mal@evil.example", billing=True)
    rec = invoice(
        cw, 9351, "INV-<b>1</b>", c, kind="time_and_materials", total="10.00", reference=f"ref {IMG}"
    )
    rec["ticket"] = {"id": 1, "summary": SCRIPT}
    rec["agreement"] = {"id": 5, "name": f"Plan {IMG}"}
    poll_psa.run(cw_services)
    with cw_services.store.write() as db:
        logins.set_password(db, cw_services.clock, "mal@evil.example", PASSWORD)
    client = create_app(cw_services).test_client()
    assert post(client, "/login", {"email": "mal@evil.example", "password": PASSWORD}).status_code == 302
    token = cw_services.store.scalar("SELECT token FROM invoices WHERE remote_id = '9351'")

    pages = {
        path: client.get(path)
        for path in ("/", "/invoices?status=all", f"/invoices/{token}", f"/pay?invoice={token}", "/payments")
    }

    for path, response in pages.items():
        html = response.get_data(as_text=True)
        assert response.status_code == 200, path
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>1</b>" not in html, path
    assert "&lt;script&gt;" in pages["/"].get_data(as_text=True)
    invitation = next(
        json.loads(r[0])
        for r in cw_services.store.all("SELECT payload_json FROM outbox WHERE kind = 'email'")
        if "mal@evil" in r[0]
    )
    rendered = render(
        "invitation",
        invitation["context"],
        branding=cw_services.config.branding,
        base_url=cw_services.config.cashloop.base_url,
    )
    assert "<script>alert" not in rendered.html and "<img src=x" not in rendered.html
    assert "\n" not in rendered.subject


def test_right_to_left_text_and_emoji_are_kept_exactly(cw, cw_services):
    name = "מרפאת שיניים \u202e🦷 Zoë & Søn\u202c 株式会社"
    c = company(cw, 281, name, "Bidi")
    contact(cw, 2811, c, "נועה", "🦄", "noa@bidi.example", billing=True)
    invoice(cw, 9352, "INV-שלום-1", c, kind="agreement", total="10.00", reference="תיקון 🖨️")

    report = poll_psa.run(cw_services)

    assert report.error is None
    assert cw_services.store.scalar("SELECT name FROM clients WHERE remote_id = '281'") == name
    assert cw_services.store.scalar("SELECT description FROM invoices WHERE remote_id = '9352'") == "תיקון 🖨️"
    with cw_services.store.write() as db:
        logins.set_password(db, cw_services.clock, "noa@bidi.example", PASSWORD)
    client = create_app(cw_services).test_client()
    assert post(client, "/login", {"email": "noa@bidi.example", "password": PASSWORD}).status_code == 302
    html = client.get("/invoices").get_data(as_text=True)
    assert "INV-שלום-1" in html


def test_extremely_long_strings_are_imported_or_quarantined_and_the_portal_still_renders(cw, cw_services):
    long = "Ω" * 200_000
    c = company(cw, 282, "Long " + long, "Long")
    contact(cw, 2821, c, long, long, "long@long.example", billing=True)
    invoice(cw, 9353, "INV-LONG", c, kind="agreement", total="10.00", reference=long)
    invoice(cw, 9354, "N" * 100_000, c, kind="agreement", total="10.00")

    report = poll_psa.run(cw_services)

    assert report.error is None
    assert "INV-LONG" in invoice_numbers(cw_services) or "9353" in open_quarantine(cw_services)
    with cw_services.store.write() as db:
        logins.set_password(db, cw_services.clock, "long@long.example", PASSWORD)
    client = create_app(cw_services).test_client()
    assert post(client, "/login", {"email": "long@long.example", "password": PASSWORD}).status_code == 302
    assert client.get("/invoices?status=all").status_code == 200


# ---- cursors ------------------------------------------------------------------------------------


def test_one_record_stamped_in_the_far_future_does_not_hide_later_edits_of_other_records(cw, cw_services):
    world = contoso(cw)
    stray = invoice(cw, 9361, "INV-FUTURE", world["company"], kind="agreement", total="10.00")
    stray["_info"]["lastUpdated"] = "2099-01-01T00:00:00Z"  # a bad clock or a typo at the PSA
    poll_psa.run(cw_services)
    assert cw_services.store.scalar("SELECT total_minor FROM invoices WHERE number = 'INV-1042'") == 125000

    cw.touch(
        world["invoices"][0],
        when=datetime.now(UTC) + timedelta(minutes=5),
        total=1300.0,
        subtotal=1300.0,
        agreementAmount=1300.0,
        balance=1300.0,
    )
    poll_psa.run(cw_services)

    cursor = cw_services.store.scalar(
        "SELECT cursor FROM sync_state WHERE connector = 'connectwise' AND object = 'invoices'"
    )
    assert cw_services.store.scalar("SELECT total_minor FROM invoices WHERE number = 'INV-1042'") == 130000, (
        f"the edit was never read; the stored cursor is {cursor}"
    )


# ---- the files connector ------------------------------------------------------------------------

CSV_HEADER = (
    "invoice_number,company_id,company_name,invoice_date,due_date,currency,line_description,"
    "quantity,unit_price,line_amount,tax,amount_paid"
)


def _files(services):
    from pathlib import Path

    return Path(services.config.psa.files.path)


def _company_json(cid: int, name: str) -> dict:
    return {
        "id": cid,
        "name": name,
        "identifier": f"C{cid}",
        "_info": {"lastUpdated": "2026-03-01T00:00:00Z"},
    }


def _invoice_json(iid: int, number: str, cid: int, total: float) -> dict:
    return {
        "id": iid,
        "invoiceNumber": number,
        "company": {"id": cid},
        "date": "2026-03-01",
        "dueDate": "2026-03-31",
        "total": total,
        "subtotal": total,
        "salesTax": 0.0,
        "agreementAmount": total,
        "status": {"name": "Sent"},
        "_info": {"lastUpdated": "2026-03-01T00:00:00Z"},
    }


def test_a_json_export_truncated_mid_array_stops_that_poll_with_an_error_and_is_read_once_complete(services):
    folder = _files(services)
    (folder / "companies.json").write_text(json.dumps([_company_json(1, "Truncated Ltd")]), encoding="utf-8")
    full = json.dumps([_invoice_json(10 + n, f"INV-T{n}", 1, 100.0) for n in range(5)])
    (folder / "invoices.json").write_text(full[: len(full) * 2 // 3], encoding="utf-8")

    report = poll_psa.run(services)

    assert report.error and "invoices.json" in report.error and "truncated" in report.error, report.error
    assert services.store.scalar("SELECT COUNT(*) FROM clients") == 1
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 0  # never half a file
    (folder / "invoices.json").write_text(full, encoding="utf-8")
    report = poll_psa.run(services)
    assert report.error is None
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 5


def test_a_csv_with_a_bom_and_crlf_line_endings_imports_exactly(services):
    rows = [
        CSV_HEADER,
        "INV-C1,501,Café Crème SARL,2026-03-01,2026-03-31,EUR,Managed services,1,40.00,40.00,5.00,",
        "INV-C1,,,,,,Onsite visit,2,2.50,5.00,,",
        '"INV-C2",501,,2026-03-02,2026-04-01,EUR,"Toner, black",1,,12.34,0,',
    ]
    (_files(services) / "invoices.csv").write_bytes("\ufeff".encode() + "\r\n".join(rows).encode() + b"\r\n")

    report = poll_psa.run(services)

    assert report.error is None
    got = {
        r["number"]: (r["total_minor"], r["currency"])
        for r in services.store.all("SELECT number, total_minor, currency FROM invoices")
    }
    assert got == {"INV-C1": (5000, "EUR"), "INV-C2": (1234, "EUR")}
    assert services.store.scalar("SELECT name FROM clients") == "Café Crème SARL"
    lines = [r[0] for r in services.store.all("SELECT description FROM invoice_lines ORDER BY id")]
    assert lines == ["Managed services", "Onsite visit", "Toner, black"]  # no stray \r
    assert open_quarantine(services) == {}


def test_a_semicolon_separated_csv_stops_the_poll_with_an_error_naming_the_file(services):
    rows = [
        CSV_HEADER.replace(",", ";"),
        "INV-S1;601;Semi Colon AG;2026-03-01;2026-03-31;EUR;Work;1;;10,00;0;",
    ]
    (_files(services) / "invoices.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    report = poll_psa.run(services)

    assert report.error and "invoices.csv" in report.error and "missing column" in report.error, report.error
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 0


def test_an_amount_with_a_thousands_separator_rejects_only_its_invoice(services):
    rows = [
        CSV_HEADER,
        'INV-K1,701,Comma Corp,2026-03-01,2026-03-31,USD,Big job,1,,"1,000.00",0,',
        "INV-K2,701,,2026-03-01,2026-03-31,USD,Small job,1,,10.00,0,",
    ]
    (_files(services) / "invoices.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    report = poll_psa.run(services)

    assert report.error is None
    assert invoice_numbers(services) == {"INV-K2"}
    reasons = open_quarantine(services)
    assert "row 2" in reasons["INV-K1"] and "1,000.00" in reasons["INV-K1"], reasons


@pytest.mark.parametrize("name", ["invoices.csv", "invoices.json"])
def test_an_export_saved_in_a_windows_code_page_is_reported_not_a_crash(services, name):
    if name.endswith(".csv"):
        text = CSV_HEADER + "\nINV-W1,801,Café Zürich GmbH,2026-03-01,2026-03-31,CHF,Wartung,1,,10.00,0,\n"
    else:
        text = json.dumps([_company_json(801, "Café Zürich GmbH")], ensure_ascii=False)
        name = "companies.json"
    (_files(services) / name).write_bytes(text.encode("cp1252"))  # what Excel on Windows writes

    try:
        report = poll_psa.run(services)
    except Exception as exc:
        pytest.fail(f"the poll crashed: {type(exc).__name__}: {exc}")

    assert report.error and name in report.error and "UTF-8" in report.error, report.error


def test_a_csv_cell_longer_than_the_csv_module_allows_is_reported_not_a_crash(services):
    rows = [
        CSV_HEADER,
        "INV-L1,901,Long Cell Ltd,2026-03-01,2026-03-31,USD," + "x" * 200_000 + ",1,,10.00,0,",
        "INV-L2,901,,2026-03-01,2026-03-31,USD,Normal line,1,,10.00,0,",
    ]
    (_files(services) / "invoices.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    try:
        report = poll_psa.run(services)
    except Exception as exc:
        pytest.fail(f"the poll crashed: {type(exc).__name__}: {exc}")

    assert report.error is None or "invoices.csv" in report.error
