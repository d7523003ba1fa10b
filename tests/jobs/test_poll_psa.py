"""poll_psa against the ConnectWise fake: import, quarantine, incremental, idempotent."""

from __future__ import annotations

from app.jobs import poll_psa
from tests.cw_world import contoso, invoice


def test_invoices_companies_and_billing_contacts_arrive_with_their_references(cw, cw_services):
    contoso(cw)
    report = poll_psa.run(cw_services)
    assert report.error is None
    s = cw_services.store
    rows = {r["number"]: dict(r) for r in s.all("SELECT number, kind, total_minor, tax_minor, agreement, "
                                                 "project, phase, ticket, due_on FROM invoices")}
    assert rows["INV-1042"]["kind"] == "agreement" and rows["INV-1042"]["total_minor"] == 125000
    assert rows["INV-1043"]["kind"] == "project" and rows["INV-1043"]["project"] == "Office 365 migration"
    assert rows["INV-1043"]["tax_minor"] == 25050 and rows["INV-1043"]["due_on"] == "2026-03-31"
    assert rows["INV-1044"]["kind"] == "time_and_materials" and "48213" in rows["INV-1044"]["ticket"]
    roles = dict(s.all("SELECT email, role FROM contacts"))
    assert roles == {"ap@contoso.example": "billing", "it@contoso.example": "viewer",
                     "ap@fabrikam.example": "billing"}
    # Each new billing contact gets one invitation, in the outbox.
    invites = s.all("SELECT payload_json FROM outbox WHERE kind = 'email'")
    assert len(invites) == 2 and all('"invitation"' in r[0] for r in invites)
    assert cw.violations == []


def test_malformed_invoices_are_quarantined_and_the_rest_of_the_page_imports(cw, cw_services):
    world = contoso(cw)
    c = world["company"]
    bad_total = invoice(cw, 9201, "INV-BAD1", c, kind="agreement", total="10.00")
    del bad_total["total"]
    invoice(cw, 9202, "INV-BAD2", c, kind="product", total="10.00",
            lines=[{"description": "Returned switch", "quantity": "-1", "unitPrice": 10.0, "amount": -10.0}])
    invoice(cw, 9203, "INV-BAD3", {"id": 999, "identifier": "Nobody", "name": "Nobody Ltd"}, kind="agreement",
            total="10.00")

    poll_psa.run(cw_services)

    s = cw_services.store
    numbers = {r[0] for r in s.all("SELECT number FROM invoices")}
    assert numbers == {"INV-1042", "INV-1043", "INV-1044", "INV-2001"}
    reasons = {r["remote_id"]: r["reason"] for r in s.all("SELECT remote_id, reason FROM quarantine "
                                                          "WHERE object = 'invoice'")}
    assert set(reasons) == {"9201", "9202", "9203"}
    assert "missing total" in reasons["9201"]
    assert "negative quantity" in reasons["9202"]
    assert "company 999 is unknown" in reasons["9203"]
    # The raw record is kept for the person who fixes it.
    assert "INV-BAD1" in s.scalar("SELECT raw_json FROM quarantine WHERE remote_id = '9201'")


def test_a_second_poll_is_incremental_and_changes_nothing(cw, cw_services):
    contoso(cw)
    poll_psa.run(cw_services)
    before = cw_services.store.all("SELECT id, number, total_minor, token FROM invoices ORDER BY id")
    outbox_before = cw_services.store.scalar("SELECT COUNT(*) FROM outbox")
    cw.requests.clear()
    poll_psa.run(cw_services)
    after = cw_services.store.all("SELECT id, number, total_minor, token FROM invoices ORDER BY id")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert cw_services.store.scalar("SELECT COUNT(*) FROM outbox") == outbox_before
    invoice_gets = [r for r in cw.requests if r.path.endswith("/finance/invoices")]
    assert invoice_gets and all("lastUpdated >" in r.query.get("conditions", "") for r in invoice_gets)
    assert cw.violations == []


def test_an_edited_open_invoice_is_updated(cw, cw_services, frozen_clock):
    from datetime import timedelta

    world = contoso(cw)
    poll_psa.run(cw_services)
    frozen_clock.advance(timedelta(hours=1))
    cw.touch(world["invoices"][0], total=1300.0, subtotal=1300.0, agreementAmount=1300.0, balance=1300.0)
    poll_psa.run(cw_services)
    assert cw_services.store.scalar("SELECT total_minor FROM invoices WHERE number = 'INV-1042'") == 130000


def test_a_record_stamped_in_the_future_hides_no_later_edit_even_with_a_short_overlap(
    cw, tmp_path, frozen_clock
):
    from datetime import timedelta

    from app.services import build_services
    from tests.cw_world import cw_config
    from tests.fakes.connectwise import cw_time

    services = build_services(cw_config(tmp_path, cw, psa="overlap_minutes = 1"), clock=frozen_clock)
    world = contoso(cw)
    now = frozen_clock.utc_now()
    for table in (cw.companies, cw.contacts, cw.invoices):
        for rec in table:
            rec["_info"]["lastUpdated"] = cw_time(now - timedelta(hours=1))
    stray = invoice(cw, 9361, "INV-FUTURE", world["company"], kind="agreement", total="10.00")
    stray["_info"]["lastUpdated"] = "2099-01-01T00:00:00Z"  # a PSA clock or a typo far ahead
    poll_psa.run(services)
    # Two minutes after that poll the PSA (on the same clock) edits INV-1042.
    edited = {"total": 1300.0, "subtotal": 1300.0, "agreementAmount": 1300.0, "balance": 1300.0}
    cw.touch(world["invoices"][0], when=now + timedelta(minutes=2), **edited)

    for _ in range(3):
        frozen_clock.advance(timedelta(minutes=15))
        assert poll_psa.run(services).error is None

    assert services.store.scalar("SELECT total_minor FROM invoices WHERE number = 'INV-1042'") == 130000
    cursor = services.store.scalar(
        "SELECT cursor FROM sync_state WHERE connector = 'connectwise' AND object = 'invoices'"
    )
    assert cursor == cw_time(frozen_clock.utc_now())  # the stray record holds it at the poll's own time
