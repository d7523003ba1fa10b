"""A parent company's contact in the portal: the children's invoices grouped by company with
totals, a company filter, one payment across two children (allocations, PSA write-backs, journal
and one receipt naming both companies) and one consolidated statement."""

from __future__ import annotations

import json
import re

import pytest

from app.core import emails, payments
from tests.web import factories as f
from tests.web.conftest import post, sign_in
from tests.web.test_documents_and_people import pdf_text


def _parent(svc, child: f.Ref, parent: f.Ref) -> None:
    with svc.store.write() as db:
        db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (parent.id, child.id))


@pytest.fixture
def holdings(svc):
    parent = f.make_client(svc, "Holdings Group", remote_id="co-hold")
    east = f.make_client(svc, "East Branch", remote_id="co-east")
    west = f.make_client(svc, "West Branch", remote_id="co-west")
    other = f.make_client(svc, "Globex Corporation")
    _parent(svc, east, parent)
    _parent(svc, west, parent)
    inv = {
        "HQ-1": f.make_invoice(svc, parent, "HQ-1", total_minor=5_000),
        "EAST-1": f.make_invoice(svc, east, "EAST-1", total_minor=12_345, due_on="2026-03-01"),
        "EAST-2": f.make_invoice(svc, east, "EAST-2", total_minor=1_000),
        "WEST-1": f.make_invoice(svc, west, "WEST-1", total_minor=67_890),
        "GLOBEX-1": f.make_invoice(svc, other, "GLOBEX-1", total_minor=99_999),
    }
    f.make_person(svc, parent, "ap@holdings.example")
    f.make_person(svc, east, "ap@east.example")
    return parent, east, west, other, inv


def test_a_parent_contact_sees_each_companys_invoices_under_its_name_with_totals(client, svc, holdings):
    parent, east, west, _, inv = holdings
    sign_in(client, "ap@holdings.example")
    page = client.get("/invoices").get_data(as_text=True)
    headings = re.findall(r'<h2 id="company-heading-[^"]+" class="company-name">([^<]+)</h2>', page)
    assert headings == ["Holdings Group", "East Branch", "West Branch"]
    assert re.search(rf'id="balance-{east.token}-USD">\$133\.45<', page)
    assert re.search(rf'id="balance-{west.token}-USD">\$678\.90<', page)
    assert re.search(rf'id="balance-{parent.token}-USD">\$50\.00<', page)
    assert re.search(r'id="overall-balance-USD">\$862\.35<', page)
    assert "GLOBEX" not in page and "Globex" not in page
    for number in ("HQ-1", "EAST-1", "EAST-2", "WEST-1"):
        assert f'id="select-{inv[number].token}"' in page
    # Filter by company: only West, its total, and the overall total of what is shown.
    west_only = client.get(f"/invoices?company={west.token}").get_data(as_text=True)
    assert "WEST-1" in west_only and "EAST-1" not in west_only and "HQ-1" not in west_only
    assert re.search(r'id="overall-balance-USD">\$678\.90<', west_only)
    # A child's invoice opens for the parent's contact; its PDF too.
    assert client.get(f"/invoices/{inv['EAST-1'].token}").status_code == 200
    assert client.get(f"/invoices/{inv['EAST-1'].token}/pdf").status_code == 200
    # A company that is not in the family is explained, not shown.
    foreign = client.get(f"/invoices?company={holdings[3].token}").get_data(as_text=True)
    assert "not one of yours" in foreign and "GLOBEX" not in foreign


def _pay_children(client, svc, inv) -> dict:
    tokens = [inv["EAST-1"].token, inv["WEST-1"].token, inv["EAST-2"].token]
    form = {"invoice": tokens, "action": "checkout", "method": "card"}
    form.update(
        {f"amount-{t}": amount for t, amount in zip(tokens, ("123.45", "600.00", "10.00"), strict=True)}
    )
    started = post(client, "/pay", form)
    assert started.status_code == 302, started.get_data(as_text=True)
    return svc.store.one("SELECT * FROM payments ORDER BY id DESC LIMIT 1")


def test_one_payment_of_the_parent_covers_invoices_of_two_children(client, svc, holdings):
    parent, east, west, _, inv = holdings
    sign_in(client, "ap@holdings.example")
    form = client.get(f"/pay?invoice={inv['EAST-1'].token}&invoice={inv['WEST-1'].token}").get_data(
        as_text=True
    )
    assert f'id="company-of-{inv["EAST-1"].token}">East Branch<' in form
    assert f'id="company-of-{inv["WEST-1"].token}">West Branch<' in form
    pay = _pay_children(client, svc, inv)
    assert (pay["client_id"], pay["amount_minor"], pay["currency"], pay["status"]) == (
        parent.id,
        73_345,
        "USD",
        "pending",
    )
    allocations = svc.store.all(
        "SELECT i.number, i.client_id, a.amount_minor FROM allocations a "
        "JOIN invoices i ON i.id = a.invoice_id "
        "WHERE a.payment_id = ? ORDER BY i.number",
        (pay["id"],),
    )
    assert [tuple(r) for r in allocations] == [
        ("EAST-1", east.id, 12_345),
        ("EAST-2", east.id, 1_000),
        ("WEST-1", west.id, 60_000),
    ]
    # The processor confirms exactly that amount (what the confirm call or the webhook records).
    outcome = payments.record_intent(
        svc.store,
        svc.clock,
        payment_id=pay["id"],
        intent_id="pi_parent_1",
        processor_status="succeeded",
        amount_minor=73_345,
        currency="usd",
        base_url="http://portal.test",
        timezone=svc.config.tz,
    )
    assert outcome.status == "succeeded"
    outbox = {
        k: [
            json.loads(r["payload_json"])
            for r in svc.store.all("SELECT payload_json FROM outbox WHERE kind = ? ORDER BY id", (k,))
        ]
        for k in ("psa_payment", "journal_payment", "email")
    }
    remote = {r["number"]: r["remote_id"] for r in svc.store.all("SELECT number, remote_id FROM invoices")}
    assert sorted((p["invoice_remote_id"], p["amount_minor"]) for p in outbox["psa_payment"]) == sorted(
        [(remote["EAST-1"], 12_345), (remote["EAST-2"], 1_000), (remote["WEST-1"], 60_000)]
    )
    [journal] = outbox["journal_payment"]
    assert (journal["client_name"], journal["amount_minor"]) == ("Holdings Group", 73_345)
    assert list(
        zip(
            (n for n, _ in journal["allocations"]), (c for c, _ in journal["allocation_clients"]), strict=True
        )
    ) == [("EAST-1", "East Branch"), ("EAST-2", "East Branch"), ("WEST-1", "West Branch")]
    [receipt] = [e for e in outbox["email"] if e["template"] == "receipt"]
    assert receipt["to"] == ["ap@holdings.example"]
    assert receipt["context"]["client_name"] == "Holdings Group"
    assert receipt["context"]["companies"] == ["East Branch", "West Branch"]
    text = emails.render(
        "receipt", receipt["context"], branding=svc.config.branding, base_url="http://portal.test"
    ).text
    assert "It pays invoices of East Branch, West Branch." in text
    east_at, west_at = text.index("East Branch:\n"), text.index("West Branch:\n")
    assert (
        east_at < text.index("- EAST-1: $123.45 applied") < text.index("- EAST-2: $10.00 applied") < west_at
    )
    assert west_at < text.index("- WEST-1: $600.00 applied, $78.90 still due")
    # The children's invoices are paid for everyone who sees them; the payment lists both companies.
    page = client.get(f"/payments/{pay['token']}").get_data(as_text=True)
    assert "East Branch" in page and "West Branch" in page and "WEST-1" in page
    listed = client.get("/invoices").get_data(as_text=True)
    assert re.search(r'id="overall-balance-USD">\$128\.90<', listed)


def test_the_journal_credits_each_childs_receivable_under_its_own_name(svc, tmp_path):
    from datetime import date

    from sync.accounting.journal import JournalSink
    from sync.base import JournalPayment

    sink = JournalSink(tmp_path / "journal.csv")
    payment = JournalPayment(
        payment_token="tok1",
        processor_ref="pi_1",
        method="card",
        received_on=date(2026, 3, 10),
        currency="USD",
        amount_minor=73_345,
        client_name="Holdings Group",
        client_remote_id="co-hold",
        allocations=(("EAST-1", 13_345), ("WEST-1", 60_000)),
        allocation_clients=(("East Branch", "co-east"), ("West Branch", "co-west")),
    )
    rows = sink.entry_lines(payment, "k1")
    assert [(r[4], r[5], r[6], r[8], r[9], r[11]) for r in rows] == [
        ("Holdings Group", "co-hold", "", "733.45", "", "card payment tok1"),
        ("East Branch", "co-east", "EAST-1", "", "133.45", "applied to invoice EAST-1 of East Branch"),
        ("West Branch", "co-west", "WEST-1", "", "600.00", "applied to invoice WEST-1 of West Branch"),
    ]


def test_a_child_contact_is_not_offered_the_parents_view(client, svc, holdings):
    _, _, _, _, inv = holdings
    sign_in(client, "ap@east.example")
    page = client.get("/invoices?status=all").get_data(as_text=True)
    assert "EAST-1" in page and "WEST-1" not in page and "HQ-1" not in page
    assert "company-heading" not in page and 'id="filter-company"' not in page
    assert (
        post(
            client,
            "/pay",
            {
                "invoice": [inv["EAST-1"].token, inv["WEST-1"].token],
                "action": "checkout",
                f"amount-{inv['EAST-1'].token}": "1.00",
            },
        ).status_code
        == 404
    )
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0


def test_the_core_refuses_a_childs_invoice_unless_the_parent_pays_for_its_children(svc, holdings):
    parent, east, _, _, inv = holdings
    item = [payments.PayItem(inv["EAST-1"].id, 12_345)]
    with pytest.raises(payments.PaymentRequestError, match="not available"):
        payments.start_payment(
            svc.store,
            svc.clock,
            client_id=parent.id,
            items=item,
            initiated_by="t",
            allow_partial=True,
            minimum_partial="1.00",
        )
    with pytest.raises(payments.PaymentRequestError, match="not available"):
        payments.start_payment(
            svc.store,
            svc.clock,
            client_id=east.id,
            initiated_by="t",
            allow_partial=True,
            minimum_partial="1.00",
            for_children=True,
            items=[payments.PayItem(inv["HQ-1"].id, 5_000)],
        )
    plan = payments.start_payment(
        svc.store,
        svc.clock,
        client_id=parent.id,
        items=item,
        initiated_by="t",
        allow_partial=True,
        minimum_partial="1.00",
        for_children=True,
    )
    assert plan.client_id == parent.id and plan.amount_minor == 12_345


def test_the_consolidated_statement_lists_each_companys_invoices_and_payments(
    client, svc, holdings, tmp_path
):
    parent, _, _, _, inv = holdings
    f.make_payment(
        svc,
        parent,
        [(inv["EAST-2"], 1_000), (inv["WEST-1"], 7_890)],
        created_at=f.datetime(2026, 3, 5, 16, 0, tzinfo=f.UTC),
    )
    sign_in(client, "ap@holdings.example")
    months = client.get("/statements").get_data(as_text=True)
    assert "/statements/2026-03" in months
    page = client.get("/statements/2026-03").get_data(as_text=True)
    for name, number in (("Holdings Group", "HQ-1"), ("East Branch", "EAST-1"), ("West Branch", "WEST-1")):
        assert f'class="company-name">{name}</h2>' in page and number in page
    assert "Globex" not in page
    # All companies: 50.00 + 123.45 + 600.00 still open (EAST-2 paid, 78.90 of WEST-1 paid).
    assert re.search(r'id="consolidated-total-USD"><strong>\$773\.45<', page)
    response = client.get("/statements/2026-03/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = pdf_text(response.data, tmp_path)
    for expected in (
        "Holdings Group",
        "East Branch",
        "West Branch",
        "HQ-1",
        "EAST-1",
        "WEST-1",
        "$773.45",
        "$88.90",
    ):  # the parent's payment for both children, under the parent
        assert expected in text, expected
    assert "GLOBEX" not in text
    # A child's contact gets only the child's statement.
    client.post("/logout", data={})
    other = client.application.test_client()
    sign_in(other, "ap@east.example")
    child = other.get("/statements/2026-03").get_data(as_text=True)
    assert "EAST-1" in child and "WEST-1" not in child and "HQ-1" not in child
    assert "consolidated" not in child


def test_a_parent_contact_disputes_a_line_of_a_childs_invoice_for_that_child(client, svc, holdings):
    _, east, _, _, inv = holdings
    sign_in(client, "ap@holdings.example")
    token = inv["EAST-1"].token
    response = post(
        client, f"/invoices/{token}/lines/1/dispute", {"reason": "These seats were cancelled in February."}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    [d] = svc.store.all("SELECT client_id, invoice_id, raised_by FROM line_disputes")
    assert (d["client_id"], d["invoice_id"], d["raised_by"]) == (
        east.id,
        inv["EAST-1"].id,
        "ap@holdings.example",
    )


def test_a_child_in_another_msp_entity_is_never_in_the_parents_charge(svc, holdings):
    parent, _, west, _, inv = holdings
    with svc.store.write() as db:
        db.execute("INSERT INTO entities (key, name, currency) VALUES ('ca', 'Northwind Canada', 'CAD')")
        other = db.execute("SELECT id FROM entities WHERE key = 'ca'").fetchone()[0]
        db.execute("UPDATE clients SET entity_id = ? WHERE id = ?", (other, west.id))
    with pytest.raises(
        payments.PaymentRequestError, match=r"billed by different companies of ours|not available"
    ):
        payments.start_payment(
            svc.store,
            svc.clock,
            client_id=parent.id,
            initiated_by="t",
            allow_partial=True,
            minimum_partial="1.00",
            for_children=True,
            items=[payments.PayItem(inv["EAST-1"].id, 12_345), payments.PayItem(inv["WEST-1"].id, 67_890)],
        )
    assert svc.store.scalar("SELECT COUNT(*) FROM payments") == 0
