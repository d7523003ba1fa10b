"""apply_page on a real SQLite store, record by record: what is written, what is set aside and why."""

from __future__ import annotations

from datetime import date, timedelta

from app.jobs.intake import apply_page, mark_deleted
from sync.base import Page, Rejected, RemoteCompany, RemoteInvoice, RemoteLine
from tests.adversarial.intake_helpers import paid_through_cashloop


def _invoice(
    remote_id: str, number: str, *, total: int = 10_000, company: str = "250", **over
) -> RemoteInvoice:
    inv = RemoteInvoice(
        remote_id=remote_id,
        number=number,
        company_remote_id=company,
        kind="agreement",
        currency="USD",
        issued_on=date(2026, 3, 1),
        due_on=date(2026, 3, 31),
        subtotal_minor=total,
        tax_minor=0,
        total_minor=total,
        paid_minor=0,
        lines=(RemoteLine("Managed services", "1", total, total),),
        raw={"id": remote_id, "invoiceNumber": number, "total": total},
    )
    return inv._replace(**over)


def _apply(services, items, obj="invoice"):
    with services.store.write() as db:
        return apply_page(
            db,
            services.clock,
            source="connectwise",
            obj=obj,
            entity_id=services.entity_id,
            page=Page(items, None),
        )


def _company(services):
    _apply(services, [RemoteCompany(remote_id="250", name="Contoso Dental LLC", raw={"id": 250})], "company")


def _reasons(services) -> dict[str, str]:
    return {
        r[0]: r[1]
        for r in services.store.all("SELECT remote_id, reason FROM quarantine WHERE resolved_at IS NULL")
    }


def test_a_record_sqlite_refuses_is_quarantined_and_the_rest_of_the_page_is_kept(services):
    _company(services)
    # A quantity that reached the store as a number past 64 bits (the mapping checks amounts, not this).
    huge_price = _invoice("2", "INV-2", lines=(RemoteLine("Odd", 10**20, 10_000, 10_000),))  # type: ignore[arg-type]

    counts = _apply(services, [_invoice("1", "INV-1"), huge_price, _invoice("3", "INV-3")])

    assert counts == {"created": 2, "quarantined": 1}
    assert {r[0] for r in services.store.all("SELECT number FROM invoices")} == {"INV-1", "INV-3"}
    assert "could not be stored (OverflowError" in _reasons(services)["2"]
    assert services.store.scalar("SELECT COUNT(*) FROM invoice_lines") == 2


def test_an_amount_beyond_any_real_invoice_is_quarantined_with_its_reason(services):
    _company(services)
    counts = _apply(services, [_invoice("1", "INV-1", total=10**16)])
    assert counts == {"quarantined": 1}
    assert "total 10000000000000000 minor units of USD is beyond any real invoice" in _reasons(services)["1"]


def test_a_second_invoice_with_a_number_already_taken_is_quarantined_even_in_the_same_page(services):
    _company(services)
    _apply(services, [_invoice("1", "INV-1")])

    counts = _apply(services, [_invoice("2", "INV-1"), _invoice("3", "INV-9"), _invoice("4", "INV-9")])

    assert counts == {"created": 1, "quarantined": 2}
    reasons = _reasons(services)
    assert reasons["2"] == "invoice number INV-1 is already used by invoice 1 at the source"
    assert reasons["4"] == "invoice number INV-9 is already used by invoice 3 at the source"


def test_a_record_listed_twice_in_one_page_is_stored_once(services):
    _company(services)
    counts = _apply(services, [_invoice("1", "INV-1"), _invoice("1", "INV-1", total=12_000)])
    assert counts == {"created": 1}  # the last listing is what the PSA says now; the first is not applied
    assert services.store.scalar("SELECT total_minor FROM invoices WHERE remote_id = '1'") == 12_000


def test_the_same_record_again_writes_nothing_but_a_new_mapping_of_it_does(services):
    _company(services)
    inv = _invoice("1", "INV-1")
    _apply(services, [inv])
    before = services.store.one("SELECT * FROM invoices")
    assert _apply(services, [inv]) == {"unchanged": 1}
    assert tuple(services.store.one("SELECT * FROM invoices")) == tuple(before)
    # Same vendor record, mapped differently (the MSP changed the status mapping): applied.
    assert _apply(services, [inv._replace(is_approved=False)]) == {"updated": 1}
    assert services.store.scalar("SELECT is_approved FROM invoices") == 0


def test_a_fixed_record_leaves_quarantine_and_a_rejected_one_keeps_its_raw_record(services):
    _company(services)
    _apply(services, [Rejected("invoice", "1", "missing total", {"id": 1, "invoiceNumber": "INV-1"})])
    assert _reasons(services) == {"1": "missing total"}
    assert "INV-1" in services.store.scalar("SELECT raw_json FROM quarantine")

    _apply(services, [_invoice("1", "INV-1")])

    assert _reasons(services) == {}
    assert services.store.scalar("SELECT resolved_at FROM quarantine") is not None


def test_re_reading_the_same_bad_record_writes_nothing(services):
    bad = Rejected("invoice", "1", "missing total", {"id": 1})
    _apply(services, [bad])
    before = tuple(services.store.one("SELECT * FROM quarantine"))
    services.clock.advance(timedelta(hours=1))
    _apply(services, [bad])
    assert tuple(services.store.one("SELECT * FROM quarantine")) == before


def test_an_invoice_deleted_then_listed_again_comes_back_open(services):
    _company(services)
    inv = _invoice("1", "INV-1")
    _apply(services, [inv])
    with services.store.write() as db:
        assert mark_deleted(db, services.clock, source="connectwise", remote_ids=["1"]) == {"deleted": 1}
        assert mark_deleted(db, services.clock, source="connectwise", remote_ids=["1"]) == {}
    assert services.store.scalar("SELECT status FROM invoices") == "deleted"

    assert _apply(services, [inv]) == {"updated": 1}

    assert services.store.one("SELECT status, deleted_at FROM invoices")[:] == ("open", None)


def test_a_credit_memo_is_stored_as_a_credit_with_its_negative_total(services):
    _company(services)
    credit = _invoice("9", "CM-9", total=-2_500, kind="credit_memo")
    _apply(services, [credit])
    assert services.store.one("SELECT kind, total_minor, status FROM invoices")[:] == (
        "credit_memo",
        -2500,
        "open",
    )


def test_a_held_change_names_only_what_changed_with_amounts_as_money(services):
    _company(services)
    _apply(services, [_invoice("1", "INV-1", total=12_000)])
    paid_through_cashloop(services, "1", 5_000)

    lines = (RemoteLine("Managed services", "1", 12_000, 12_000), RemoteLine("Firewall", "1", 1_050, 1_050))
    counts = _apply(services, [_invoice("1", "INV-1", total=13_050, lines=lines, is_void=True)])

    assert counts == {"held": 1}
    (summary,) = [r[0] for r in services.store.all("SELECT summary FROM exceptions")]
    assert summary == (
        "invoice INV-1 changed at the source (subtotal $120.00 -> $130.50, total $120.00 -> $130.50, "
        "status open -> void, lines (1 before, 2 now)) but already has payments through Cashloop; not applied"
    )
    stored = services.store.one("SELECT status, total_minor FROM invoices WHERE remote_id = '1'")
    assert (stored["status"], stored["total_minor"]) == ("open", 12_000)
