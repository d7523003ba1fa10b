"""Third round of attacks on the PSA intake, aimed at the newest logic: invoice numbers that rotate or
swap inside a page (with one side paid or broken), swaps across pages, records listed twice, the
re-read of invoices waiting for a number, and HaloPSA pages that repeat records legitimately.

Each test states the outcome the intake promises (rows, reasons, exceptions, requests).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from app.jobs import poll_psa, waiting
from app.jobs.intake import HELD_KIND, apply_page
from app.services import build_services
from sync.base import Page, Rejected, RemoteCompany, RemoteInvoice, RemoteLine
from tests.adversarial.intake_helpers import OLD, edit_json, paid_through_cashloop, poll, stamp_all
from tests.cw_world import contoso, invoice, open_quarantine
from tests.jobs.test_intake_records import _apply
from tests.psa_worlds import make_world

INVOICES = "/finance/invoices"
FIXED = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
RECENT = FIXED - timedelta(minutes=2)  # after the cursor: the next incremental poll reads it




def _numbers(services, *remote_ids: str) -> dict[str, tuple[str, str]]:
    """remote_id -> (number, status) as stored."""
    marks = ",".join("?" * len(remote_ids))
    return {
        r[0]: (r[1], r[2])
        for r in services.store.all(
            f"SELECT remote_id, number, status FROM invoices WHERE remote_id IN ({marks})", remote_ids
        )
    }


def _shared_open_numbers(services) -> list[str]:
    return [
        r[0]
        for r in services.store.all(
            "SELECT number FROM invoices WHERE status != 'deleted' "
            "GROUP BY source, number HAVING COUNT(*) > 1"
        )
    ]


def _held(services) -> list[str]:
    """Summaries of the open held-change exceptions."""
    return [
        r[0]
        for r in services.store.all(
            "SELECT summary FROM exceptions WHERE kind = ? AND resolved_at IS NULL ORDER BY id", (HELD_KIND,)
        )
    ]


def _refetches(cw, remote_id: str) -> int:
    """GET /finance/invoices/{id} requests the fake answered (the connector's refresh)."""
    return sum(1 for r in cw.requests if r.method == "GET" and r.path == f"{INVOICES}/{remote_id}")


# ---- numbers that rotate within one page ------------------------------------------------------------


def test_three_invoices_that_rotate_their_numbers_in_one_page_all_take_their_new_numbers(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-R1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-R2", world["company"], kind="agreement", total="20.00")
    c = invoice(cw, 9813, "INV-R3", world["company"], kind="agreement", total="30.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.touch(a, when=RECENT, invoiceNumber="INV-R2")
    cw.touch(b, when=RECENT, invoiceNumber="INV-R3")
    cw.touch(c, when=RECENT, invoiceNumber="INV-R1")

    report = poll(cw_services)
    again = poll(cw_services)

    assert (report.error, again.error) == (None, None)
    assert _numbers(cw_services, "9811", "9812", "9813") == {
        "9811": ("INV-R2", "open"),
        "9812": ("INV-R3", "open"),
        "9813": ("INV-R1", "open"),
    }
    assert report.counts["invoices"]["updated"] == 3 and report.counts["invoices"]["quarantined"] == 0
    assert again.counts["invoices"]["updated"] == 0, again.counts  # nothing changed: nothing written
    assert open_quarantine(cw_services) == {} and _shared_open_numbers(cw_services) == []


def test_a_rotation_where_a_new_invoice_takes_a_number_another_gives_up_imports_both(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-R1", world["company"], kind="agreement", total="10.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.touch(a, when=RECENT, invoiceNumber="INV-R9")
    new = invoice(cw, 9814, "INV-R1", world["company"], kind="agreement", total="40.00")
    new["_info"]["lastUpdated"] = "2026-03-10T14:58:00Z"

    report = poll(cw_services)

    assert report.error is None
    assert _numbers(cw_services, "9811", "9814") == {"9811": ("INV-R9", "open"), "9814": ("INV-R1", "open")}
    assert open_quarantine(cw_services) == {}


# ---- a swap where one side is paid through Cashloop ---------------------------------------------------


def test_a_swap_where_one_side_has_a_cashloop_payment_holds_that_side_in_the_exceptions_queue(
    cw, cw_services
):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-SW1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-SW2", world["company"], kind="agreement", total="20.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    paid_through_cashloop(cw_services, "9811")
    cw.touch(a, when=RECENT, invoiceNumber="INV-SW2")
    cw.touch(b, when=RECENT, invoiceNumber="INV-SW1")

    report = poll(cw_services)

    assert report.error is None
    # The paid invoice keeps its number and its change waits for a person; the other cannot take
    # INV-SW1 while the paid one still has it in Cashloop.
    assert _numbers(cw_services, "9811", "9812") == {"9811": ("INV-SW1", "open"), "9812": ("INV-SW2", "open")}
    assert [s for s in _held(cw_services) if "INV-SW1" in s] != [], (
        _held(cw_services),
        open_quarantine(cw_services),
    )
    assert report.counts["invoices"]["held"] == 1, report.counts
    assert "9811" not in open_quarantine(cw_services), open_quarantine(cw_services)
    assert _shared_open_numbers(cw_services) == []


def test_a_held_swap_does_not_stop_an_unrelated_swap_in_the_same_page(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-SW1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-SW2", world["company"], kind="agreement", total="20.00")
    c = invoice(cw, 9821, "INV-PX1", world["company"], kind="agreement", total="30.00")
    d = invoice(cw, 9822, "INV-PX2", world["company"], kind="agreement", total="40.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    paid_through_cashloop(cw_services, "9822")  # only the second pair has a paid side
    for rec, number in ((a, "INV-SW2"), (b, "INV-SW1"), (c, "INV-PX2"), (d, "INV-PX1")):
        cw.touch(rec, when=RECENT, invoiceNumber=number)

    report = poll(cw_services)

    assert report.error is None
    # The pair with no payment on either side swaps as it would alone.
    assert _numbers(cw_services, "9811", "9812") == {
        "9811": ("INV-SW2", "open"),
        "9812": ("INV-SW1", "open"),
    }, (
        _numbers(cw_services, "9811", "9812"),
        open_quarantine(cw_services),
    )
    assert _shared_open_numbers(cw_services) == []


def test_a_three_way_rotation_with_one_paid_invoice_holds_it_and_leaves_no_number_twice(cw, cw_services):
    world = contoso(cw)
    recs = [
        invoice(cw, 9811 + n, f"INV-R{n + 1}", world["company"], kind="agreement", total=f"{10 * (n + 1)}.00")
        for n in range(3)
    ]
    stamp_all(cw)
    assert poll(cw_services).error is None
    paid_through_cashloop(cw_services, "9812")
    for n, rec in enumerate(recs):
        cw.touch(rec, when=RECENT, invoiceNumber=f"INV-R{(n + 1) % 3 + 1}")

    report = poll(cw_services)

    assert report.error is None
    assert _shared_open_numbers(cw_services) == []
    # 9812 (paid) keeps INV-R2 and its change is held; no invoice takes INV-R2 from it.
    assert _numbers(cw_services, "9812") == {"9812": ("INV-R2", "open")}
    assert report.counts["invoices"]["held"] == 1, (report.counts, open_quarantine(cw_services))
    assert "9812" not in open_quarantine(cw_services)


# ---- a swap where one side is quarantined ----------------------------------------------------------


def test_a_swap_whose_other_side_has_a_bad_total_ends_swapped_once_the_total_is_fixed(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-SW1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-SW2", world["company"], kind="agreement", total="20.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.touch(a, when=FIXED - timedelta(minutes=40), invoiceNumber="INV-SW2")
    cw.touch(b, when=FIXED - timedelta(minutes=40), invoiceNumber="INV-SW1", total="abc")
    # Another invoice changed later moves the change cursor past the overlap that would re-read 9811.
    cw.touch(world["other_invoice"], when=FIXED - timedelta(minutes=5), description="later edit")

    first = poll(cw_services)
    reasons = open_quarantine(cw_services)
    assert first.error is None
    assert _numbers(cw_services, "9811", "9812") == {"9811": ("INV-SW1", "open"), "9812": ("INV-SW2", "open")}
    assert "total" in reasons["9812"], reasons

    # The total is fixed at the PSA (an edit of 9812 only: 9811 does not change again).
    cw_services.clock.advance(timedelta(hours=1))
    cw.touch(b, when=FIXED + timedelta(minutes=50), total=20.0)
    for _ in range(3):
        assert poll(cw_services).error is None

    assert _numbers(cw_services, "9811", "9812") == {
        "9811": ("INV-SW2", "open"),
        "9812": ("INV-SW1", "open"),
    }, (
        _numbers(cw_services, "9811", "9812"),
        open_quarantine(cw_services),
    )
    assert open_quarantine(cw_services) == {}


# ---- a swap across two pages -----------------------------------------------------------------------


def test_two_invoices_that_swap_numbers_across_two_pages_end_swapped_within_a_few_polls(
    tmp_path, frozen_clock
):
    world = make_world("connectwise", frozen_clock.utc_now)
    cw = world.fake
    try:
        services = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock)
        base = contoso(cw)  # 9001-9003, 9101: page 1 of the next sweep holds 9811 and 9812 apart
        a = invoice(cw, 9811, "INV-SW1", base["company"], kind="agreement", total="10.00")
        filler = invoice(cw, 9812, "INV-FILL", base["company"], kind="agreement", total="15.00")
        b = invoice(cw, 9813, "INV-SW2", base["company"], kind="agreement", total="20.00")
        stamp_all(cw)
        assert poll(services).error is None
        cw.touch(a, when=RECENT, invoiceNumber="INV-SW2")
        cw.touch(filler, when=RECENT, description="same page as 9811")
        cw.touch(b, when=RECENT, invoiceNumber="INV-SW1")

        reports = [poll(services) for _ in range(3)]

        assert [r.error for r in reports] == [None, None, None]
        got = _numbers(services, "9811", "9813")
        assert got == {"9811": ("INV-SW2", "open"), "9813": ("INV-SW1", "open")}, (
            got,
            open_quarantine(services),
        )
        assert open_quarantine(services) == {}
    finally:
        world.fake.stop()


# ---- numbers held by deleted invoices ----------------------------------------------------------------


def test_a_rename_to_the_number_of_an_invoice_deleted_in_cashloop_is_applied(cw, cw_services):
    world = contoso(cw)
    gone = invoice(cw, 9801, "INV-OLD", world["company"], kind="agreement", total="50.00")
    a = invoice(cw, 9802, "INV-NEW", world["company"], kind="agreement", total="60.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.invoices.remove(gone)
    assert poll(cw_services, full=True).error is None
    assert _numbers(cw_services, "9801") == {"9801": ("INV-OLD", "deleted")}

    cw.touch(a, when=RECENT, invoiceNumber="INV-OLD")
    report = poll(cw_services)

    assert report.error is None
    assert _numbers(cw_services, "9801", "9802") == {
        "9801": ("INV-OLD", "deleted"),
        "9802": ("INV-OLD", "open"),
    }
    assert open_quarantine(cw_services) == {}


def test_an_invoice_deleted_in_cashloop_that_comes_back_with_a_number_now_taken_is_quarantined(
    cw, cw_services
):
    world = contoso(cw)
    gone = invoice(cw, 9801, "INV-OLD", world["company"], kind="agreement", total="50.00")
    a = invoice(cw, 9802, "INV-NEW", world["company"], kind="agreement", total="60.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.invoices.remove(gone)
    assert poll(cw_services, full=True).error is None
    cw.touch(a, when=RECENT, invoiceNumber="INV-OLD")
    assert poll(cw_services).error is None
    cw.add_invoice(dict(gone, _info={"lastUpdated": "2026-03-10T14:59:00Z"}))  # restored at the PSA

    report = poll(cw_services)

    assert report.error is None
    assert _numbers(cw_services, "9801", "9802") == {
        "9801": ("INV-OLD", "deleted"),
        "9802": ("INV-OLD", "open"),
    }
    assert open_quarantine(cw_services) == {
        "9801": "invoice number INV-OLD is already used by invoice 9802 at the source"
    }


# ---- the same record listed twice ----------------------------------------------------------------------



def test_a_swap_participant_listed_twice_whose_last_listing_keeps_its_number_stops_the_swap(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-SW1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-SW2", world["company"], kind="agreement", total="20.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.touch(a, when=RECENT, invoiceNumber="INV-SW2")
    cw.touch(b, when=RECENT, invoiceNumber="INV-SW1")

    def twice(records):
        listed_b = next(r for r in records if r["id"] == 9812)
        records.append(dict(listed_b, invoiceNumber="INV-SW2"))  # the last listing: B keeps INV-SW2
        return records

    cw.rewrite_next(INVOICES, edit_json(twice))
    report = poll(cw_services)

    assert report.error is None
    assert _numbers(cw_services, "9811", "9812") == {"9811": ("INV-SW1", "open"), "9812": ("INV-SW2", "open")}
    assert open_quarantine(cw_services) == {
        "9811": "invoice number INV-SW2 is already used by invoice 9812 at the source"
    }
    assert _shared_open_numbers(cw_services) == []


def test_a_swap_participant_listed_twice_whose_last_listing_swaps_completes_the_swap(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-SW1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-SW2", world["company"], kind="agreement", total="20.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.touch(a, when=RECENT, invoiceNumber="INV-SW2")
    cw.touch(b, when=RECENT, invoiceNumber="INV-SW1")

    def twice(records):
        listed_b = next(r for r in records if r["id"] == 9812)
        records.insert(0, dict(listed_b, invoiceNumber="INV-SW2"))  # first B keeps, last B swaps
        return records

    cw.rewrite_next(INVOICES, edit_json(twice))
    report = poll(cw_services)

    assert report.error is None
    assert _numbers(cw_services, "9811", "9812") == {"9811": ("INV-SW2", "open"), "9812": ("INV-SW1", "open")}
    assert open_quarantine(cw_services) == {}
    assert report.counts["invoices"]["updated"] == 2, report.counts


def test_two_different_records_without_an_id_in_one_page_are_both_kept_in_quarantine(services):
    page = Page(
        [
            Rejected("invoice", "", "missing id", {"invoiceNumber": "INV-A", "total": 1}),
            Rejected("invoice", "", "missing id", {"invoiceNumber": "INV-B", "total": 2}),
        ],
        None,
    )
    with services.store.write() as db:
        counts = apply_page(
            db, services.clock, source="connectwise", obj="invoice", entity_id=services.entity_id, page=page
        )
    rows = services.store.all("SELECT remote_id, raw_json FROM quarantine WHERE resolved_at IS NULL")
    # Two bad records, counted as two: both must be there for a person to see.
    assert counts == {"quarantined": 2}
    assert len(rows) == 2, [tuple(r) for r in rows]


def test_a_bad_listing_whose_id_has_spaces_and_a_good_listing_of_the_same_id_leave_no_stale_quarantine(
    cw, cw_services
):
    contoso(cw)

    def twice(records):
        good = next(r for r in records if r["id"] == 9001)
        records.insert(records.index(good), dict(good, id=" 9001", total="abc"))  # bad first, good last
        return records

    cw.rewrite_next(INVOICES, edit_json(twice))
    report = poll(cw_services)

    assert report.error is None
    # The last listing of invoice 9001 is good: it is stored, and nothing about 9001 waits in quarantine.
    assert _numbers(cw_services, "9001") == {"9001": ("INV-1042", "open")}
    assert open_quarantine(cw_services) == {}, open_quarantine(cw_services)


# ---- numbers that differ only by whitespace ---------------------------------------------------------


@pytest.mark.parametrize("variant", ["INV-1042 ", " INV-1042", "INV-1042\t", "INV-1042\u00a0"])
def test_a_number_that_differs_only_by_surrounding_whitespace_is_the_same_number(cw, cw_services, variant):
    world = contoso(cw)
    invoice(cw, 9850, variant, world["company"], kind="agreement", total="10.00")

    report = poll(cw_services)

    assert report.error is None
    assert open_quarantine(cw_services) == {
        "9850": "invoice number INV-1042 is already used by invoice 9001 at the source"
    }
    assert _shared_open_numbers(cw_services) == []


def test_a_number_that_differs_only_by_an_invisible_character_is_not_a_second_inv_1042(cw, cw_services):
    world = contoso(cw)
    invoice(cw, 9850, "INV-1042\u200b", world["company"], kind="agreement", total="10.00")  # zero-width space

    report = poll(cw_services)

    assert report.error is None
    shown = [
        r[0].replace("\u200b", "")
        for r in cw_services.store.all("SELECT number FROM invoices WHERE status != 'deleted'")
    ]
    # Two open invoices that read "INV-1042" on a receipt would be two invoices with one number.
    assert shown.count("INV-1042") == 1, (shown, open_quarantine(cw_services))


# ---- invoices read again once their number is free ---------------------------------------------------


def test_a_paid_invoice_waiting_for_a_number_is_held_once_and_not_read_again_everypoll(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-A", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-B", world["company"], kind="agreement", total="20.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    paid_through_cashloop(cw_services, "9811")
    # The paid invoice takes B's number (an edit the overlap of later polls does not re-read)...
    cw.touch(a, when=datetime(2026, 3, 1, tzinfo=UTC), invoiceNumber="INV-B")
    cw.invoices.remove(b)  # ...and B is deleted at the PSA
    cw.touch(world["other_invoice"], when=RECENT)  # the change cursor moves past the overlap

    first = poll(cw_services, full=True)  # the sweep, the deletion check, then the read again
    after_first = _refetches(cw, "9811")
    later = [poll(cw_services) for _ in range(3)]

    assert first.error is None and [r.error for r in later] == [None, None, None]
    assert _numbers(cw_services, "9811", "9812") == {"9811": ("INV-A", "open"), "9812": ("INV-B", "deleted")}
    assert len([s for s in _held(cw_services) if "INV-A" in s]) == 1, _held(cw_services)
    # INV-B is on no open invoice now: a quarantine row saying 9812 has it is not true any more.
    assert "9811" not in open_quarantine(cw_services), open_quarantine(cw_services)
    # Nothing changed at the PSA after the first poll: it is not asked again and again.
    assert _refetches(cw, "9811") - after_first == 0, [r.counts for r in later]
    assert [r.counts["invoices"]["held"] for r in later] == [0, 0, 0]


TEMPLATE_NUMBER = "Q is already used by invoice 1 at the source"


def test_a_number_holding_the_words_of_the_quarantine_reason_is_not_read_again_everypoll(cw, cw_services):
    world = contoso(cw)
    invoice(cw, 9830, TEMPLATE_NUMBER, world["company"], kind="agreement", total="10.00")
    invoice(cw, 9831, TEMPLATE_NUMBER, world["company"], kind="agreement", total="11.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    assert open_quarantine(cw_services) == {
        "9831": f"invoice number {TEMPLATE_NUMBER} is already used by invoice 9830 at the source"
    }
    cw.touch(world["other_invoice"], when=RECENT)  # the change cursor moves past the overlap
    assert poll(cw_services).error is None
    cw.requests.clear()

    reports = [poll(cw_services) for _ in range(3)]

    assert [r.error for r in reports] == [None, None, None]
    # 9830 still has the number: 9831 has nothing to be read again for.
    assert _refetches(cw, "9831") == 0
    assert [r.counts["invoices"]["quarantined"] for r in reports] == [0, 0, 0]


def test_invoices_whose_number_holds_the_reason_words_do_not_starve_an_invoice_whose_number_is_free(
    cw, cw_services, monkeypatch
):
    monkeypatch.setitem(waiting.for_number.__kwdefaults__, "limit", 2)  # REREAD_LIMIT, small
    world = contoso(cw)
    invoice(cw, 9830, TEMPLATE_NUMBER, world["company"], kind="agreement", total="10.00")
    for iid in (9831, 9832):
        invoice(cw, iid, TEMPLATE_NUMBER, world["company"], kind="agreement", total="11.00")
    holder = invoice(cw, 9840, "INV-FREE", world["company"], kind="agreement", total="12.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    late = invoice(cw, 9841, "INV-FREE", world["company"], kind="agreement", total="13.00")
    late["_info"]["lastUpdated"] = OLD  # read by a full sweep only, not by the overlap of each poll
    assert poll(cw_services, full=True).error is None
    assert (
        open_quarantine(cw_services)["9841"]
        == "invoice number INV-FREE is already used by invoice 9840 at the source"
    )

    cw.invoices.remove(holder)  # the number is free once the deletion check closes 9840
    cw.touch(world["other_invoice"], when=RECENT)  # the change cursor moves past the overlap
    reports = [poll(cw_services, full=True)] + [poll(cw_services) for _ in range(2)]

    assert [r.error for r in reports] == [None, None, None]
    assert _numbers(cw_services, "9840", "9841") == {
        "9840": ("INV-FREE", "deleted"),
        "9841": ("INV-FREE", "open"),
    }, open_quarantine(cw_services)


def test_an_invoice_read_again_that_still_clashes_is_kept_with_its_new_reason_and_not_read_again(
    cw, cw_services
):
    world = contoso(cw)
    gone = invoice(cw, 9840, "INV-FREE", world["company"], kind="agreement", total="12.00")
    invoice(cw, 9842, "INV-OTHER", world["company"], kind="agreement", total="14.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    waiting = invoice(cw, 9841, "INV-FREE", world["company"], kind="agreement", total="13.00")
    waiting["_info"]["lastUpdated"] = RECENT.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert poll(cw_services).error is None
    # At the PSA: 9840 is deleted, and the waiting invoice is renumbered onto another taken number
    # (an edit before the cursor: only the read again sees it).
    cw.invoices.remove(gone)
    waiting["invoiceNumber"] = "INV-OTHER"

    first = poll(cw_services, full=True)
    before = _refetches(cw, "9841")
    later = [poll(cw_services) for _ in range(2)]

    assert first.error is None and [r.error for r in later] == [None, None]
    assert (
        open_quarantine(cw_services)["9841"]
        == "invoice number INV-OTHER is already used by invoice 9842 at the source"
    )
    assert _refetches(cw, "9841") == before


def test_a_waiting_invoice_the_psa_answers_for_is_not_said_to_be_gone(cw, cw_services):
    world = contoso(cw)
    holder = invoice(cw, 9840, "INV-FREE", world["company"], kind="agreement", total="12.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    waiting = invoice(cw, 9841, "INV-FREE", world["company"], kind="agreement", total="13.00")
    waiting["_info"]["lastUpdated"] = RECENT.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert poll(cw_services).error is None
    cw.invoices.remove(holder)
    waiting["total"] = "abc"  # broken at the PSA meanwhile: the read again quarantines it for that

    report = poll(cw_services, full=True)

    assert report.error is None
    reason = open_quarantine(cw_services)["9841"]
    assert "total" in reason and "no longer has it" not in reason, reason


# ---- HaloPSA pages -------------------------------------------------------------------------------------


def test_a_halo_newest_first_page_shifted_by_edits_made_while_paging_is_not_an_error(tmp_path, frozen_clock):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(8, companies=1)
        services = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock)
        assert poll(services).error is None
        # Two invoices are edited: the next sweep reads them newest first, two a page.
        frozen_clock.advance(timedelta(minutes=1))
        for spec in specs[:2]:
            world.change(spec.remote_id)

        def edit_two_more_while_paging(body: bytes) -> bytes:
            frozen_clock.advance(timedelta(minutes=1))
            for spec in specs[2:4]:  # two more edits at Halo between page 1 and page 2
                world.change(spec.remote_id)
            return body

        world.fake.rewrite_next("/Invoice", edit_two_more_while_paging)
        shifted = poll(services)
        after = poll(services)

        assert shifted.error is None, shifted.error
        assert after.error is None
        totals = {r[0]: r[1] for r in services.store.all("SELECT remote_id, total_minor FROM invoices")}
        assert {s.remote_id: s.total for s in specs} == totals
    finally:
        world.fake.stop()


def test_a_full_halo_page_of_records_without_a_usable_id_is_quarantined_and_the_sweep_goes_on(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(4, companies=1)
        services = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock)

        def no_ids(body: bytes) -> bytes:
            data = json.loads(body)
            for rec in data["invoices"]:
                rec["id"] = None
            return json.dumps(data).encode()

        world.fake.rewrite_next("/Invoice", no_ids)  # the first invoice page: two records, no ids
        report = poll(services)

        assert report.error is None, report.error
        stored = {r[0] for r in services.store.all("SELECT remote_id FROM invoices")}
        assert stored == {s.remote_id for s in specs[2:]}
        assert report.counts["invoices"]["quarantined"] >= 1
    finally:
        world.fake.stop()


def test_a_halo_server_repeating_its_first_page_with_ids_as_text_is_stopped_within_a_page_or_two(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        halo = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock).psa
        calls: list[str] = []

        def same_page_other_id_types(path, params):
            calls.append(params.get("page_no"))
            first = params.get("page_no") == "1"
            ids = (1, 2) if first else ("1", "2")  # the same two clients, ids sent as text after page 1
            return {"clients": [{"id": i, "name": f"C{i}"} for i in ids], "record_count": None}

        halo._get_json = same_page_other_id_types
        # One page of records read already is what edits made while paging do (see the test
        # above); three in a row is a server that answers one page for every number.
        with pytest.raises(poll_psa.ConnectorError, match="hold only records of the pages before them"):
            for _ in halo.companies(None):
                if len(calls) > 50:
                    break
        assert len(calls) == 4, calls
    finally:
        world.fake.stop()


# ---- a swap in a page applied record by record -----------------------------------------------------------


def _remote(remote_id: str, number: str, total: int = 10_000, **over) -> RemoteInvoice:
    return RemoteInvoice(
        remote_id=remote_id,
        number=number,
        company_remote_id="250",
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
    )._replace(**over)



def test_a_swap_in_a_page_that_falls_back_to_record_by_record_still_swaps(services):
    _apply(services, [RemoteCompany(remote_id="250", name="Contoso Dental LLC", raw={"id": 250})], "company")
    _apply(services, [_remote("1", "INV-1"), _remote("2", "INV-2")])
    bad = _remote("3", "INV-3", description="broken \udcff text")  # SQLite refuses it: record by record

    counts = _apply(services, [_remote("1", "INV-2", total=10_001), _remote("2", "INV-1", total=10_002), bad])

    assert counts == {"updated": 2, "quarantined": 1}
    assert _numbers(services, "1", "2") == {"1": ("INV-2", "open"), "2": ("INV-1", "open")}
    assert list(open_quarantine(services)) == ["3"]


def test_a_swap_whose_other_side_sqlite_refuses_leaves_no_number_on_two_invoices(services):
    _apply(services, [RemoteCompany(remote_id="250", name="Contoso Dental LLC", raw={"id": 250})], "company")
    _apply(services, [_remote("1", "INV-1"), _remote("2", "INV-2")])
    huge = (RemoteLine("Odd", 10**20, 10_000, 10_000),)  # type: ignore[arg-type]

    counts = _apply(services, [_remote("1", "INV-2"), _remote("2", "INV-1", lines=huge)])

    assert counts == {"quarantined": 2}
    assert _numbers(services, "1", "2") == {"1": ("INV-1", "open"), "2": ("INV-2", "open")}
    reasons = open_quarantine(services)
    # Invoice 2 gives INV-2 up at the source, but its new listing could not be stored.
    assert reasons["1"] == (
        "invoice number INV-2 is still on invoice 2, whose change at the source is not applied"
    )
    assert "could not be stored (OverflowError" in reasons["2"]
    assert _shared_open_numbers(services) == []


# ---- dates the stricter reading refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-31t00:00:00Z",  # RFC 3339 5.6: "T" and "Z" may be lower case
        "2026-03-31T00:00:00z",
        "2026-03-31Z",  # xsd:date with a zone (SOAP-era APIs)
        "2026-03-31+00:00",
    ],
)
def test_a_due_date_written_in_a_legal_form_with_a_zone_is_still_read(value):
    from app.core.clock import parse_vendor_date

    assert parse_vendor_date(value) == date(2026, 3, 31)


def test_a_new_invoice_taking_a_number_given_up_whose_record_is_refused_leaves_the_number_where_it_was(
    services,
):
    _apply(services, [RemoteCompany(remote_id="250", name="Contoso Dental LLC", raw={"id": 250})], "company")
    _apply(services, [_remote("1", "INV-1")])
    huge = (RemoteLine("Odd", 10**20, 10_000, 10_000),)  # type: ignore[arg-type]

    # Invoice 1 moves on to INV-9 and a new invoice 5 takes INV-1, but 5 cannot be stored.
    counts = _apply(services, [_remote("1", "INV-9"), _remote("5", "INV-1", lines=huge)])

    assert counts == {"updated": 1, "quarantined": 1}
    assert _numbers(services, "1", "5") == {"1": ("INV-9", "open")}
    assert "could not be stored (OverflowError" in open_quarantine(services)["5"]
    assert _shared_open_numbers(services) == []


def test_a_refused_new_invoice_in_a_page_whose_swap_fails_does_not_stop_the_page(services):
    _apply(services, [RemoteCompany(remote_id="250", name="Contoso Dental LLC", raw={"id": 250})], "company")
    _apply(services, [_remote("2", "INV-2"), _remote("3", "INV-3"), _remote("4", "INV-4")])
    paid_through_cashloop(services, "3")
    huge = (RemoteLine("Odd", 10**20, 10_000, 10_000),)  # type: ignore[arg-type]

    # 2 moves on to a free number and a new invoice 5 takes INV-2, but 5 cannot be stored; in the
    # same page 3 (paid: held) and 4 swap numbers, so the swaps are undone and tried again.
    page = [
        _remote("2", "INV-8"),
        _remote("5", "INV-2", lines=huge),
        _remote("3", "INV-4"),
        _remote("4", "INV-3"),
    ]
    counts = _apply(services, page)

    assert counts == {"updated": 1, "held": 1, "quarantined": 2}, counts
    assert _numbers(services, "2", "3", "4", "5") == {
        "2": ("INV-8", "open"),
        "3": ("INV-3", "open"),
        "4": ("INV-4", "open"),
    }
    reasons = open_quarantine(services)
    assert "could not be stored (OverflowError" in reasons["5"]
    assert (
        reasons["4"]
        == "invoice number INV-3 is still on invoice 3, whose change at the source is not applied"
    )
    assert _shared_open_numbers(services) == []
