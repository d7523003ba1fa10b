"""ConnectWise: pure mapping on fixture records, then the real connector over loopback HTTP
against the spec-checking fake (tests/fakes/connectwise.py)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from app.config import ConnectWiseSettings, Secret
from app.core.clock import FrozenClock
from sync import sweep
from sync.base import ConnectorError, PaymentWriteBack, RecordError, Rejected, RemoteInvoice
from sync.http import HttpClient
from sync.psa.connectwise import (
    ConnectWise,
    MappingRules,
    company_from_api,
    contact_from_api,
    invoice_from_api,
    map_or_reject,
)
from sync.registry import psa_source
from tests.fakes.connectwise import ConnectWiseFake

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "connectwise"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def fixture(name: str) -> dict[str, Any]:
    record = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    record.pop("_note", None)
    return record


def invoice(**over: Any) -> dict[str, Any]:
    record = fixture("invoice.json")
    record.update(over)
    return record


@pytest.fixture
def fake() -> Any:
    with ConnectWiseFake() as cw:
        yield cw
        if not getattr(cw, "allow_violations", False):
            assert cw.violations == []


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_settings(fake: ConnectWiseFake, **over: Any) -> ConnectWiseSettings:
    values: dict[str, Any] = {
        "base_url": fake.base_url,
        "company_id": "cwfake",
        "public_key": "pub-fake-0001",
        "private_key": Secret("priv-fake-0001"),
        "client_id": fake.client_id,
    }
    return ConnectWiseSettings(**{**values, **over})


def make_cw(fake: ConnectWiseFake, sleeps: list[float], clock: FrozenClock, **over: Any) -> ConnectWise:
    return ConnectWise(make_settings(fake, **over), HttpClient(timeout=5, sleep=sleeps.append), clock)


# ---- pure mapping ------------------------------------------------------------------------------


def test_company_from_api_maps_ids_and_billing_contact() -> None:
    company = company_from_api(fixture("company.json"))
    assert (company.remote_id, company.name, company.identifier) == (
        "90001",
        "Fake Contoso Dental",
        "cw-fake-0001",
    )
    assert company.billing_contact_remote_id == "90102"
    assert company.parent_remote_id is None
    assert company.updated_at == datetime(2025, 1, 10, 12, 0, tzinfo=UTC)


def test_company_with_garbled_timestamp_still_maps() -> None:
    raw = fixture("company.json")
    raw["_info"]["lastUpdated"] = "2015-12-24T22: 08: 22Z"  # as in the upstream django-connectwise fixture
    assert company_from_api(raw).updated_at is None


def test_company_without_name_is_rejected() -> None:
    with pytest.raises(RecordError, match="missing name"):
        company_from_api({**fixture("company.json"), "name": " "})


def test_contact_from_api_takes_default_email_and_billing_type() -> None:
    contact = contact_from_api(fixture("contact.json"))
    assert contact.email == "ap@contoso.example"
    assert (contact.remote_id, contact.company_remote_id) == ("90102", "90001")
    assert contact.is_billing and contact.is_active


def test_contact_billing_type_names_come_from_settings() -> None:
    rules = MappingRules(billing_contact_types=frozenset({"accounts payable"}))
    assert not contact_from_api(fixture("contact.json"), rules).is_billing
    raw = fixture("contact.json")
    raw["types"] = [{"id": 9, "name": "Accounts Payable"}]
    assert contact_from_api(raw, rules).is_billing


def test_contact_without_company_is_rejected() -> None:
    with pytest.raises(RecordError, match="missing company"):
        contact_from_api({**fixture("contact.json"), "company": None})


def test_invoice_from_api_maps_money_dates_references_and_category_lines() -> None:
    inv = invoice_from_api(fixture("invoice.json"))
    assert (inv.remote_id, inv.number, inv.company_remote_id) == ("90201", "CWF-0001", "90001")
    assert inv.raw["billToCompany"]["id"] == 90003  # kept in raw only
    assert (inv.subtotal_minor, inv.tax_minor, inv.total_minor, inv.paid_minor) == (19999, 1650, 21649, 6000)
    assert (inv.issued_on, inv.due_on) == (date(2025, 3, 1), date(2025, 3, 31))
    assert inv.kind == "time_and_materials"
    assert inv.ticket == "#12345 Printer down"
    assert [(x.description, x.quantity, x.amount_minor, x.ticket) for x in inv.lines] == [
        ("Services", "1", 15000, "#12345 Printer down"),
        ("Products", "1", 4999, "#12345 Printer down"),
    ]
    assert inv.is_approved and not inv.is_void
    assert inv.updated_at == datetime(2025, 3, 2, 9, 15, tzinfo=UTC)


def test_category_lines_cover_adjustments_so_they_sum_to_subtotal() -> None:
    inv = invoice_from_api(invoice(subtotal=189.99, total=206.49, adjustmentReason="Goodwill"))
    assert [(x.description, x.amount_minor) for x in inv.lines][-1] == ("Adjustments: Goodwill", -1000)
    assert sum(x.amount_minor for x in inv.lines) == inv.subtotal_minor


@pytest.mark.parametrize(
    ("over", "kind"),
    [
        (
            {
                "type": "CreditMemo",
                "total": -20.0,
                "subtotal": -20.0,
                "salesTax": 0,
                "serviceTotal": -20.0,
                "productTotal": 0,
            },
            "credit_memo",
        ),
        ({"type": "Agreement", "ticket": None, "applyToType": "Agreement"}, "agreement"),
        ({"agreement": {"id": 7, "name": "Gold Managed"}, "ticket": None, "applyToType": None}, "agreement"),
        ({"project": {"id": 8, "name": "Office move"}, "ticket": None, "applyToType": None}, "project"),
        ({"type": "Progress", "ticket": None, "applyToType": None}, "project"),
        ({"ticket": {"id": 5, "summary": "Reset"}, "applyToType": None}, "time_and_materials"),
        (
            {
                "ticket": None,
                "applyToType": None,
                "serviceTotal": 0,
                "subtotal": 49.99,
                "salesTax": 0,
                "total": 49.99,
            },
            "product",
        ),
        ({"ticket": None, "applyToType": None, "type": "Miscellaneous"}, "other"),
    ],
)
def test_invoice_kind(over: dict[str, Any], kind: str) -> None:
    assert invoice_from_api(invoice(**over)).kind == kind


def test_invoice_references_and_agreement_line() -> None:
    inv = invoice_from_api(
        invoice(
            type="Agreement",
            ticket=None,
            applyToType="Agreement",
            agreement={"id": 7, "name": "Gold Managed"},
            agreementAmount=100.0,
            serviceTotal=50.0,
            productTotal=49.99,
        )
    )
    assert inv.agreement == "Gold Managed" and inv.ticket is None
    assert [(x.description, x.agreement) for x in inv.lines] == [
        ("Agreement", "Gold Managed"),
        ("Services", "Gold Managed"),
        ("Products", "Gold Managed"),
    ]


def test_invoice_lines_extension_replaces_category_lines() -> None:
    lines = [
        {
            "description": "Managed services",
            "quantity": "2",
            "unitPrice": 75.0,
            "amount": 150.0,
            "agreement": "Gold",
        },
        {"description": "Toner", "quantity": 1, "unitPrice": 49.99, "service": "Supplies"},
    ]
    inv = invoice_from_api(invoice(lines=lines))
    assert [
        (x.description, x.quantity, x.unit_price_minor, x.amount_minor, x.agreement, x.service)
        for x in inv.lines
    ] == [("Managed services", "2", 7500, 15000, "Gold", None), ("Toner", "1", 4999, 4999, None, "Supplies")]


def test_zero_decimal_currency_is_not_multiplied() -> None:
    inv = invoice_from_api(
        invoice(
            currency={"currencyCode": "JPY"},
            total=10000.0,
            subtotal=10000.0,
            salesTax=0,
            serviceTotal=10000.0,
            productTotal=0,
            payments=0,
            credits=0,
        )
    )
    assert (inv.currency, inv.total_minor, inv.lines[0].amount_minor) == ("JPY", 10000, 10000)


def test_due_date_keeps_the_calendar_date_of_a_midnight_timestamp() -> None:
    assert invoice_from_api(invoice(dueDate="2016-03-31T00:00:00Z")).due_on == date(2016, 3, 31)
    assert invoice_from_api(invoice(dueDate="2016-03-31T00:00:00-05:00")).due_on == date(2016, 3, 31)


def test_void_and_unapproved_statuses_come_from_the_rules() -> None:
    rules = MappingRules(
        void_statuses=frozenset({"void", "cancelled"}), unapproved_statuses=frozenset({"new"})
    )
    assert invoice_from_api(invoice(status={"name": "Cancelled"}), rules).is_void
    assert not invoice_from_api(invoice(status={"name": "New"}), rules).is_approved
    assert invoice_from_api(invoice(status={"name": "Sent"}), rules).is_approved


def test_missing_currency_uses_the_configured_default() -> None:
    assert invoice_from_api(invoice(currency=None), MappingRules(currency="CAD")).currency == "CAD"


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"total": None}, "missing total"),
        (
            {"lines": [{"description": "Refund", "quantity": "-1", "amount": 199.99}]},
            "line 1: negative quantity -1",
        ),
        ({"dueDate": "2025-02-30T00:00:00Z"}, "unparseable dueDate '2025-02-30T00:00:00Z'"),
        ({"date": None}, "missing date"),
        ({"company": {"id": None}}, "missing company"),
        ({"currency": {"currencyCode": "XYZ"}}, "unknown currency 'XYZ'"),
        ({"total": 216.495}, "total: 216.495 has more decimal places than USD allows"),
        (
            {"lines": [{"description": "Labour", "quantity": 1, "amount": 90.0}]},
            "lines sum to $90.00 but subtotal is $199.99",
        ),
    ],
)
def test_bad_invoice_is_rejected_with_a_specific_reason(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordError) as err:
        invoice_from_api(invoice(**over))
    assert reason in str(err.value)


def test_a_record_of_unforeseen_shape_becomes_rejected_not_a_crash() -> None:
    raw = {**fixture("contact.json"), "communicationItems": 5}
    rejected = map_or_reject("contact", contact_from_api, raw, MappingRules())
    assert isinstance(rejected, Rejected) and rejected.remote_id == "90102"
    assert rejected.reason.startswith("unexpected record shape (TypeError")
    assert map_or_reject("invoice", invoice_from_api, ["not", "a", "dict"], MappingRules()).reason == (
        "record is not a JSON object"
    )


def test_all_problems_of_one_invoice_are_named_together() -> None:
    with pytest.raises(RecordError) as err:
        invoice_from_api(invoice(total=None, dueDate="soon", invoiceNumber=""))
    assert str(err.value) == "missing invoiceNumber; unparseable dueDate 'soon'; missing total"


# ---- over HTTP against the fake ----------------------------------------------------------------


def seed_invoices(fake: ConnectWiseFake, count: int, start: datetime = T0) -> list[dict[str, Any]]:
    return [
        fake.add_invoice(
            invoice(
                id=90300 + i,
                invoiceNumber=f"CWF-{i:04d}",
                _info={"lastUpdated": f"{start + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ}"},
            )
        )
        for i in range(count)
    ]


def test_invoices_page_until_a_short_page_and_cursor_moves_on_the_last(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    seed_invoices(fake, 5)
    pages = list(make_cw(fake, sleeps, frozen_clock, page_size=2).invoices(None))
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert all(isinstance(i, RemoteInvoice) for p in pages for i in p.items)
    # Between pages the cursor is the sweep's position; the change cursor comes with the last page.
    positions = [sweep.decode(p.cursor) for p in pages[:-1]]
    assert [(s.since, s.after) for s in positions] == [(None, 90301), (None, 90303)]  # type: ignore[union-attr]
    assert pages[-1].cursor == "2025-03-01T12:04:00Z"
    gets = [r.query for r in fake.requests]
    assert [q.get("conditions") for q in gets] == [None, "id > 90301", "id > 90303"]
    assert all(q["orderBy"] == "id asc" and q["pageSize"] == "2" for q in gets)


def test_incremental_poll_sends_the_lastupdated_condition(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    records = seed_invoices(fake, 3)
    cw = make_cw(fake, sleeps, frozen_clock)
    cursor = list(cw.invoices(None))[-1].cursor
    fake.touch(records[0], datetime(2025, 3, 5, tzinfo=UTC), total=300.0, subtotal=283.5, serviceTotal=233.51)
    fake.requests.clear()
    pages = list(cw.invoices(cursor))
    assert fake.requests[0].query["conditions"] == "lastUpdated > [2025-03-01T12:02:00Z]"
    assert [i.remote_id for i in pages[0].items] == ["90300"]
    assert pages[-1].cursor == "2025-03-05T00:00:00Z"
    # Nothing new: one empty page and the cursor stays where it was (never moves back).
    again = list(cw.invoices(pages[-1].cursor))
    assert [(p.items, p.cursor) for p in again] == [([], "2025-03-05T00:00:00Z")]


def test_a_sweep_interrupted_after_page_one_loses_nothing(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    # Pages come in id order: a low id edited late, a high id edited earlier.
    fake.add_invoice(invoice(id=1, invoiceNumber="A", _info={"lastUpdated": "2025-03-09T00:00:00Z"}))
    fake.add_invoice(invoice(id=2, invoiceNumber="B", _info={"lastUpdated": "2025-03-08T00:00:00Z"}))
    cw = make_cw(fake, sleeps, frozen_clock, page_size=1)
    first = next(iter(cw.invoices("2025-03-01T00:00:00Z")))  # the process dies after committing this page
    assert [i.number for i in first.items] == ["A"]
    resumed = list(cw.invoices(first.cursor))
    assert [i.number for p in resumed for i in p.items] == ["B"]
    # The change cursor at the end covers both pages: A's later edit is not lost to B's earlier one.
    assert resumed[-1].cursor == "2025-03-09T00:00:00Z"


def test_companies_and_contacts_page_through_the_fake(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    fake.add_company(fixture("company.json"))
    fake.add_contact(fixture("contact.json"))
    cw = make_cw(fake, sleeps, frozen_clock)
    (companies,) = list(cw.companies(None))
    (contacts,) = list(cw.contacts(None))
    assert [c.name for c in companies.items] == ["Fake Contoso Dental"]
    assert [c.email for c in contacts.items] == ["ap@contoso.example"]
    assert (companies.cursor, contacts.cursor) == ("2025-01-10T12:00:00Z", "2025-01-11T08:30:00Z")
    paths = [r.path for r in fake.requests]
    assert paths == ["/company/companies", "/company/contacts"]
    headers = fake.requests[0].headers
    assert headers["accept"] == "application/vnd.connectwise.com+json; version=2025.1"
    assert headers["clientid"] == fake.client_id


def test_429_waits_for_retry_after_then_succeeds(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    seed_invoices(fake, 1)
    fake.fail_next(429, retry_after=7)
    pages = list(make_cw(fake, sleeps, frozen_clock).invoices(None))
    assert len(pages[0].items) == 1
    assert sleeps == [7.0]
    assert len(fake.requests) == 2


def test_401_raises_a_non_retryable_error_without_retrying(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    cw = make_cw(fake, sleeps, frozen_clock, private_key=Secret("wrong"))
    with pytest.raises(ConnectorError) as err:
        list(cw.companies(None))
    assert (err.value.retryable, err.value.status) == (False, 401)
    assert len(fake.requests) == 1 and sleeps == []


def test_injected_503_is_retried_and_401_is_not(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    cw = make_cw(fake, sleeps, frozen_clock)
    fake.fail_next(503, retry_after=2, times=2)
    assert next(iter(cw.companies(None))).items == []
    assert sleeps == [2.0, 2.0]
    fake.fail_next(401, times=5)
    with pytest.raises(ConnectorError) as err:
        list(cw.companies(None))
    assert not err.value.retryable and len(fake.requests) == 4


def test_malformed_invoices_are_rejected_and_the_rest_of_the_page_maps(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    fake.add_invoice(invoice(id=1, invoiceNumber="GOOD-1"))
    fake.add_invoice(invoice(id=2, invoiceNumber="BAD-TOTAL", total=None))
    fake.add_invoice(
        invoice(id=3, invoiceNumber="BAD-QTY", lines=[{"description": "x", "quantity": -2, "unitPrice": 1.0}])
    )
    fake.add_invoice(invoice(id=4, invoiceNumber="BAD-DUE", dueDate="31/03/2025"))
    fake.add_invoice(invoice(id=5, invoiceNumber="GOOD-2"))
    (page,) = list(make_cw(fake, sleeps, frozen_clock).invoices(None))
    assert [i.number for i in page.items if isinstance(i, RemoteInvoice)] == ["GOOD-1", "GOOD-2"]
    rejected = [(r.object, r.remote_id, r.reason) for r in page.items if isinstance(r, Rejected)]
    assert rejected == [
        ("invoice", "2", "missing total"),
        ("invoice", "3", "line 1: negative quantity -2"),
        ("invoice", "4", "unparseable dueDate '31/03/2025'"),
    ]
    assert page.cursor == "2025-03-02T09:15:00Z"


def payment(invoice_id: str = "90201", amount_minor: int = 3025) -> PaymentWriteBack:
    return PaymentWriteBack(
        invoice_remote_id=invoice_id,
        amount_minor=amount_minor,
        currency="USD",
        paid_on=date(2025, 3, 12),
        reference="pay_fake_0001 pi_fake_0001",
    )


def test_record_payment_posts_once_and_a_retry_with_the_same_key_does_not(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    stored = fake.add_invoice(invoice())
    cw = make_cw(fake, sleeps, frozen_clock)
    first = cw.record_payment(payment(), key="v1-psa-0001")
    second = cw.record_payment(payment(), key="v1-psa-0001")
    assert first == second
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 1
    assert posts[0].body == {
        "type": "Payment",
        "amount": Decimal("30.25"),
        "paymentDate": "2025-03-12T00:00:00Z",
        "source": "cashloop:v1-psa-0001",
    }
    assert (stored["payments"], stored["balance"]) == (80.25, 126.24)
    assert cw.record_payment(payment(amount_minor=100), key="v1-psa-0002") != first


def test_record_payment_after_a_lost_response_finds_the_first_payment(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    fake.add_invoice(invoice())
    cw = make_cw(fake, sleeps, frozen_clock)
    fake.fail_next(502, method="POST", after=True)  # CW commits, the response is lost
    with pytest.raises(ConnectorError) as err:
        cw.record_payment(payment(), key="v1-psa-0003")
    assert err.value.retryable
    remote_id = cw.record_payment(payment(), key="v1-psa-0003")
    assert [p["id"] for p in fake.payments] == [int(remote_id)]
    assert sum(r.method == "POST" for r in fake.requests) == 1


def test_record_payment_of_an_unknown_invoice_is_not_retryable(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    with pytest.raises(ConnectorError) as err:
        make_cw(fake, sleeps, frozen_clock).record_payment(payment("424242"), key="k")
    assert (err.value.retryable, err.value.status) == (False, 404)


# ---- the fake catches bad requests --------------------------------------------------------------


def raw_request(fake: ConnectWiseFake, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {
        "clientId": fake.client_id,
        "Accept": "application/vnd.connectwise.com+json; version=2025.1",
        **kw.pop("headers", {}),
    }
    return requests.request(
        method, fake.base_url + path, headers=headers, auth=fake.credentials, timeout=5, **kw
    )


def test_fake_rejects_an_undeclared_query_parameter(fake: ConnectWiseFake) -> None:
    fake.allow_violations = True
    resp = raw_request(fake, "GET", "/finance/invoices", params={"limit": "10"})
    assert resp.status_code == 400 and resp.json()["code"] == "InvalidObject"
    assert fake.violations == ["GET /finance/invoices: query parameter 'limit' is not declared"]


def test_fake_rejects_body_fields_outside_the_schema_and_wrong_types(fake: ConnectWiseFake) -> None:
    fake.allow_violations = True
    fake.add_invoice(invoice())
    resp = raw_request(
        fake,
        "POST",
        "/finance/invoices/90201/payments",
        json={"amount": "30.25", "paymentDate": "2025-03-12", "notes": "x", "type": "Payment"},
    )
    assert resp.status_code == 400
    (violation,) = fake.violations
    assert "body.amount must be number" in violation and "body.notes is not a field" in violation
    assert "body.paymentDate is not a date-time" in violation
    assert fake.payments == []


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        ({"clientId": ""}, {}, "missing clientId header"),
        ({"Accept": "application/json"}, {}, "Accept must pin a version"),
        ({}, {"pageSize": "1001"}, "pageSize may not exceed 1000"),
        ({}, {"conditions": "lastUpdated > [2025-01-01T00:00:00Z] or id > 3"}, "supports only 'and'"),
        ({}, {"orderBy": "nosuchfield asc"}, "cannot sort by"),
    ],
)
def test_fake_rejects_requests_outside_the_spec(
    fake: ConnectWiseFake, headers: dict[str, str], params: dict[str, str], expected: str
) -> None:
    fake.allow_violations = True
    resp = raw_request(fake, "GET", "/company/companies", headers=headers, params=params)
    assert resp.status_code == 400
    assert len(fake.violations) == 1 and expected in fake.violations[0]


def test_fake_rejects_an_operation_missing_from_the_spec(fake: ConnectWiseFake) -> None:
    fake.allow_violations = True
    assert raw_request(fake, "GET", "/finance/payments").status_code == 400
    assert fake.violations == ["GET /finance/payments: no operation GET /finance/payments in the spec"]


def test_fake_supports_navigable_paging_links_and_fields(fake: ConnectWiseFake) -> None:
    seed_invoices(fake, 3)
    resp = raw_request(
        fake,
        "GET",
        "/finance/invoices",
        params={
            "page": "1",
            "pageSize": "2",
            "fields": "id,_info/lastUpdated",
            "conditions": 'company/id = 90001 and invoiceNumber like "CWF-%"',
        },
    )
    assert [r["id"] for r in resp.json()] == [90300, 90301]
    assert set(resp.json()[0]) == {"id", "_info"}
    assert 'rel="next"' in resp.headers["Link"] and 'rel="last"' in resp.headers["Link"]
    nxt = requests.utils.parse_header_links(resp.headers["Link"])[0]["url"]
    page2 = requests.get(
        nxt,
        headers={
            "clientId": fake.client_id,
            "Accept": "application/vnd.connectwise.com+json; version=2025.1",
        },
        auth=fake.credentials,
        timeout=5,
    )
    assert [r["id"] for r in page2.json()] == [90302] and "Link" not in page2.headers


# ---- registry ----------------------------------------------------------------------------------


def test_registry_builds_connectwise_from_config(fake: ConnectWiseFake, frozen_clock: FrozenClock) -> None:
    fake.add_company(fixture("company.json"))
    config = SimpleNamespace(psa=SimpleNamespace(kind="connectwise", connectwise=make_settings(fake)))
    source = psa_source(config, frozen_clock)  # type: ignore[arg-type]
    assert (source.kind, source.supports_payment_writeback) == ("connectwise", True)
    assert [c.name for p in source.companies(None) for c in p.items] == ["Fake Contoso Dental"]


def test_connectwise_base_url_is_built_from_site_and_codebase() -> None:
    settings = ConnectWiseSettings(
        site="eu.myconnectwise.net",
        codebase="v2025_1/",
        company_id="c",
        public_key="p",
        private_key=Secret("s"),
        client_id="x",
    )
    cw = ConnectWise(settings, HttpClient(timeout=1), FrozenClock(T0))
    assert cw._base == "https://eu.myconnectwise.net/v2025_1/apis/3.0"
    assert copy.copy(cw).kind == "connectwise"


# ---- hardening: totals that do not add up, credits, deletions, counts, far-future stamps -------


def test_a_subtotal_and_tax_that_do_not_make_the_total_are_rejected() -> None:
    reason = r"subtotal \$199\.99 \+ tax \$16\.50 is \$216\.49 but total is \$226\.49"
    with pytest.raises(RecordError, match=reason):
        invoice_from_api(invoice(total=226.49))


def test_a_down_payment_applied_becomes_a_negative_line_and_the_lines_still_sum() -> None:
    inv = invoice_from_api(invoice(total=166.49, downpaymentApplied=50.0))
    assert (inv.subtotal_minor, inv.tax_minor, inv.total_minor) == (14999, 1650, 16649)
    assert ("Down payment applied", -5000) in [(x.description, x.amount_minor) for x in inv.lines]
    assert sum(x.amount_minor for x in inv.lines) == inv.subtotal_minor


def test_a_negative_invoice_of_any_type_is_a_credit() -> None:
    raw = invoice(
        type="Standard", total=-50.0, subtotal=-50.0, salesTax=0, serviceTotal=-50.0, productTotal=0
    )
    assert invoice_from_api(raw).kind == "credit_memo"


def test_invoice_ids_lists_every_id_with_fields_id_in_keyset_pages(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    seed_invoices(fake, 3)
    assert list(make_cw(fake, sleeps, frozen_clock).invoice_ids()) == ["90300", "90301", "90302"]
    (req,) = fake.requests
    assert (req.query["fields"], req.query["pageSize"], req.query["orderBy"]) == ("id", "1000", "id asc")


def test_estimate_counts_what_a_sweep_will_read(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    seed_invoices(fake, 5)
    cw = make_cw(fake, sleeps, frozen_clock)
    assert cw.estimate("invoices", None) == 5
    assert cw.estimate("invoices", "2025-03-01T12:02:00Z") == 2
    assert fake.requests[-1].path == "/finance/invoices/count"


def test_one_record_stamped_in_the_far_future_does_not_drag_the_cursor_there(
    fake: ConnectWiseFake, sleeps: list[float], frozen_clock: FrozenClock
) -> None:
    seed_invoices(fake, 2)
    fake.add_invoice(invoice(id=90399, invoiceNumber="FUTURE", _info={"lastUpdated": "2099-01-01T00:00:00Z"}))
    pages = list(make_cw(fake, sleeps, frozen_clock).invoices(None))
    # The cursor stops at the poll's own time: later edits of other records stay visible.
    assert pages[-1].cursor == "2026-03-10T15:00:00Z"


def test_line_references_are_passed_in_remote_lines_field_order() -> None:
    # make_line hands the references to RemoteLine by position.
    from sync.base import RemoteLine
    from sync.psa.connectwise import _REF_FIELDS

    assert RemoteLine._fields[4 : 4 + len(_REF_FIELDS)] == _REF_FIELDS
