"""HaloPSA: pure mapping on vendor-shaped records (tests/fixtures/halopsa), then the real
connector over loopback HTTP against the spec-checking fake (tests/fakes/halopsa.py): OAuth2 tokens,
paging, incremental sweeps, payments written back once."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from app.config import HaloPsaSettings, Secret
from app.core.clock import FrozenClock
from sync.base import ConnectorError, PaymentWriteBack, RecordError, RemoteInvoice
from sync.http import HttpClient
from sync.psa.halopsa import (
    HaloPsa,
    HaloRules,
    accounts_contact,
    client_from_api,
    invoice_from_api,
    user_from_api,
)
from tests.fakes.halopsa import HaloFake, halo_time

T0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "halopsa" / "requests_examples.json"


def example_invoice() -> dict[str, Any]:
    """The first invoice of the list example in the shared Halo request shapes."""
    return json.loads(EXAMPLES.read_text(encoding="utf-8"))["list_invoices"]["response_shape"]["invoices"][0]


def invoice(**over: Any) -> dict[str, Any]:
    rec = {
        **example_invoice(),
        "tax_total": 40.0,
        "currency": "USD",
        "lines": [
            {
                "id": 1,
                "item_shortdescription": "Managed services",
                "qty_order": 1,
                "unit_price": 150.0,
                "net_amount": 150.0,
                "tax_amount": 30.0,
                "contract_id": 12,
                "item_code": "MSP",
            },
            {
                "id": 2,
                "item_shortdescription": "Backup",
                "qty_order": 2,
                "unit_price": 25.0,
                "net_amount": 50.0,
                "tax_amount": 10.0,
                "contract_id": 12,
            },
        ],
    }
    rec.update(over)
    return rec


# ---- pure mapping ------------------------------------------------------------------------------


def test_the_example_invoice_maps_money_dates_lines_and_tax() -> None:
    inv = invoice_from_api(invoice())
    assert (inv.remote_id, inv.number, inv.company_remote_id) == ("1001", "INV-1001", "12")
    assert (inv.total_minor, inv.tax_minor, inv.subtotal_minor, inv.paid_minor) == (24000, 4000, 20000, 0)
    assert [
        (x.description, x.quantity, x.unit_price_minor, x.amount_minor, x.tax_minor) for x in inv.lines
    ] == [("Managed services", "1", 15000, 15000, 3000), ("Backup", "2", 2500, 5000, 1000)]
    assert (inv.issued_on, inv.due_on) == (date(2025, 1, 1), date(2025, 1, 31))
    assert inv.kind == "agreement" and inv.is_approved and not inv.is_void
    assert inv.updated_at == datetime(2025, 1, 2, 9, 0, tzinfo=UTC)


def test_drafts_and_invoices_awaiting_approval_are_hidden_unless_the_settings_say_otherwise() -> None:
    assert not invoice_from_api(invoice(posted=False)).is_approved
    assert invoice_from_api(invoice(posted=False), HaloRules(require_posted=False)).is_approved
    assert not invoice_from_api(invoice(requires_approval=True)).is_approved
    assert invoice_from_api(
        invoice(requires_approval=True, approvaldatetime="2025-01-02T00:00:00")
    ).is_approved


def test_a_credit_note_is_a_credit_memo_and_payments_come_from_amount_due() -> None:
    credit = invoice_from_api(
        invoice(
            total=-60.0,
            tax_total=-10.0,
            amountdue=-60.0,
            creditlinkedtoinvoiceid=1000,
            lines=[{"item_shortdescription": "Refund", "net_amount": -50.0}],
        )
    )
    assert (credit.kind, credit.total_minor, credit.paid_minor) == ("credit_memo", -6000, 0)
    partly = invoice_from_api(invoice(amountpaid=100.0, amountdue=140.0))
    assert partly.paid_minor == 10000


def test_the_accounts_address_of_a_client_is_its_billing_contact() -> None:
    client = {
        "id": 12,
        "name": "Acme Ltd",
        "accountsemailaddress": "AP@acme.example",
        "accountsfirstname": "Ann",
    }
    user = user_from_api(
        {"id": 5, "firstname": "Ann", "surname": "Lee", "emailaddress": "ap@acme.example"}, client
    )
    other = user_from_api({"id": 6, "name": "Bo Tech", "emailaddress": "it@acme.example"}, client)
    assert user.is_billing and not other.is_billing and (other.first_name, other.last_name) == ("Bo", "Tech")
    extra = accounts_contact(client)
    assert extra is not None and (extra.email, extra.is_billing, extra.first_name) == (
        "AP@acme.example",
        True,
        "Ann",
    )
    assert client_from_api(client).name == "Acme Ltd"


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"total": None}, "missing total"),
        ({"client_id": None}, "missing client_id"),
        ({"currency": "XYZ"}, "unknown currency 'XYZ'"),
        ({"duedate": "31/01/2025"}, "unparseable duedate '31/01/2025'"),
        ({"total": 240.001}, "total: 240.001 has more decimal places"),
        ({"tax_total": 0.0}, "lines sum to $200.00 but subtotal is $240.00"),
        ({"lines": [{"net_amount": 200.0}]}, "line 1: missing item_shortdescription"),
        ({"lines": "none"}, "lines is not a list"),
    ],
)
def test_a_bad_invoice_is_rejected_with_a_specific_reason(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordError) as err:
        invoice_from_api(invoice(**over))
    assert reason in str(err.value)


# ---- over HTTP against the fake ----------------------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def fake(clock):
    with HaloFake(now=clock.utc_now) as halo:
        yield halo
        if not getattr(halo, "allow_violations", False):
            assert halo.violations == []


def connector(fake: HaloFake, clock: FrozenClock, sleeps: list[float] | None = None, **over: Any) -> HaloPsa:
    values: dict[str, Any] = {
        "base_url": fake.base_url,
        "tenant": fake.tenant,
        "client_id": fake.client_id,
        "client_secret": Secret(fake.client_secret),
        "page_size": 2,
    }
    sleep = (sleeps if sleeps is not None else []).append
    return HaloPsa(HaloPsaSettings(**{**values, **over}), HttpClient(timeout=5, sleep=sleep), clock)


def seed(fake: HaloFake, count: int) -> list[dict[str, Any]]:
    fake.add("clients", {"id": 12, "name": "Acme Ltd", "accountsemailaddress": "ap@acme.example"})
    return [
        fake.add(
            "invoices",
            invoice(
                id=1000 + i,
                invoicenumber=f"H-{i:03d}",
                last_modified=halo_time(T0 - timedelta(days=10, minutes=-i)),
            ),
        )
        for i in range(count)
    ]


def test_a_token_is_fetched_once_with_client_credentials_and_sent_as_bearer(fake: HaloFake, clock) -> None:
    seed(fake, 3)
    halo = connector(fake, clock)
    list(halo.invoices(None))
    list(halo.companies(None))
    tokens = [r for r in fake.requests if r.path == "/auth/token"]
    assert len(tokens) == 1 and tokens[0].query == {"tenant": "fakemsp"}
    api = [r for r in fake.requests if r.path != "/auth/token"]
    assert api and all(r.headers["authorization"].startswith("Bearer ") for r in api)


def test_an_expiring_token_is_renewed_before_the_next_call(fake: HaloFake, clock) -> None:
    seed(fake, 1)
    fake.token_seconds = 300
    halo = connector(fake, clock)
    list(halo.companies(None))
    clock.advance(timedelta(seconds=250))  # inside the last minute of the token's life
    list(halo.companies(None))
    assert sum(r.path == "/auth/token" for r in fake.requests) == 2
    assert fake.violations == []


def test_a_revoked_token_is_replaced_once_then_the_call_goes_through(fake: HaloFake, clock) -> None:
    seed(fake, 1)
    halo = connector(fake, clock)
    list(halo.companies(None))
    fake.tokens.clear()  # revoked at Halo
    assert len(next(iter(halo.companies(None))).items) == 1
    assert sum(r.path == "/auth/token" for r in fake.requests) == 2


def test_a_wrong_client_secret_is_one_401_and_no_retries(fake: HaloFake, clock) -> None:
    sleeps: list[float] = []
    halo = connector(fake, clock, sleeps, client_secret=Secret("wrong"))
    with pytest.raises(ConnectorError) as err:
        list(halo.companies(None))
    assert (err.value.status, err.value.retryable) == (401, False)
    assert [r.path for r in fake.requests] == ["/auth/token"] and sleeps == []


def test_a_full_sweep_pages_in_id_order_and_resumes_after_its_last_committed_page(
    fake: HaloFake, clock
) -> None:
    seed(fake, 5)
    halo = connector(fake, clock)
    pages = list(halo.invoices(None))
    assert [[i.number for i in p.items] for p in pages] == [["H-000", "H-001"], ["H-002", "H-003"], ["H-004"]]
    assert pages[-1].cursor == halo_time(T0 - timedelta(days=10, minutes=-4)) + "Z"
    lists = [r.query for r in fake.requests if r.path == "/Invoice"]
    assert [(q["page_no"], q["order"], q["includelines"]) for q in lists] == [
        ("1", "id", "true"),
        ("2", "id", "true"),
        ("3", "id", "true"),
    ]
    # Killed after page 2 was committed; an invoice before it was deleted meanwhile.
    fake.invoices.pop(0)
    resumed = list(halo.invoices(pages[1].cursor))
    assert [i.number for p in resumed for i in p.items] == ["H-004"]


def test_an_incremental_sweep_reads_newest_modified_first_and_stops_at_the_cursor(
    fake: HaloFake, clock
) -> None:
    records = seed(fake, 6)
    halo = connector(fake, clock)
    cursor = list(halo.invoices(None))[-1].cursor
    fake.touch(records[1], total=250.0, amountdue=250.0, tax_total=50.0)  # now, after the cursor
    fake.requests.clear()
    pages = list(halo.invoices(cursor))
    assert [i.number for p in pages for i in p.items][:1] == ["H-001"]
    assert len([r for r in fake.requests if r.path == "/Invoice"]) == 1  # page 1 already reaches the cursor
    assert pages[-1].cursor == halo_time(T0) + "Z"
    query = next(r.query for r in fake.requests if r.path == "/Invoice")
    assert (query["order"], query["orderdesc"]) == ("last_modified", "true")


def test_contacts_are_read_per_client_and_the_accounts_address_is_a_billing_contact(
    fake: HaloFake, clock
) -> None:
    seed(fake, 0)
    fake.add(
        "users",
        {
            "id": 51,
            "client_id": 12,
            "firstname": "Sam",
            "surname": "Okafor",
            "emailaddress": "it@acme.example",
        },
    )
    (page,) = list(connector(fake, clock).contacts(None))
    assert sorted((c.remote_id, c.email, c.is_billing) for c in page.items) == [
        ("51", "it@acme.example", False),
        ("client-12-accounts", "ap@acme.example", True),
    ]
    users = [r.query for r in fake.requests if r.path == "/Users"]
    assert users and users[0]["client_id"] == "12"


def payment(invoice_id: str = "1000", amount_minor: int = 10_000) -> PaymentWriteBack:
    return PaymentWriteBack(
        invoice_remote_id=invoice_id,
        amount_minor=amount_minor,
        currency="USD",
        paid_on=date(2026, 3, 10),
        reference="pay_fake_0001 pi_fake_0001",
    )


def test_a_payment_is_posted_once_as_an_array_and_a_retry_with_the_same_key_finds_it(
    fake: HaloFake, clock
) -> None:
    (stored,) = seed(fake, 1)
    halo = connector(fake, clock)
    first = halo.record_payment(payment(), key="v1-psa-0001")
    second = halo.record_payment(payment(), key="v1-psa-0001")
    assert first == second
    (post,) = [r for r in fake.requests if r.method == "POST" and r.path == "/InvoicePayment"]
    assert post.body == [
        {
            "invoice_id": 1000,
            "amount": Decimal("100.00"),
            "date": "2026-03-10T00:00:00",
            "thirdpartyid": "cashloop:v1-psa-0001",
        }
    ]
    assert (stored["amountpaid"], stored["amountdue"]) == (100.0, 140.0)


def test_a_payment_whose_response_was_lost_is_not_posted_twice(fake: HaloFake, clock) -> None:
    seed(fake, 1)
    halo = connector(fake, clock)
    fake.fail_next(502, method="POST", path="/InvoicePayment", after=True)
    with pytest.raises(ConnectorError) as err:
        halo.record_payment(payment(), key="v1-psa-0002")
    assert err.value.retryable
    remote = halo.record_payment(payment(), key="v1-psa-0002")
    assert [p["id"] for p in fake.payments] == [int(remote)]


def test_invoice_ids_lists_ids_only(fake: HaloFake, clock) -> None:
    seed(fake, 3)
    assert list(connector(fake, clock).invoice_ids()) == ["1000", "1001", "1002"]
    assert all(r.query.get("idonly") == "true" for r in fake.requests if r.path == "/Invoice")


def test_an_invoice_read_again_by_id_asks_for_its_details_and_keeps_its_lines(fake: HaloFake, clock) -> None:
    seed(fake, 2)
    halo = connector(fake, clock)
    listed = {inv.remote_id: inv for page in halo.invoices(None) for inv in page.items}

    (page,) = list(halo.refresh(["1001"]))

    (again,) = page.items
    assert isinstance(again, RemoteInvoice) and again.lines == listed["1001"].lines and again.lines
    assert sum(line.amount_minor for line in again.lines) == again.subtotal_minor
    (get,) = [r for r in fake.requests if r.path == "/Invoice/1001"]
    assert get.query.get("includedetails") == "true"


def test_the_maps_of_a_page_keep_going_past_a_bad_record(fake: HaloFake, clock) -> None:
    records = seed(fake, 2)
    records[0]["total"] = None
    (page,) = list(connector(fake, clock, page_size=10).invoices(None))
    assert [getattr(i, "reason", None) for i in page.items] == ["missing total", None]
    assert isinstance(page.items[1], RemoteInvoice)


# ---- the fake refuses what Halo refuses ----------------------------------------------------------


def api(fake: HaloFake, path: str, params: dict[str, str]) -> requests.Response:
    token = requests.post(
        fake.base_url.removesuffix("/api") + "/auth/token",
        params={"tenant": fake.tenant},
        timeout=5,
        data={
            "grant_type": "client_credentials",
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "scope": "all",
        },
    ).json()["access_token"]
    return requests.get(
        fake.base_url + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": "10"}, "query parameter 'limit' is not declared"),
        ({"pageinate": "yes"}, "must be true or false"),
        ({"page_size": "ten"}, "must be an integer"),
        ({"order": "nosuchfield"}, "is not a field of InvoiceHeader"),
        ({"paymentstatuses": "0,x"}, "comma-separated integers"),
    ],
)
def test_the_fake_refuses_list_requests_halo_would_refuse(fake: HaloFake, params, expected) -> None:
    fake.allow_violations = True
    resp = api(fake, "/Invoice", params)
    assert resp.status_code == 400
    assert len(fake.violations) == 1 and expected in fake.violations[0]


def test_the_fake_refuses_a_payment_body_outside_the_schema(fake: HaloFake) -> None:
    fake.allow_violations = True
    seed(fake, 1)
    token = api(fake, "/Invoice", {}).request.headers["Authorization"]
    resp = requests.post(
        fake.base_url + "/InvoicePayment",
        headers={"Authorization": token},
        json=[{"invoice_id": 1000, "amount": "100.00", "memo": "x"}],
        timeout=5,
    )
    assert resp.status_code == 400
    assert (
        "body[0].amount must be number" in fake.violations[0]
        and "body[0].memo is not a field" in fake.violations[0]
    )
