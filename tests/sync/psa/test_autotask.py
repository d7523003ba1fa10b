"""Autotask: pure mapping on vendor-shaped records, then the real connector over loopback HTTP against
the spec-checking fake (tests/fakes/autotask.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from app.config import AutotaskSettings, Secret
from app.core.clock import FrozenClock
from sync import sweep
from sync.base import ConnectorError, PaymentWriteBack, RecordError, Rejected, RemoteInvoice
from sync.http import HttpClient
from sync.psa.autotask import Autotask, AutotaskRules, company_from_api, contact_from_api, invoice_from_api
from tests.fakes.autotask import AutotaskFake

SHARED = Path(__file__).resolve().parents[2] / "specs"
T0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


def vendor_fixture(name: str) -> dict[str, Any]:
    """A record from the vendor-shaped Autotask fixtures in tests/fixtures/autotask."""
    path = Path(__file__).resolve().parents[2] / "fixtures" / "autotask" / name
    return json.loads(path.read_text(encoding="utf-8"))["data"]["items"][0]


def invoice(**over: Any) -> dict[str, Any]:
    rec = {
        "id": 812,
        "companyID": 174,
        "invoiceNumber": "AT-0812",
        "invoiceDateTime": "2026-02-01T00:00:00Z",
        "dueDate": "2026-03-03T00:00:00Z",
        "invoiceTotal": 1082.5,
        "totalTaxValue": 82.5,
        "isVoided": False,
        "paidDate": None,
        "createDateTime": "2026-02-01T08:00:00Z",
        "comments": "February",
    }
    rec.update(over)
    return rec


def items(**over: Any) -> list[dict[str, Any]]:
    base = [
        {
            "id": 1,
            "invoiceID": 812,
            "itemName": "Managed services",
            "quantity": 25.0,
            "rate": 30.0,
            "extendedPrice": 750.0,
            "taxDollars": 61.88,
            "contractID": 29684183,
            "serviceID": 3,
        },
        {
            "id": 2,
            "invoiceID": 812,
            "itemName": "Remote labour",
            "description": "Printer",
            "quantity": 2.5,
            "rate": 100.0,
            "extendedPrice": 250.0,
            "taxDollars": 20.62,
            "ticketID": 7001,
            "contractID": 29684183,
        },
    ]
    for k, v in over.items():
        base[0][k] = v
    return base


CONTRACTS = {"29684183": "Upstate Document Providers - Hosted SaaS"}


# ---- pure mapping ------------------------------------------------------------------------------


def test_company_and_contact_from_the_vendor_fixtures() -> None:
    company = company_from_api(vendor_fixture("companies_query_response.json"))
    assert (company.remote_id, company.name, company.identifier) == ("174", "Autotask Corporation", "289843")
    contact = contact_from_api(vendor_fixture("contacts_query_response.json"))
    assert (contact.company_remote_id, contact.email, contact.is_active) == (
        "174",
        "brobertson@autotaskdemo.com",
        True,
    )
    assert not contact.is_billing  # no billing title, not the primary contact


def test_a_contact_is_billing_by_title_or_as_the_primary_contact() -> None:
    raw = vendor_fixture("contacts_query_response.json")
    assert contact_from_api({**raw, "title": "Accounts Payable"}).is_billing
    assert contact_from_api({**raw, "primaryContact": True}).is_billing
    rules = AutotaskRules(primary_is_billing=False)
    assert not contact_from_api({**raw, "primaryContact": True}, rules).is_billing


def test_invoice_from_api_takes_lines_and_tax_from_billing_items() -> None:
    inv = invoice_from_api(invoice(), items(), currency="USD", contracts=CONTRACTS)
    assert (inv.total_minor, inv.tax_minor, inv.subtotal_minor, inv.paid_minor) == (108250, 8250, 100000, 0)
    assert [
        (x.description, x.quantity, x.unit_price_minor, x.amount_minor, x.tax_minor) for x in inv.lines
    ] == [
        ("Managed services", "25.0", 3000, 75000, 6188),
        ("Remote labour", "2.5", 10000, 25000, 2062),
    ]
    assert inv.lines[0].agreement == "Upstate Document Providers - Hosted SaaS"
    assert inv.lines[1].ticket == "#7001" and inv.lines[1].service == "Printer"
    assert inv.kind == "time_and_materials"  # ticket work on the contract
    assert (inv.issued_on, inv.due_on) == (date(2026, 2, 1), date(2026, 3, 3))


@pytest.mark.parametrize(
    ("lines", "total", "kind"),
    [
        ([{"contractID": 5, "serviceID": 3}], 10.0, "agreement"),
        ([{"projectID": 8}], 10.0, "project"),
        ([{"ticketID": 9}], 10.0, "time_and_materials"),
        ([{"contractID": 5}], 10.0, "agreement"),
        ([{}], 10.0, "product"),
        ([{"ticketID": 9}], -10.0, "credit_memo"),
    ],
)
def test_invoice_kind_follows_what_the_items_bill(lines: list[dict], total: float, kind: str) -> None:
    its = [
        {"id": 1, "itemName": "x", "quantity": 1, "rate": total, "extendedPrice": total, **ref}
        for ref in lines
    ]
    inv = invoice_from_api(invoice(invoiceTotal=total, totalTaxValue=0), its, currency="USD")
    assert inv.kind == kind


def test_a_paid_date_means_paid_in_full_and_isvoided_means_void() -> None:
    paid = invoice_from_api(invoice(paidDate="2026-02-20T00:00:00Z"), items(), currency="USD")
    assert paid.paid_minor == paid.total_minor == 108250
    assert invoice_from_api(invoice(isVoided=True), items(), currency="USD").is_void


def test_four_decimal_item_prices_round_half_even_and_the_remainder_is_a_rounding_line() -> None:
    its = [
        {"id": n, "itemName": "Hours", "quantity": 1, "rate": 33.3333, "extendedPrice": 33.3333}
        for n in (1, 2, 3)
    ]
    inv = invoice_from_api(invoice(invoiceTotal=100.0, totalTaxValue=0), its, currency="USD")
    assert [(x.description, x.amount_minor) for x in inv.lines] == [
        ("Hours", 3333),
        ("Hours", 3333),
        ("Hours", 3333),
        ("Rounding", 1),
    ]
    assert sum(x.amount_minor for x in inv.lines) == inv.subtotal_minor == 10000
    # Half to even: 0.005 -> 0.00 and 0.015 -> 0.02.
    halves = [
        {"id": 1, "itemName": "a", "extendedPrice": "0.005"},
        {"id": 2, "itemName": "b", "extendedPrice": "0.015"},
    ]
    inv = invoice_from_api(invoice(invoiceTotal=0.02, totalTaxValue=0), halves, currency="USD")
    assert [x.amount_minor for x in inv.lines] == [0, 2]


@pytest.mark.parametrize(
    ("over", "its", "currency", "reason"),
    [
        ({"invoiceTotal": None}, None, "USD", "missing invoiceTotal"),
        ({"companyID": None}, None, "USD", "missing companyID"),
        ({}, None, "XYZ", "unknown currency 'XYZ'"),
        ({"dueDate": "2026-02-30T00:00:00Z"}, None, "USD", "unparseable dueDate '2026-02-30T00:00:00Z'"),
        ({"invoiceTotal": 1082.555}, None, "USD", "invoiceTotal: 1082.555 has more decimal places"),
        ({}, items(extendedPrice=800.0), "USD", "lines sum to $1,050.00 but subtotal is $1,000.00"),
        ({}, items(itemName=None, description=None), "USD", "billing item 1: missing itemName"),
        ({}, items(quantity=-1), "USD", "negative quantity -1"),
    ],
)
def test_a_bad_invoice_is_rejected_with_a_specific_reason(over, its, currency, reason) -> None:
    with pytest.raises(RecordError) as err:
        invoice_from_api(invoice(**over), items() if its is None else its, currency=currency)
    assert reason in str(err.value)


# ---- over HTTP against the fake ----------------------------------------------------------------


@pytest.fixture
def fake():
    with AutotaskFake(now=lambda: T0) as at:
        yield at
        if not getattr(at, "allow_violations", False):
            assert at.violations == []


def settings(fake: AutotaskFake, **over: Any) -> AutotaskSettings:
    values: dict[str, Any] = {
        "username": fake.username,
        "secret": Secret(fake.secret),
        "integration_code": fake.integration_code,
        "discovery_url": fake.discovery_url,
    }
    return AutotaskSettings(**{**values, **over})


def connector(fake: AutotaskFake, sleeps: list[float] | None = None, **over: Any) -> Autotask:
    sleep = (sleeps if sleeps is not None else []).append
    return Autotask(settings(fake, **over), HttpClient(timeout=5, sleep=sleep), FrozenClock(T0))


def seed(fake: AutotaskFake, count: int) -> None:
    fake.add("companies", {"id": 174, "companyName": "Autotask Corporation", "currencyID": None})
    fake.add("contracts", {"id": 29684183, "companyID": 174, "contractName": "Hosted SaaS"})
    for i in range(count):
        fake.add(
            "invoices",
            invoice(
                id=1000 + i, invoiceNumber=f"AT-{i:04d}", createDateTime=f"2026-02-01T08:{i % 60:02d}:00Z"
            ),
        )
        for item in items():
            fake.add("billing_items", {**item, "id": 10_000 + i * 10 + item["id"], "invoiceID": 1000 + i})


def test_the_zone_is_discovered_once_and_every_call_carries_the_three_headers(fake: AutotaskFake) -> None:
    seed(fake, 2)
    at = connector(fake)
    list(at.invoices(None))
    list(at.companies(None))
    zone_lookups = [r for r in fake.requests if r.path == "/V1.0/ZoneInformation"]
    assert len(zone_lookups) == 1 and zone_lookups[0].query == {"user": fake.username}
    for r in fake.requests:
        assert (r.headers["apiintegrationcode"], r.headers["username"], r.headers["secret"]) == (
            fake.integration_code,
            fake.username,
            fake.secret,
        )


def test_a_configured_zone_url_skips_discovery(fake: AutotaskFake) -> None:
    seed(fake, 1)
    pages = list(connector(fake, zone_url=fake.zone_url).invoices(None))
    assert [i.number for p in pages for i in p.items] == ["AT-0000"]
    assert all(r.path != "/V1.0/ZoneInformation" for r in fake.requests)


def test_invoices_come_500_a_page_following_next_page_url_with_the_same_body(fake: AutotaskFake) -> None:
    seed(fake, 1100)
    pages = list(connector(fake).invoices(None))
    assert [len(p.items) for p in pages] == [500, 500, 100]
    assert all(isinstance(i, RemoteInvoice) and len(i.lines) == 2 for p in pages for i in p.items)
    queries = [r for r in fake.requests if r.path.startswith("/V1.0/Invoices/query")]
    assert [r.path for r in queries] == [
        "/V1.0/Invoices/query",
        "/V1.0/Invoices/query/next",
        "/V1.0/Invoices/query/next",
    ]
    assert queries[0].body == {"MaxRecords": 500, "filter": [{"op": "gt", "field": "id", "value": 0}]}
    # Between pages: the sweep's position; at the end: the newest creation time seen.
    assert sweep.decode(pages[0].cursor).after == 1499  # type: ignore[union-attr]
    assert pages[-1].cursor == "2026-02-01T08:59:00Z"


def test_a_next_page_url_that_answers_the_first_page_again_stops_the_sweep(fake: AutotaskFake) -> None:
    seed(fake, 3)
    real = fake._answer
    calls = []

    def forgetful(method, path, entity, query, offset, body):
        if entity != "Invoices":
            return real(method, path, entity, query, offset, body)
        calls.append(offset)
        return real(method, path, entity, query, 0, body)  # each nextPageUrl is new; its offset is lost

    fake._answer = forgetful
    pages = connector(fake, page_size=2).invoices(None)
    first = next(pages)
    with pytest.raises(ConnectorError, match="a next page brought no id after 1001") as err:
        next(pages)
    assert [i.number for i in first.items] == ["AT-0000", "AT-0001"]
    assert err.value.retryable is False and calls == [0, 2]


def test_an_incremental_poll_asks_for_invoices_created_voided_or_paid_after_the_cursor(
    fake: AutotaskFake,
) -> None:
    seed(fake, 3)
    at = connector(fake)
    fake.invoices[1].update(isVoided=True, voidedDate="2026-03-01T10:00:00Z")
    fake.requests.clear()
    (page,) = list(at.invoices("2026-02-15T00:00:00Z"))
    assert [(i.number, i.is_void) for i in page.items] == [("AT-0001", True)]
    query = next(r for r in fake.requests if r.path == "/V1.0/Invoices/query")
    alternatives = query.body["filter"][0]["items"][1]["items"]
    assert {a["field"] for a in alternatives} == {"createDateTime", "voidedDate", "paidDate"}
    assert page.cursor == "2026-03-01T10:00:00Z"


def test_refresh_sees_an_invoice_marked_paid_with_an_earlier_paid_date(fake: AutotaskFake) -> None:
    seed(fake, 3)
    at = connector(fake)
    fake.invoices[2]["paidDate"] = "2026-01-20T00:00:00Z"  # before any cursor: a sweep cannot see it
    assert next(iter(at.invoices("2026-03-01T00:00:00Z"))).items == []
    pages = list(at.refresh(["1000", "1002", "1999"]))
    found = {i.remote_id: i.paid_minor for p in pages for i in p.items}
    assert found == {"1000": 0, "1002": 108250}


def test_billing_items_are_asked_for_by_invoice_id_in_one_filter(fake: AutotaskFake) -> None:
    seed(fake, 4)
    list(connector(fake).invoices(None))
    (items_query,) = [r for r in fake.requests if r.path == "/V1.0/BillingItems/query"]
    assert items_query.body["filter"] == [
        {"op": "in", "field": "invoiceID", "value": [1000, 1001, 1002, 1003]}
    ]


def test_a_company_currency_becomes_the_invoice_currency(fake: AutotaskFake) -> None:
    seed(fake, 1)
    fake.add("currencies", {"id": 3, "name": "CAD", "description": "Canadian Dollar", "isActive": True})
    fake.companies[0]["currencyID"] = 3
    (page,) = list(connector(fake).invoices(None))
    assert page.items[0].currency == "CAD"


def test_a_malformed_invoice_is_rejected_and_the_rest_of_the_page_maps(fake: AutotaskFake) -> None:
    seed(fake, 3)
    fake.invoices[1]["invoiceTotal"] = None
    (page,) = list(connector(fake).invoices(None))
    assert [i.number for i in page.items if isinstance(i, RemoteInvoice)] == ["AT-0000", "AT-0002"]
    (rejected,) = [i for i in page.items if isinstance(i, Rejected)]
    assert (rejected.remote_id, rejected.reason) == ("1001", "missing invoiceTotal")


def test_429_waits_for_retry_after_and_401_is_not_retried(fake: AutotaskFake) -> None:
    seed(fake, 1)
    sleeps: list[float] = []
    at = connector(fake, sleeps)
    fake.fail_next(429, retry_after=7, path="/V1.0/Invoices")
    assert len(next(iter(at.invoices(None))).items) == 1
    assert sleeps == [7.0]
    fake.secret = "rotated"
    with pytest.raises(ConnectorError) as err:
        list(at.companies(None))
    assert (err.value.status, err.value.retryable) == (401, False) and sleeps == [7.0]


def test_autotask_cannot_take_payments(fake: AutotaskFake) -> None:
    at = connector(fake)
    assert at.supports_payment_writeback is False
    with pytest.raises(ConnectorError, match="cannot record invoice payments") as err:
        at.record_payment(PaymentWriteBack("1000", 100, "USD", date(2026, 3, 1), "ref"), key="k")
    assert not err.value.retryable and fake.requests == []


def test_invoice_ids_lists_every_invoice_with_include_fields_id(fake: AutotaskFake) -> None:
    seed(fake, 600)
    ids = list(connector(fake).invoice_ids())
    assert len(ids) == 600 and ids[0] == "1000"
    bodies = [r.body for r in fake.requests if r.path == "/V1.0/Invoices/query"]
    assert bodies == [
        {"MaxRecords": 500, "filter": [{"op": "gt", "field": "id", "value": 0}], "IncludeFields": ["id"]}
    ]


# ---- the fake refuses what Autotask refuses ------------------------------------------------------


def post(fake: AutotaskFake, path: str, body: Any, **headers: str) -> requests.Response:
    base = {
        "ApiIntegrationCode": fake.integration_code,
        "UserName": fake.username,
        "Secret": fake.secret,
        "Content-Type": "application/json",
    }
    return requests.post(
        fake.zone_url.rstrip("/") + path, data=json.dumps(body), headers={**base, **headers}, timeout=5
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"MaxRecords": 501, "filter": [{"op": "gt", "field": "id", "value": 0}]},
            "MaxRecords must be 1-500",
        ),
        ({"filter": [{"op": "gt", "field": "nosuchfield", "value": 0}]}, "unknown filter field"),
        ({"filter": [{"op": "greater", "field": "id", "value": 0}]}, "unknown filter operator"),
        ({"filter": []}, "at least one filter"),
        ({"filter": [{"op": "gt", "field": "id", "value": 0}], "Limit": 5}, "body.Limit is not a field"),
        ({"filter": [{"op": "gt", "field": "invoiceDateTime", "value": "soon"}]}, "not a valid date-time"),
    ],
)
def test_the_fake_refuses_queries_autotask_refuses(fake: AutotaskFake, body: Any, expected: str) -> None:
    fake.allow_violations = True
    resp = post(fake, "/V1.0/Invoices/query", body)
    assert resp.status_code == 400 and expected in resp.json()["errors"][0]
    assert len(fake.violations) == 1 and expected in fake.violations[0]


def test_the_fake_refuses_a_request_without_the_auth_headers(fake: AutotaskFake) -> None:
    fake.allow_violations = True
    resp = requests.post(fake.zone_url + "V1.0/Invoices/query", json={"filter": []}, timeout=5)
    assert resp.status_code == 400 and "missing required header(s) ApiIntegrationCode" in fake.violations[0]


def test_the_fake_refuses_api_calls_outside_the_users_zone(fake: AutotaskFake) -> None:
    fake.allow_violations = True
    resp = requests.post(fake.discovery_url + "/V1.0/Invoices/query", json={}, timeout=5)
    assert resp.status_code == 400 and "is not on the API user's zone" in fake.violations[0]


def test_a_query_whose_answer_is_late_is_asked_again(fake: AutotaskFake) -> None:
    seed(fake, 2)
    sleeps: list[float] = []
    at = Autotask(
        settings(fake, zone_url=fake.zone_url), HttpClient(timeout=0.5, sleep=sleeps.append), FrozenClock(T0)
    )
    fake._server.stall_next(1.5)  # the first query (a POST) times out; a query is a read, so it is repeated
    pages = list(at.invoices(None))
    assert [i.number for p in pages for i in p.items] == ["AT-0000", "AT-0001"] and sleeps == [1.0]
