"""Second round of attacks on the PSA intake: odd Retry-After values, pages that repeat, records
listed twice, invoice numbers reused, company links that move, amounts past the guard on lines,
dates at the edges, a stop and an error in the middle of a PageBatch, and PSA settings at their edges.

Each test states the outcome the intake promises (rows, amounts to the cent, reasons).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from app.config import ConfigError, load_config
from app.core import stop_flag
from app.core.emails import money
from app.core.money import MoneyError
from app.jobs import poll_psa
from app.services import build_services
from sync.base import ConnectorError
from sync.http import HttpClient, _retry_after
from tests.adversarial.intake_helpers import edit_json, poll, stamp_all
from tests.adversarial.test_config_attacks import _FILES_SECTION, _base, _cw, _write
from tests.cw_world import company, contact, contoso, invoice, invoice_numbers, open_quarantine
from tests.jobs.test_backfill_resume import _contents
from tests.psa_worlds import make_world

INVOICES = "/finance/invoices"
COMPANIES = "/company/companies"
CONTACTS = "/company/contacts"
FIXED = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)





# ---- Retry-After ------------------------------------------------------------------------------


class _Session:
    """A requests.Session stand-in answering from a list of (status, headers, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def request(self, method, url, **kw):
        self.calls += 1
        status, headers, body = self.answers.pop(0)
        resp = requests.Response()
        resp.status_code = status
        resp.headers.update(headers)
        resp._content = json.dumps(body).encode()
        resp.url = url
        return resp


def _client(answers, **kw):
    sleeps: list[float] = []
    session = _Session(answers)
    return HttpClient(timeout=5, sleep=sleeps.append, session=session, **kw), sleeps, session


def _resp(headers):
    r = requests.Response()
    r.status_code = 503
    r.headers.update(headers)
    return r


@pytest.fixture
def new_york(monkeypatch):
    """The appliance's process runs in the MSP's own zone (systemd passes the host's TZ)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def berlin(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_retry_after_in_the_asctime_form_is_read_as_gmt_in_a_process_west_of_utc(new_york):
    # RFC 9110 5.6.7: a recipient MUST accept the asctime form, which is always GMT.
    now = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC).timestamp()
    value = "Tue Mar 10 15:00:20 2026"  # 20 s after `now`, in GMT
    assert _retry_after(_resp({"Retry-After": value}), now=lambda: now) == pytest.approx(20.0)


def test_a_retry_after_in_the_asctime_form_is_read_as_gmt_in_a_process_east_of_utc(berlin):
    now = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC).timestamp()
    assert _retry_after(_resp({"Retry-After": "Tue Mar 10 15:00:20 2026"}), now=lambda: now) == pytest.approx(
        20.0
    )


def test_a_retry_after_date_with_minus_zero_zone_is_read_as_utc(new_york):
    now = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC).timestamp()
    value = "Tue, 10 Mar 2026 15:00:20 -0000"
    assert _retry_after(_resp({"Retry-After": value}), now=lambda: now) == pytest.approx(20.0)


def test_the_rfc850_and_imf_forms_of_a_retry_after_date_are_read_exactly(new_york):
    now = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC).timestamp()
    for value in ("Tuesday, 10-Mar-26 15:00:20 GMT", "Tue, 10 Mar 2026 15:00:20 GMT"):
        assert _retry_after(_resp({"Retry-After": value}), now=lambda: now) == pytest.approx(20.0), value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  30  ", 30.0),
        ("30, 30", None),  # two Retry-After headers joined by requests: no one value
        ("1e-400", 0.0),  # a float that underflows to zero
        ("-0", 0.0),
        ("9" * 400, None),  # a float() past the largest double is inf: no answer
        ("", None),
    ],
)
def test_odd_retry_after_values_are_read_or_ignored_never_crash(value, expected):
    assert _retry_after(_resp({"Retry-After": value})) == expected


def test_a_401_with_a_retry_after_is_not_retried():
    client, sleeps, session = _client([(401, {"Retry-After": "1"}, {"message": "nope"})] * 3)
    with pytest.raises(ConnectorError) as err:
        client.request("GET", "http://psa.example/x")
    assert (err.value.status, err.value.retryable, session.calls, sleeps) == (401, False, 1, [])


def test_a_503_on_a_post_that_is_not_idempotent_is_not_repeated_whatever_retry_after_says():
    client, sleeps, session = _client([(503, {"Retry-After": "2"}, {})] * 3)
    with pytest.raises(ConnectorError) as err:
        client.request("POST", "http://psa.example/pay", json={"a": 1})
    assert (err.value.status, err.value.retry_after, session.calls, sleeps) == (503, 2.0, 1, [])


def test_a_retry_after_on_a_500_is_ignored_for_the_usual_backoff():
    client, sleeps, _ = _client([(500, {"Retry-After": "3600"}, {})] * 2 + [(200, {}, {})])
    client.request("GET", "http://psa.example/x")
    assert sleeps == [1.0, 2.0]


def test_a_huge_retry_after_on_a_429_waits_at_most_max_backoff_and_is_reported_capped():
    client, sleeps, _ = _client([(429, {"Retry-After": "99999999999"}, {})] * 3, max_retries=2, max_backoff=7)
    with pytest.raises(ConnectorError) as err:
        client.request("GET", "http://psa.example/x")
    assert sleeps == [7.0, 7.0] and err.value.retry_after == 6 * 3600.0


# ---- a company record whose billingContact is not an object -------------------------------------


@pytest.mark.parametrize("ref", ["Dana Reyes", ["2501"], 2501, True])
def test_a_company_whose_billing_contact_is_not_an_object_does_not_stop_its_contacts(cw, cw_services, ref):
    world = contoso(cw)
    world["company"]["billingContact"] = ref  # the shape the mapping did not foresee

    report = poll(cw_services)

    assert report.error is None, report.error
    contacts = {r[0]: r[1] for r in cw_services.store.all("SELECT remote_id, role FROM contacts")}
    assert contacts == {"2501": "billing", "2502": "viewer", "2601": "billing"}, contacts
    assert invoice_numbers(cw_services) == {"INV-1042", "INV-1043", "INV-1044", "INV-2001"}


# ---- ids sent as strings ------------------------------------------------------------------------


def _string_id(iid: int):
    def edit(body: bytes) -> bytes:
        out = re.sub(rf'"id": {iid}(?=[,}}])'.encode(), f'"id": "{iid}"'.encode(), body)
        assert out != body, "the id is not in this answer"
        return out

    return edit


def test_an_invoice_whose_id_comes_as_a_json_string_is_not_closed_by_the_deletion_check(cw, cw_services):
    world = contoso(cw)
    invoice(cw, 9350, "INV-STR", world["company"], kind="agreement", total="40.00")
    # The list of the sweep and the id-only list of the deletion check both send the id as text.
    cw.rewrite_next(INVOICES, _string_id(9350))
    cw.rewrite_next(INVOICES, _string_id(9350))

    report = poll(cw_services, full=True)

    assert report.error is None, report.error
    row = cw_services.store.one("SELECT status, total_minor FROM invoices WHERE remote_id = '9350'")
    assert row is not None and (row["status"], row["total_minor"]) == ("open", 4000), dict(row or {})
    assert report.counts.get("deleted", Counter())["deleted"] == 0, report.counts


# ---- the same record twice in one page ----------------------------------------------------------


def test_an_invoice_listed_twice_in_a_page_good_then_bad_keeps_the_bad_listing_in_quarantine(cw, cw_services):
    contoso(cw)

    def twice(records):
        good = next(r for r in records if r["id"] == 9001)
        bad = dict(good, total="abc")
        records.insert(records.index(good) + 1, bad)
        return records

    cw.rewrite_next(INVOICES, edit_json(twice))

    report = poll(cw_services)

    assert report.error is None
    # The page said two different things about invoice 9001: someone must look.
    reasons = open_quarantine(cw_services)
    assert "9001" in reasons and "total" in reasons["9001"], reasons


def test_an_invoice_listed_twice_in_a_page_ends_as_its_last_listing(cw, cw_services):
    contoso(cw)
    assert poll(cw_services).error is None
    assert cw_services.store.scalar("SELECT total_minor FROM invoices WHERE remote_id = '9001'") == 125000

    def twice(records):
        stored = next(r for r in records if r["id"] == 9001)
        changed = dict(stored, total=1300.0, subtotal=1300.0, agreementAmount=1300.0, balance=1300.0)
        records.insert(records.index(stored), changed)  # first the edit, then the record as stored
        return records

    cw.rewrite_next(INVOICES, edit_json(twice))

    assert poll(cw_services).error is None
    # The last listing of a record is what the PSA says now (the same rule as across pages).
    assert cw_services.store.scalar("SELECT total_minor FROM invoices WHERE remote_id = '9001'") == 125000


def test_two_new_invoices_with_the_same_number_in_one_page_keep_the_first_and_quarantine_the_second(
    cw, cw_services
):
    world = contoso(cw)
    invoice(cw, 9401, "INV-DUP", world["company"], kind="agreement", total="10.00")
    invoice(cw, 9402, "INV-DUP", world["other_company"], kind="agreement", total="20.00")

    assert poll(cw_services).error is None

    rows = cw_services.store.all("SELECT remote_id, total_minor FROM invoices WHERE number = 'INV-DUP'")
    assert [tuple(r) for r in rows] == [("9401", 1000)]
    assert open_quarantine(cw_services) == {
        "9402": "invoice number INV-DUP is already used by invoice 9401 at the source"
    }


# ---- invoice numbers reused -----------------------------------------------------------------------


def test_an_invoice_number_reissued_after_the_old_invoice_was_deleted_is_imported(cw, cw_services):
    world = contoso(cw)
    old = invoice(cw, 9801, "INV-R1", world["company"], kind="agreement", total="50.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    assert invoice_numbers(cw_services) >= {"INV-R1"}

    # At the PSA: the invoice is deleted and reissued under the same number with a new id.
    cw.invoices.remove(old)
    new = invoice(cw, 9802, "INV-R1", world["company"], kind="agreement", total="55.00")
    # Stamped before the cursor: only the full sweep reads it, before the deletion check frees its number.
    new["_info"]["lastUpdated"] = "2026-02-01T00:00:00Z"

    first = poll(cw_services, full=True)  # the sweep, then the deletion check
    second = poll(cw_services)
    third = poll(cw_services)

    assert (first.error, second.error, third.error) == (None, None, None)
    rows = cw_services.store.all(
        "SELECT remote_id, status, total_minor FROM invoices WHERE number = 'INV-R1'"
    )
    assert sorted(tuple(r) for r in rows) == [("9801", "deleted", 5000), ("9802", "open", 5500)], [
        tuple(r) for r in rows
    ]
    assert "9802" not in open_quarantine(cw_services), open_quarantine(cw_services)


def test_two_invoices_that_swap_numbers_at_the_source_are_not_quarantined_forever(cw, cw_services):
    world = contoso(cw)
    a = invoice(cw, 9811, "INV-SW1", world["company"], kind="agreement", total="10.00")
    b = invoice(cw, 9812, "INV-SW2", world["company"], kind="agreement", total="20.00")
    stamp_all(cw)
    assert poll(cw_services).error is None
    cw.touch(a, when=FIXED - timedelta(minutes=2), invoiceNumber="INV-SW2")
    cw.touch(b, when=FIXED - timedelta(minutes=2), invoiceNumber="INV-SW1")

    for _ in range(3):
        assert poll(cw_services).error is None

    got = {
        r[0]: r[1]
        for r in cw_services.store.all(
            "SELECT remote_id, number FROM invoices WHERE remote_id IN ('9811', '9812')"
        )
    }
    reasons = open_quarantine(cw_services)
    # Either applied (both numbers are free once both move) or held with a reason that is true.
    assert got == {"9811": "INV-SW2", "9812": "INV-SW1"} or all(
        "at the source" not in reasons.get(r, "") for r in ("9811", "9812")
    ), (got, reasons)


# ---- records waiting for a company ----------------------------------------------------------------


def test_a_contact_waiting_for_its_company_that_moves_to_another_unknown_company_is_not_said_to_be_gone(
    cw, cw_services
):
    world = contoso(cw)
    ref = {"id": 500, "identifier": "Late", "name": "Late Arrival Ltd"}
    waiting = contact(cw, 5001, ref, "Wai", "Ting", "wait@late.example", billing=True)
    stamp_all(cw)
    assert poll(cw_services).error is None
    assert open_quarantine(cw_services, "contact") == {"5001": "contact's company 500 is unknown"}

    # The company arrives; meanwhile the contact moved to company 600, whose record is broken.
    company(cw, 500, "Late Arrival Ltd", "Late")["_info"]["lastUpdated"] = "2026-03-09T00:00:00Z"
    broken = cw.add_company(
        {"id": 600, "identifier": "Broken", "_info": {"lastUpdated": "2026-03-09T00:00:00Z"}}
    )
    cw.touch(
        waiting,
        when=datetime(2026, 3, 9, tzinfo=UTC),
        company={"id": 600, "identifier": "Broken", "name": "?"},
    )
    assert poll(cw_services).error is None
    assert open_quarantine(cw_services, "contact") == {"5001": "contact's company 600 is unknown"}

    # Company 600 is fixed at the PSA: the contact that waited for it comes in.
    cw.touch(broken, when=datetime(2026, 3, 10, 14, 0, tzinfo=UTC), name="Broken No More Ltd")
    assert poll(cw_services).error is None
    assert open_quarantine(cw_services, "contact") == {}
    row = cw_services.store.one(
        "SELECT c.remote_id FROM contacts t JOIN clients c ON c.id = t.client_id WHERE t.remote_id = '5001'"
    )
    assert row is not None and row[0] == "600"
    assert world  # the rest of the world synced alongside


def test_an_invoice_whose_company_arrives_later_and_is_then_renamed_stays_with_that_client(cw, cw_services):
    contoso(cw)
    ref = {"id": 700, "identifier": "Later", "name": "Later Ltd"}
    invoice(cw, 9701, "INV-LATE", ref, kind="agreement", total="12.34")
    stamp_all(cw)
    assert poll(cw_services).error is None
    assert open_quarantine(cw_services) == {"9701": "invoice's company 700 is unknown"}

    late = company(cw, 700, "Later Ltd", "Later")
    late["_info"]["lastUpdated"] = "2026-03-09T00:00:00Z"
    assert poll(cw_services).error is None
    assert open_quarantine(cw_services) == {}
    cw.touch(late, when=datetime(2026, 3, 10, 14, 0, tzinfo=UTC), name="Later Renamed Ltd")
    assert poll(cw_services).error is None

    row = cw_services.store.one(
        "SELECT c.remote_id, c.name, i.total_minor FROM invoices i JOIN clients c ON c.id = i.client_id "
        "WHERE i.remote_id = '9701'"
    )
    assert tuple(row) == ("700", "Later Renamed Ltd", 1234)


# ---- amounts past the guard on lines ----------------------------------------------------------------


def test_a_halo_line_tax_beyond_any_real_invoice_is_quarantined_not_stored(tmp_path, frozen_clock):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(3, companies=1)
        world._record(specs[1].remote_id)["lines"][0]["tax_amount"] = 1e14  # 10^16 cents on one line
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        report = poll(services)

        assert report.error is None, report.error
        stored = services.store.scalar("SELECT MAX(ABS(tax_minor)) FROM invoice_lines")
        reasons = open_quarantine(services)
        assert specs[1].remote_id in reasons and "beyond any real invoice" in reasons[specs[1].remote_id], (
            reasons,
            stored,
        )
    finally:
        world.fake.stop()


def test_a_line_unit_price_beyond_any_real_invoice_is_quarantined_not_stored(cw, cw_services):
    world = contoso(cw)
    lines = [
        {"description": "Free sample", "quantity": 0, "unitPrice": 1e14, "amount": 0.0},
        {"description": "Work", "quantity": 1, "amount": 10.0},
    ]
    invoice(cw, 9601, "INV-UNIT", world["company"], kind="agreement", total="10.00", lines=lines)

    assert poll(cw_services).error is None

    stored = cw_services.store.scalar(
        "SELECT MAX(ABS(l.unit_price_minor)) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
        "WHERE i.remote_id = '9601'"
    )
    reasons = open_quarantine(cw_services)
    # Stored, the invoice page cannot show it: money() refuses more than 10^15 minor units.
    assert stored is None and reasons == {
        "9601": "line 1: amount 10000000000000000 minor units is out of range"
    }


def test_a_stored_amount_past_the_guard_cannot_be_shown():
    # Why the two tests above matter: every invoice page formats line amounts with money().
    with pytest.raises(MoneyError):
        money(10**16, "USD")


@pytest.mark.parametrize(
    ("currency", "total", "minor"),
    [
        ("KWD", 1.234, 1234),
        ("JPY", 1000, 1000),
        ("BHD", "0.001", 1),
        ("USD", "1250.00", 125000),
        ("EUR", 0.1, 10),
        ("USD", -0.0, 0),
    ],
)
def test_exotic_currencies_and_amounts_are_stored_to_the_minor_unit(cw, cw_services, currency, total, minor):
    world = contoso(cw)
    rec = invoice(cw, 9611, "INV-CUR", world["company"], kind="agreement", total="1.00")
    rec.update(
        currency={"currencyCode": currency}, total=total, subtotal=total, agreementAmount=total, balance=total
    )

    assert poll(cw_services).error is None

    row = cw_services.store.one("SELECT currency, total_minor FROM invoices WHERE remote_id = '9611'")
    assert row is not None and tuple(row) == (currency, minor), (
        dict(row) if row else open_quarantine(cw_services)
    )


@pytest.mark.parametrize("total", [1000.5, "12.345", 0.30000000000000004])
def test_amounts_with_more_places_than_the_currency_are_quarantined_naming_the_field(cw, cw_services, total):
    world = contoso(cw)
    rec = invoice(cw, 9612, "INV-FRAC", world["company"], kind="agreement", total="1.00")
    rec.update(
        currency={"currencyCode": "JPY" if total == 1000.5 else "USD"},
        total=total,
        subtotal=total,
        agreementAmount=total,
        balance=total,
    )

    assert poll(cw_services).error is None

    reasons = open_quarantine(cw_services)
    assert "9612" in reasons and reasons["9612"].startswith("total: "), reasons


# ---- dates at the edges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "fragment"),
    [
        ("0000-01-01T00:00:00Z", "unparseable dueDate"),
        ("2025-02-29T00:00:00Z", "unparseable dueDate"),
        ("2026-13-01T00:00:00Z", "unparseable dueDate"),
        ("", "missing dueDate"),
    ],
)
def test_impossible_due_dates_are_quarantined_naming_the_field(cw, cw_services, due, fragment):
    world = contoso(cw)
    invoice(cw, 9621, "INV-DATE", world["company"], kind="agreement", total="10.00", dueDate=due)

    assert poll(cw_services).error is None

    reasons = open_quarantine(cw_services)
    assert "9621" in reasons and fragment in reasons["9621"], reasons


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        ("2024-02-29T00:00:00Z", "2024-02-29"),
        ("2026-03-31T23:30:00-05:00", "2026-03-31"),
        ("2026-03-31T00:30:00+14:00", "2026-03-31"),
    ],
)
def test_leap_days_and_dates_with_offsets_keep_the_vendors_calendar_date(cw, cw_services, due, expected):
    world = contoso(cw)
    invoice(cw, 9622, "INV-LEAP", world["company"], kind="agreement", total="10.00", dueDate=due)

    assert poll(cw_services).error is None

    assert cw_services.store.scalar("SELECT due_on FROM invoices WHERE remote_id = '9622'") == expected


@pytest.mark.parametrize("due", ["2026-03-31garbage", "2026-03-31T99:99:99Z", "2026-03-31 or so"])
def test_a_due_date_with_trailing_garbage_is_quarantined_not_cut_to_ten_characters(cw, cw_services, due):
    world = contoso(cw)
    invoice(cw, 9623, "INV-GARB", world["company"], kind="agreement", total="10.00", dueDate=due)

    assert poll(cw_services).error is None

    reasons = open_quarantine(cw_services)
    stored = cw_services.store.scalar("SELECT due_on FROM invoices WHERE remote_id = '9623'")
    assert "9623" in reasons and "dueDate" in reasons["9623"], (reasons, stored)


def test_a_due_date_in_the_year_9999_is_quarantined_before_it_overflows_date_arithmetic(cw, cw_services):
    from app.core.autopay import AutopayRule, charge_on

    world = contoso(cw)
    invoice(
        cw,
        9624,
        "INV-9999",
        world["company"],
        kind="agreement",
        total="10.00",
        dueDate="9999-12-31T00:00:00Z",
    )

    assert poll(cw_services).error is None

    row = cw_services.store.one("SELECT issued_on, due_on FROM invoices WHERE remote_id = '9624'")
    if row is not None:  # stored: autopay's date arithmetic on it must not crash
        rule = AutopayRule(1, True, None, ("agreement",), None, None, "on_due", 0, 3, "each", False, "", "")
        try:
            charge_on(rule, row)
        except OverflowError as exc:
            pytest.fail(f"an invoice due 9999-12-31 was stored and autopay's charge_on crashes: {exc}")


# ---- pages that repeat forever ----------------------------------------------------------------------


def _response(body) -> requests.Response:
    r = requests.Response()
    r.status_code = 200
    r._content = json.dumps(body).encode()
    r.url = "http://psa.example/"
    r.encoding = "utf-8"
    return r


def test_a_halo_server_that_answers_the_same_full_page_for_every_page_number_stops_with_an_error(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        services = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock)
        halo = services.psa
        calls = []

        def same_page(path, params):
            calls.append(params.get("page_no"))
            return {"clients": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}], "record_count": None}

        halo._get_json = same_page
        with pytest.raises(ConnectorError):
            for _ in itertools.islice(halo.companies(None), 200):
                pass
        assert len(calls) < 200, "paged forever through the same page"
    finally:
        world.fake.stop()


def test_an_autotask_server_that_answers_empty_pages_with_fresh_next_urls_stops_with_an_error(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        services = build_services(world.config(tmp_path), clock=frozen_clock)
        at = services.psa
        at._zone = "http://zone.example/ATServicesRest"
        counter = itertools.count()

        def empty(url, body):
            return _response(
                {"items": [], "pageDetails": {"nextPageUrl": f"http://zone.example/next/{next(counter)}"}}
            )

        at._post = empty
        with pytest.raises(ConnectorError):
            for _ in itertools.islice(at.companies(None), 200):
                pass
    finally:
        world.fake.stop()


def test_an_autotask_next_page_that_repeats_the_last_page_stops_with_an_error(tmp_path, frozen_clock):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        services = build_services(world.config(tmp_path), clock=frozen_clock)
        at = services.psa
        at._zone = "http://zone.example/ATServicesRest"
        counter = itertools.count()

        def repeat(url, body):
            n = next(counter)
            return _response(
                {
                    "items": [{"id": 1, "companyName": "A"}],
                    "pageDetails": {"nextPageUrl": f"http://zone.example/next/{n}"},
                }
            )

        at._post = repeat
        with pytest.raises(ConnectorError, match="the same page again"):
            for _ in itertools.islice(at.companies(None), 200):
                pass
    finally:
        world.fake.stop()


# ---- a stop and an error in the middle of a PageBatch ---------------------------------------------


@pytest.mark.parametrize("kind", ["connectwise", "autotask", "halopsa"])
def test_a_stop_requested_in_the_middle_of_a_batch_commits_whole_pages_and_the_rerun_ends_like_one_run(
    tmp_path, kind
):
    world = make_world(kind, lambda: FIXED)
    try:
        world.populate(900, companies=12)
        (tmp_path / "clean").mkdir()
        (tmp_path / "stopped").mkdir()
        clean = build_services(world.config(tmp_path / "clean", page_size=100))
        assert poll_psa.run(clean).error is None
        expected = _contents(Path(clean.config.db_path))

        services = build_services(world.config(tmp_path / "stopped", page_size=100))

        def progress(obj, n):
            if obj == "invoices" and n >= 300:
                stop_flag.request()

        try:
            report = poll_psa.run(services, progress=progress)
        finally:
            stop_flag.reset()
        assert report.error and "stopped on request" in report.error
        stored = services.store.scalar("SELECT COUNT(*) FROM invoices")
        assert stored == 400, stored  # the page after the request is the last one applied
        cursor = services.store.scalar("SELECT cursor FROM sync_state WHERE object = 'invoices'")
        last = services.store.scalar("SELECT MAX(CAST(remote_id AS INTEGER)) FROM invoices")
        assert f'"after":{last}' in cursor or f'"after": {last}' in cursor, (cursor, last)
        counts = json.loads(
            services.store.scalar("SELECT counts_json FROM sync_state WHERE object = 'invoices'")
        )
        assert counts == {"created": 400}, counts

        assert poll_psa.run(services).error is None
        assert _contents(Path(services.config.db_path)) == expected
    finally:
        world.fake.stop()
    assert world.violations == []


def test_a_page_that_is_not_json_in_the_middle_of_a_batch_keeps_the_pages_before_with_their_cursor_and_counts(
    tmp_path,
):
    world = make_world("connectwise", lambda: FIXED)
    try:
        world.populate(900, companies=12)
        (tmp_path / "clean").mkdir()
        (tmp_path / "broken").mkdir()
        clean = build_services(world.config(tmp_path / "clean", page_size=100))
        assert poll_psa.run(clean).error is None
        expected = _contents(Path(clean.config.db_path))

        services = build_services(world.config(tmp_path / "broken", page_size=100))
        for _ in range(5):  # five pages as sent, then one cut short
            world.fake.rewrite_next(INVOICES, lambda body: body)
        world.fake.rewrite_next(INVOICES, lambda body: body[: len(body) // 2])
        report = poll_psa.run(services)

        assert report.error and "not JSON" in report.error, report.error
        assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 500
        state = services.store.one(
            "SELECT cursor, counts_json, last_error FROM sync_state WHERE object = 'invoices'"
        )
        last = services.store.scalar("SELECT MAX(CAST(remote_id AS INTEGER)) FROM invoices")
        assert f'"after":{last}' in state["cursor"], dict(state)
        assert json.loads(state["counts_json"]) == {"created": 500}
        assert "not JSON" in state["last_error"]

        assert poll_psa.run(services).error is None
        assert _contents(Path(services.config.db_path)) == expected
    finally:
        world.fake.stop()
    assert world.violations == []


# ---- PSA settings at their edges ----------------------------------------------------------------


def _psa_config(tmp_path, body: str) -> Path:
    text = _base(tmp_path)
    files = _FILES_SECTION.format(path=tmp_path / "data" / "psa-export")
    assert files in text
    return _write(tmp_path, text.replace(files, body, 1))


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (_cw().replace('private_key = "priv"', 'private_key = "   "'), "psa.connectwise.private_key"),
        (_cw(base_url="", section='codebase = "v4 6 release/"'), "psa.connectwise.codebase"),
        (_cw(section='payment_type = ""'), "psa.connectwise.payment_type"),
        (_cw(base_url="", section='site = "na.myconnectwise.net\\t"'), "psa.connectwise.site"),
        (_cw(section="page_size = true"), "psa.connectwise.page_size"),
        (_cw(section="page_size = 1.5"), "psa.connectwise.page_size"),
        (_cw(section='currency = "XTS"'), "psa.connectwise.currency"),
    ],
    ids=[
        "blank private key",
        "codebase with spaces",
        "empty payment type",
        "site with a tab",
        "page size true",
        "page size 1.5",
        "test currency XTS",
    ],
)
def test_a_psa_setting_at_its_edge_that_could_never_work_is_refused_naming_its_key(tmp_path, body, key):
    path = _psa_config(tmp_path, body)
    try:
        cfg = load_config(path)
    except ConfigError as err:
        assert key in str(err), str(err)
        return
    pytest.fail(f"{key} accepted: {cfg.psa.connectwise!r}")


def test_a_codebase_given_without_its_slash_still_makes_a_working_api_url(tmp_path, frozen_clock):
    from sync.registry import psa_source  # noqa: F401 - the registry builds the connector

    path = _psa_config(tmp_path, _cw(base_url="", section='codebase = "v4_6_release"'))
    try:
        cfg = load_config(path)
    except ConfigError:
        return  # refused at start: also fine
    services = build_services(cfg, clock=frozen_clock)
    assert services.psa._base == "https://na.myconnectwise.net/v4_6_release/apis/3.0", services.psa._base


def test_an_empty_halo_scope_that_no_token_request_can_carry_is_refused_at_start(tmp_path):
    body = (
        'kind = "halopsa"\n[psa.halopsa]\nbase_url = "https://msp.halopsa.com/api"\nclient_id = "abc"\n'
        'client_secret = "s3cret"\nscope = ""\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(_psa_config(tmp_path, body))
    assert "psa.halopsa.scope" in str(err.value)


# ---- Halo: a record_count that contradicts a full page -----------------------------------------


def test_a_halo_record_count_smaller_than_the_pages_it_sends_does_not_end_the_sweep_silently(
    tmp_path, frozen_clock
):
    from tests.fakes.halopsa import halo_time

    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(6, companies=1)
        # Newest first by id: what the first page holds is the newest, the rest older.
        for n, spec in enumerate(specs):
            world._record(spec.remote_id)["last_modified"] = halo_time(FIXED - timedelta(days=1 + n))
        services = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock)

        def stale_count(body: bytes) -> bytes:
            data = json.loads(body)
            data["record_count"] = 2  # a count taken before the other four invoices existed
            return json.dumps(data).encode()

        world.fake.rewrite_next("/Invoice", stale_count)
        first = poll(services)
        second = poll(services)

        got = {r[0] for r in services.store.all("SELECT remote_id FROM invoices")}
        # Either every invoice arrives, or the poll says the listing was cut short.
        assert got == {s.remote_id for s in specs} or first.error or second.error, (got, first.error)
    finally:
        world.fake.stop()


# ---- Autotask: an invoice waiting for its company, moved at the PSA to another unknown one ------


def test_an_autotask_invoice_waiting_for_its_company_then_moved_to_another_unknown_company_comes_in_later(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        world.populate(2, companies=1)
        waiting = world.invoice(10, 500, [1_000, 500, 250], 100)
        # Created days before the others: the overlap of the next sweeps does not read it again.
        world._record(waiting.remote_id)["createDateTime"] = "2025-12-01T00:00:00.000Z"
        services = build_services(world.config(tmp_path), clock=frozen_clock)
        assert poll(services).error is None
        assert open_quarantine(services) == {waiting.remote_id: "invoice's company 500 is unknown"}

        world.company(500, "Five Hundred Ltd", "ap@500.example")
        world.company(600, "", "ap@600.example")  # a company record without a name: quarantined
        world.move(waiting.remote_id, 600)  # Autotask's sweep cannot see a move (no modified date)
        assert poll(services).error is None
        assert open_quarantine(services) == {waiting.remote_id: "invoice's company 600 is unknown"}

        world.rename_company(600, "Six Hundred Ltd")
        assert poll(services).error is None
        row = services.store.one(
            "SELECT c.remote_id, i.total_minor FROM invoices i JOIN clients c ON c.id = i.client_id "
            "WHERE i.remote_id = ?",
            (waiting.remote_id,),
        )
        assert row is not None and tuple(row) == ("600", 1_850), open_quarantine(services)
    finally:
        world.fake.stop()
    assert world.violations == []


# ---- parent links -------------------------------------------------------------------------------


def test_an_autotask_company_naming_itself_as_parent_is_its_own_payer_without_an_exception(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        world.populate(2, companies=2)
        next(c for c in world.fake.companies if c["id"] == 100)["parentCompanyID"] = 100
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        assert poll(services).error is None

        assert services.store.scalar("SELECT parent_id FROM clients WHERE remote_id = '100'") is None
        exceptions = [tuple(r) for r in services.store.all("SELECT kind, summary FROM exceptions")]
        # ConnectWise and HaloPSA read "itself as parent" as "no parent" (see parent_of, _invoiced_to).
        assert exceptions == [], exceptions
    finally:
        world.fake.stop()


def test_companies_that_name_each_other_as_parent_make_one_link_and_one_exception(cw, cw_services):
    a = company(cw, 910, "Alpha Holdings", "Alpha")
    b = company(cw, 911, "Beta Branch", "Beta")
    a["parentCompany"] = {"id": 911, "identifier": "Beta", "name": "Beta Branch"}
    b["parentCompany"] = {"id": 910, "identifier": "Alpha", "name": "Alpha Holdings"}

    report = poll(cw_services)
    assert report.error is None
    assert poll(cw_services).error is None  # and again: no loop, no second exception

    parents = {
        r[0]: r[1]
        for r in cw_services.store.all(
            "SELECT c.remote_id, p.remote_id FROM clients c LEFT JOIN clients p ON p.id = c.parent_id"
        )
    }
    assert parents in ({"910": None, "911": "910"}, {"910": "911", "911": None}), parents
    kinds = [r[0] for r in cw_services.store.all("SELECT kind FROM exceptions")]
    assert kinds == ["parent_link"], kinds


# ---- 401/403 in the middle of a batch ----------------------------------------------------------------


def test_a_403_in_the_middle_of_the_invoices_keeps_the_pages_before_and_stops_the_connector_with_one_request(
    tmp_path,
):
    world = make_world("connectwise", lambda: FIXED)
    try:
        world.populate(500, companies=5)
        services = build_services(world.config(tmp_path, page_size=100))
        for _ in range(3):
            world.fake.rewrite_next(INVOICES, lambda body: body)
        real = world.fake.rewrites.apply

        def then_forbid(url_path, answer):
            out = real(url_path, answer)
            if url_path.endswith(INVOICES) and not any(
                r.path.endswith(INVOICES) for r in world.fake.rewrites._items
            ):
                world.fake.rewrites.apply = real
                world.fake.fail_next(403, path=INVOICES)
            return out

        world.fake.rewrites.apply = then_forbid
        report = poll_psa.run(services)

        assert report.stopped and "HTTP 403" in report.error, report.error
        stored = services.store.scalar("SELECT COUNT(*) FROM invoices")
        assert stored % 100 == 0 and 300 <= stored <= 400, stored
        forbidden = len([r for r in world.fake.requests if r.path == INVOICES])
        before = len(world.fake.requests)
        again = poll_psa.run(services)
        assert again.stopped and len(world.fake.requests) == before, "a stopped connector sent requests"
        assert forbidden <= 5
    finally:
        world.fake.stop()


# ---- change stamps at the ends of the calendar ----------------------------------------------------

STAMP_FIELD = {"connectwise": None, "autotask": "createDateTime", "halopsa": "last_modified"}


@pytest.mark.parametrize("stamp", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+05:00"])
@pytest.mark.parametrize("kind", ["connectwise", "autotask", "halopsa"])
def test_a_change_stamp_that_leaves_the_calendar_in_utc_does_not_crash_thepoll(
    tmp_path, frozen_clock, kind, stamp
):
    world = make_world(kind, frozen_clock.utc_now)
    try:
        specs = world.populate(4, companies=1)
        rec = world._record(specs[1].remote_id)
        if kind == "connectwise":
            rec["_info"]["lastUpdated"] = stamp
        else:
            rec[STAMP_FIELD[kind]] = stamp
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        report = poll(services)
        # An advisory stamp: the invoice imports (or is quarantined naming the stamp); the rest imports.
        assert report.error is None, report.error
        got = {r[0] for r in services.store.all("SELECT remote_id FROM invoices")}
        assert got >= {s.remote_id for s in specs} - {specs[1].remote_id}, got
        again = poll(services)
        assert again.error is None, again.error
    finally:
        world.fake.stop()


# ---- line amounts past Decimal's precision ---------------------------------------------------------


@pytest.mark.parametrize("value", [1e30, "1e30"])
@pytest.mark.parametrize("kind", ["autotask", "halopsa"])
def test_a_line_amount_past_decimal_precision_is_quarantined_and_does_not_crash_thepoll(
    tmp_path, frozen_clock, kind, value
):
    world = make_world(kind, frozen_clock.utc_now)
    try:
        specs = world.populate(4, companies=1)
        bad = specs[2].remote_id
        if kind == "halopsa":
            world._record(bad)["lines"][0]["net_amount"] = value
        else:
            item = next(i for i in world.fake.billing_items if str(i["invoiceID"]) == bad)
            item["extendedPrice"] = value
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        report = poll(services)

        assert report.error is None, report.error
        assert {r[0] for r in services.store.all("SELECT remote_id FROM invoices")} == {
            s.remote_id for s in specs
        } - {bad}
        reasons = open_quarantine(services)
        assert set(reasons) == {bad}, reasons
    finally:
        world.fake.stop()


def test_a_connectwise_line_quantity_past_decimals_exponent_is_quarantined_and_does_not_crash(
    cw, cw_services
):
    world = contoso(cw)
    lines = [{"description": "Work", "quantity": "1e999999", "unitPrice": 10.0}]
    invoice(cw, 9631, "INV-QTY", world["company"], kind="agreement", total="10.00", lines=lines)

    report = poll(cw_services)

    assert report.error is None
    assert invoice_numbers(cw_services) == {"INV-1042", "INV-1043", "INV-1044", "INV-2001"}
    reasons = open_quarantine(cw_services)
    assert set(reasons) == {"9631"} and "line 1" in reasons["9631"], reasons


# ---- the deletion check's id listing repeats a page ------------------------------------------------


def test_a_connectwise_id_listing_that_repeats_its_first_page_closes_no_invoice(tmp_path):
    world = make_world("connectwise", lambda: FIXED)
    try:
        world.populate(1200, companies=12)
        services = build_services(world.config(tmp_path, page_size=500))
        assert poll_psa.run(services).error is None
        assert services.store.scalar("SELECT COUNT(*) FROM invoices WHERE status = 'open'") == 1200

        first: list[bytes] = []
        for _ in range(3):  # the three pages of the sweep, as sent
            world.fake.rewrite_next(INVOICES, lambda body: body)

        def keep(body: bytes) -> bytes:
            first.append(body)
            return body

        world.fake.rewrite_next(INVOICES, keep)  # ids 1-1000
        world.fake.rewrite_next(INVOICES, lambda body: first[0])  # "ids after 1000": the same page again
        report = poll_psa.run(services, full=True)

        closed = services.store.scalar("SELECT COUNT(*) FROM invoices WHERE status = 'deleted'")
        assert closed == 0, f"{closed} invoices closed as deleted; report error: {report.error}"
        assert report.error and "invoice_ids" in report.error, report.error
    finally:
        world.fake.stop()


def test_an_autotask_company_id_in_unicode_digits_quarantines_its_invoice_and_does_not_stop_thepoll(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        specs = world.populate(3, companies=1)
        world._record(specs[1].remote_id)["companyID"] = "\u00b2"  # "²": str.isdigit() but not int()
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        report = poll(services)

        assert report.error is None, report.error
        assert {r[0] for r in services.store.all("SELECT remote_id FROM invoices")} == {
            specs[0].remote_id,
            specs[2].remote_id,
        }
        assert set(open_quarantine(services)) == {specs[1].remote_id}
    finally:
        world.fake.stop()


def test_every_stored_amount_is_an_integer_column_value(psa_world, tmp_path, frozen_clock):
    psa_world.populate(30, companies=3)
    services = build_services(psa_world.config(tmp_path, page_size=7), clock=frozen_clock)
    assert poll(services).error is None
    kinds = {
        r[0]
        for r in services.store.all(
            "SELECT typeof(subtotal_minor) || typeof(tax_minor) || typeof(total_minor) || "
            "typeof(paid_elsewhere_minor) FROM invoices UNION SELECT typeof(unit_price_minor) || "
            "typeof(amount_minor) || typeof(tax_minor) FROM invoice_lines"
        )
    }
    assert kinds == {"integer" * 4, "integer" * 3}, kinds
