"""What people read on the portal and admin pages: one way of naming a card, plain words for
payment statuses and outbox effects, a selection PDF titled after all its invoices, the autopay
settings that read right whether autopay is on or off, and statement tables that become cards on
a phone (the layout itself is checked in Chromium in tests/e2e/test_portal_pages.py)."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, date, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from app.core import outbox
from app.core.clock import FrozenClock
from app.core.method_names import method_name
from app.web import create_app
from tests.autopay_world import enable, engine_services, saved_card
from tests.factories import make_client, make_invoice
from tests.web import factories as f
from tests.web.admin.helpers import make_admin
from tests.web.admin.helpers import sign_in as admin_sign_in
from tests.web.conftest import post, sign_in
from tests.web.factories import make_login

CHICAGO = ZoneInfo("America/Chicago")


def _pdf_title(data: bytes, tmp_path) -> str:
    path = tmp_path / "selection.pdf"
    path.write_bytes(data)
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    return re.search(r"^Title:\s*(.*)$", info, re.M).group(1).strip()


def test_a_card_and_a_bank_account_are_named_the_same_way_everywhere():
    assert method_name("card", brand="visa", last4="4242") == "Visa •••• 4242"
    assert method_name("card", brand="amex", last4="0005") == "American Express •••• 0005"
    assert (
        method_name("ach", bank_name="STRIPE TEST BANK", last4="6789") == "STRIPE TEST BANK •••• 6789 (ACH)"
    )
    assert method_name("card") == "Card" and method_name("check") == "Cheque"


@pytest.fixture
def autopay_world(tmp_path, stripe_double, mail):
    clock = FrozenClock(datetime(2026, 3, 10, 10, 0, tzinfo=CHICAGO).astimezone(UTC))
    s = engine_services(tmp_path, clock, stripe_double, mail)
    client_id = make_client(s, "acme", "Acme Dental LLC", billing_email="ap@acme.example")
    enable(s, client_id, saved_card(s, stripe_double, client_id))
    skipped = make_invoice(
        s, "INV-7101", client_remote_id="acme", total_minor=40_000, due_on=date(2026, 3, 12)
    )
    make_invoice(s, "INV-7102", client_remote_id="acme", total_minor=15_000, due_on=date(2026, 3, 12))
    make_login(s, "ap@acme.example")
    web = create_app(s).test_client()
    sign_in(web, "ap@acme.example")
    token = str(s.store.scalar("SELECT token FROM invoices WHERE id = ?", (skipped,)))
    return s, web, token


def _upcoming_rows(page: str) -> dict[str, str]:
    table = page.split('id="upcoming-charges"')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    return {re.search(r'data-label="Invoices">([^<]*)<', r).group(1): r for r in rows}


def test_after_a_skip_the_autopay_page_shows_no_empty_skip_cell_and_names_the_card_like_elsewhere(
    autopay_world,
):
    _s, web, token = autopay_world
    page = web.get("/autopay").text
    assert "Visa •••• 4242" in page and " ending " not in page
    assert all('id="skip-' in row for row in _upcoming_rows(page).values())

    response = post(web, "/autopay/skip", {"invoice": token, "back": "autopay"})
    assert response.status_code == 302
    page = web.get("/autopay").text
    assert "You can undo this until the charge is due." in page and "was due" not in page
    rows = _upcoming_rows(page)
    assert set(rows) == {"INV-7101", "INV-7102"}
    # The charge after the skip has nothing left to skip: its cell is empty, so a phone hides it.
    assert '<td data-label="Skip"></td>' in rows["INV-7101"]
    assert 'id="skip-INV-7102"' in rows["INV-7102"]


def test_the_autopay_settings_read_right_when_autopay_is_off_and_the_days_follow_the_schedule(signed_in):
    page = signed_in.get("/autopay").text
    assert '<label for="autopay-enabled">Turn autopay on</label>' in page and "Autopay is on" not in page
    assert 'id="autopay-enabled" value="on" checked' not in page  # off, and the label still reads right
    assert 'class="schedule-days hide-on-due-date" id="schedule-days-field"' in page
    # A bad number of days stays in view with its error, whichever schedule is chosen.
    bad = post(signed_in, "/autopay", {"enabled": "on", "schedule": "due_date", "schedule_days": "400"})
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    assert 'class="schedule-days" id="schedule-days-field"' in html and "Enter 0 to 365 days." in html


def test_the_selection_pdf_is_titled_after_all_its_invoices(signed_in, svc, acme, tmp_path):
    refs = [f.make_invoice(svc, acme, f"INV-{8400 + n}", total_minor=1_000) for n in range(6)]

    def title(chosen) -> str:
        response = signed_in.get(f"/invoices/pdf?{urlencode([('invoice', r.token) for r in chosen])}")
        assert response.status_code == 200
        return _pdf_title(response.data, tmp_path)

    assert title(refs[:1]) == "Invoice INV-8400"
    assert title([refs[2], refs[0], refs[1]]) == "Invoices INV-8402, INV-8400, INV-8401"
    assert title(refs) == "6 invoices"


def test_statement_tables_carry_a_label_on_every_cell_for_the_phone_layout(signed_in, svc, acme):
    f.make_invoice(svc, acme, "INV-FEB", total_minor=20_000, issued_on="2026-02-03", due_on="2026-02-05")
    page = signed_in.get("/statements/2026-02").get_data(as_text=True)
    for table in ("statement-aging", "statement-issued", "statement-open"):
        html = page.split(f'id="{table}"')[1].split("</table>")[0]
        assert page.split(f'id="{table}"')[0].endswith('<table class="responsive" ')
        cells = re.findall(r"<td\b[^>]*>", html)
        assert cells and all("data-label=" in c for c in cells), table
    assert '<td data-label="Number" class="nowrap">INV-FEB</td>' in page


def test_the_admin_shows_payment_statuses_and_effects_in_words(svc, acme, clock):
    inv = f.make_invoice(svc, acme, "INV-9501", total_minor=12_000)
    pay = f.make_payment(svc, acme, [(inv, 12_000)])
    alloc = svc.store.scalar("SELECT id FROM allocations WHERE payment_id = ?", (pay.id,))
    with svc.store.write() as db:
        outbox.enqueue(db, clock, kind="journal_payment", key=f"j-{pay.id}", payload={"payment_id": pay.id})
        outbox.enqueue(db, clock, kind="psa_payment", key=f"p-{alloc}", payload={"allocation_id": alloc})
        db.execute("UPDATE outbox SET status = 'done' WHERE kind = 'journal_payment'")
        db.execute("UPDATE outbox SET status = 'dead', last_error = 'refused' WHERE kind = 'psa_payment'")
        # The card as the processor named it once the payment was confirmed.
        db.execute(
            "INSERT INTO payment_method_labels (payment_id, type, brand, last4, recorded_at) "
            "VALUES (?, 'card', 'visa', '4242', '2026-03-10T15:00:00Z')",
            (pay.id,),
        )
    admin = admin_sign_in(create_app(svc).test_client(), make_admin(svc, "fin@msp.example", "finance"), clock)

    listing = admin.get("/admin/payments").get_data(as_text=True)
    select = listing.split('id="status"')[1].split("</select>")[0]
    options = dict(re.findall(r'<option value="([a-z_]+)"[^>]*>([^<]+)</option>', select))
    assert options["succeeded"] == "Succeeded" and options["requires_action"] == "Needs authentication"
    assert options["submitted"] == "Submitted"

    assert '<td data-label="Method">Visa •••• 4242</td>' in listing.split(f'id="payment-{pay.id}"')[1]

    page = admin.get(f"/admin/payments/{pay.id}").get_data(as_text=True)
    assert '<dd id="payment-method">Visa •••• 4242</dd>' in page  # as the client's receipt names it
    assert '<table class="responsive" id="payment-allocations">' in page
    assert '<table class="responsive" id="payment-effects">' in page
    effects = page.split('id="payment-effects"')[1].split("</table>")[0]
    assert re.search(
        r'class="effect-journal_payment"><td data-label="What">Booked in accounting</td>'
        r'<td data-label="Status">Delivered</td>', effects
    )
    assert re.search(
        r'class="effect-psa_payment"><td data-label="What">Written back to the PSA: invoice INV-9501</td>'
        r'<td data-label="Status">Failed</td>', effects
    )
    assert ">done<" not in effects and ">psa_payment<" not in effects


def test_a_person_card_with_nothing_to_do_shows_no_bare_actions_line(signed_in):
    page = signed_in.get("/people").get_data(as_text=True)
    me = page.split('<td data-label="Name">Dana')[1].split("</tr>")[0]
    # Empty, so the phone layout (td:empty) hides the label; the address may break, the label not.
    assert '<td data-label="Actions" class="actions-cell"></td>' in me
    assert '<td data-label="Email" class="break">dana@acme.example</td>' in me


@pytest.mark.parametrize(
    ("status", "head", "note"),
    [
        ("succeeded", "Applied", None),
        ("canceled", "Not applied", "This payment was canceled: nothing was applied to these invoices."),
        ("failed", "Not applied", "This payment failed: nothing was applied to these invoices."),
        ("processing", "Held", "In progress: these amounts are held on the invoices"),
        ("pending", "To apply", "Not completed: nothing is applied or held until the payer finishes."),
    ],
)
def test_a_payment_page_says_whether_its_allocations_were_applied(svc, acme, clock, status, head, note):
    inv = f.make_invoice(svc, acme, "INV-9502", total_minor=11_625)
    pay = f.make_payment(svc, acme, [(inv, 11_625)], status=status)
    admin = admin_sign_in(create_app(svc).test_client(), make_admin(svc, "fin@msp.example", "finance"), clock)

    page = admin.get(f"/admin/payments/{pay.id}").get_data(as_text=True)

    table = page.split('id="payment-allocations"')[1].split("</table>")[0]
    assert f'<th scope="col" class="num">{head}</th>' in table
    assert re.search(
        rf'<td data-label="Invoice" class="nowrap">INV-9502</td>\s*'
        rf'<td data-label="{head}" class="num">\$116\.25</td>',
        table,
    )
    balance = "$0.00" if status == "succeeded" else "$116.25"
    assert f'<td data-label="Invoice balance now" class="num">{balance}</td>' in table
    if note is None:
        assert 'id="payment-allocations-note"' not in page
    else:
        assert note in page.split('id="payment-allocations-note">')[1].split("</p>")[0]
