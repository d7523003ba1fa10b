"""Xero: tokens (expiry, rotation, revocation), rate limits, the wire format, and the fake's own checks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import yaml

from app.core.clock import FrozenClock
from sync.accounting.xero import connected_tenants
from sync.accounting.xero_limits import RateLimiter
from sync.accounting.xero_wire import from_json, idempotency_key, minor, parse_date, to_json
from sync.base import AccountingAuthError, ConnectorError, JournalPayment
from sync.http import HttpClient
from tests.fakes.xero import XeroFake, wire, xero_date

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "xero"
SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 12, 4, 15, 0, 5, tzinfo=UTC))


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[XeroFake]:
    with XeroFake(now=clock.utc_now) as xero:
        yield xero


def payment(number: str, amount: int, token: str) -> JournalPayment:
    return JournalPayment(
        payment_token=token,
        processor_ref=None,
        method="card",
        received_on=date(2026, 12, 4),
        currency="USD",
        amount_minor=amount,
        client_name="Acme Dental",
        client_remote_id="17",
        allocations=((number, amount),),
    )


# ---- tokens ---------------------------------------------------------------------------------------


def test_an_expired_token_mid_run_is_refreshed_the_rotated_refresh_token_saved_and_the_run_goes_on(
    fake, clock
):
    fake.add_invoice("901", "10.00")
    fake.add_invoice("902", "20.00")
    w = wire(fake, clock)
    first_refresh = w.vault.tokens.refresh_token
    w.xero.push_payment(payment("901", 1000, "pay_1"), key="k1")
    fake.expire_access_tokens()  # Xero says 401 from here on to the old token

    w.xero.push_payment(payment("902", 2000, "pay_2"), key="k2")

    assert fake.invoice("902")["Status"] == "PAID"
    [saved] = w.vault.saved
    assert saved.refresh_token != first_refresh and saved.tenant_id == fake.tenant_id
    assert first_refresh not in fake.refresh_tokens  # rotated: the old one is spent
    assert saved.expires_at == clock.utc_now() + timedelta(seconds=1800)
    [grant] = [r for r in fake.requests if r.path == "/connect/token"]
    assert grant.headers["authorization"].startswith("Basic ")
    assert fake.violations == []


def test_a_token_near_expiry_is_refreshed_before_use(fake, clock):
    fake.add_invoice("903", "10.00")
    w = wire(fake, clock)
    clock.advance(timedelta(minutes=26))  # 4 minutes left: inside the refresh margin
    w.xero.push_payment(payment("903", 1000, "pay_3"), key="k3")
    assert len(w.vault.saved) == 1
    assert fake.invoice("903")["Status"] == "PAID"


def test_a_revoked_connection_raises_accounting_auth_error_and_marks_the_vault(fake, clock):
    fake.add_invoice("904", "10.00")
    w = wire(fake, clock)
    fake.revoke()

    with pytest.raises(AccountingAuthError, match="refused the sign-in"):
        w.xero.push_payment(payment("904", 1000, "pay_4"), key="k4")

    assert len(w.vault.revoked) == 1 and "invalid_grant" in w.vault.revoked[0]
    assert fake.payments == []
    with pytest.raises(AccountingAuthError, match="not connected"):  # the vault now says so at once
        w.xero.push_payment(payment("904", 1000, "pay_4"), key="k4")


def test_a_401_to_a_fresh_token_or_a_403_needs_a_person(fake, clock):
    fake.add_invoice("905", "10.00")
    w = wire(fake, clock)
    fake.fail_next(401, times=2, method="GET")
    with pytest.raises(AccountingAuthError, match="reconnect it on the Accounting page"):
        w.xero.push_payment(payment("905", 1000, "pay_5"), key="k5")
    assert len(w.vault.saved) == 1  # it did refresh once, then gave up
    w.vault.tokens = replace(w.vault.tokens, tenant_id="another-organisation")
    with pytest.raises(AccountingAuthError, match="HTTP 403"):
        w.xero.push_payment(payment("905", 1000, "pay_5"), key="k5")
    assert fake.payments == []


def test_the_connections_endpoint_names_the_organisation(fake, clock):
    tokens = fake.grant()
    found = connected_tenants(HttpClient(timeout=5), fake.connections_url, tokens["access_token"])
    assert found == [(fake.tenant_id, fake.tenant_name)]
    identity = yaml.safe_load((SPECS / "xero-identity.yaml").read_text())
    declared = set(identity["components"]["schemas"]["Connection"]["properties"])
    raw = requests.get(
        fake.connections_url, timeout=5, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert raw.json() and all(set(row) <= declared for row in raw.json())


# ---- rate limits ----------------------------------------------------------------------------------


def test_a_429_waits_for_retry_after_and_then_succeeds(fake, clock):
    fake.add_invoice("910", "10.00")
    w = wire(fake, clock)
    fake.fail_next(429, retry_after=7, method="GET")
    w.xero.push_payment(payment("910", 1000, "pay_10"), key="k")
    assert w.http_sleeps == [7.0]
    assert fake.invoice("910")["Status"] == "PAID"


def test_429s_beyond_the_retries_are_a_retryable_error_and_the_tenant_pauses(fake, clock):
    fake.add_invoice("911", "10.00")
    w = wire(fake, clock, max_retries=2)
    fake.fail_next(429, retry_after=30, times=3, method="GET")

    with pytest.raises(ConnectorError) as limited:
        w.xero.push_payment(payment("911", 1000, "pay_11"), key="k")

    assert (limited.value.retryable, limited.value.status, limited.value.retry_after) == (True, 429, 30.0)
    assert w.http_sleeps == [30.0, 30.0]
    before = clock.utc_now()
    w.xero.push_payment(payment("911", 1000, "pay_11"), key="k")  # waits out the pause first
    assert clock.utc_now() - before >= timedelta(seconds=30)
    assert fake.invoice("911")["Status"] == "PAID"


def test_seventy_pushes_never_exceed_sixty_calls_in_any_minute_of_the_tenant(fake, clock):
    for n in range(70):
        fake.add_invoice(f"R-{n}", "5.00")
    w = wire(fake, clock)

    for n in range(70):
        w.xero.push_payment(payment(f"R-{n}", 500, f"pay_r{n}"), key=f"k-{n}")

    assert len(fake.live_payments()) == 70
    calls = [r.at for r in fake.api_requests()]
    assert len(calls) == 70 * 4  # lookup (batch + single), match, create
    assert max(fake.calls_per_minute.values()) <= 60
    for i, start in enumerate(calls):  # and in every sliding minute, not only calendar ones
        assert sum(1 for t in calls[i:] if t < start + timedelta(seconds=60)) <= 60
    assert w.limiter.waited  # the limiter did hold calls back
    assert fake.violations == []


def test_the_limiter_pauses_a_whole_window_when_xero_says_none_remain():
    now = [1000.0]
    limiter = RateLimiter(now=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    limiter.note_remaining("t1", "0")
    with limiter.slot("t1"):
        pass
    assert now[0] == pytest.approx(1060.0)
    with limiter.slot("t2"):  # another tenant is not held up
        pass
    assert now[0] == pytest.approx(1060.0)


def test_the_limiter_lets_at_most_five_calls_run_at_once():
    limiter = RateLimiter(per_minute=1000)
    running, peak, lock = [0], [0], threading.Lock()

    def call() -> None:
        with limiter.slot("t"):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 5


# ---- wire format ----------------------------------------------------------------------------------


def test_amounts_are_written_as_exact_json_numbers():
    body = to_json({"Amount": Decimal("18.600"), "Yen": Decimal("10000"), "Cents": Decimal("0.10"), "N": "x"})
    assert body == b'{"Amount": 18.600, "Yen": 10000, "Cents": 0.10, "N": "x"}'
    with pytest.raises(TypeError):
        to_json({"Amount": 1.5})
    back = from_json(body.decode())
    assert minor(back["Amount"], "KWD") == 18600 and minor(back["Yen"], "JPY") == 10000


def test_both_date_forms_parse():
    assert parse_date("/Date(1552429813667+0000)/") == date(2019, 3, 12)
    assert parse_date("/Date(1550793600000)/") == date(2019, 2, 22)
    assert parse_date("2019-02-22T00:00:00") == date(2019, 2, 22)
    assert parse_date("2026-12-04") == date(2026, 12, 4)
    assert parse_date(xero_date(date(2026, 12, 4))) == date(2026, 12, 4)
    with pytest.raises(ValueError):
        parse_date("soon")


def test_idempotency_keys_are_stable_and_short():
    assert idempotency_key("v1-journal_payment-abc") == "v1-journal_payment-abc"
    assert idempotency_key("v1-journal_payment-abc", "surcharge") == "v1-journal_payment-abc/surcharge"
    long = idempotency_key("x" * 300)
    assert long == idempotency_key("x" * 300) and len(long) <= 128 and long != idempotency_key("y" * 300)


def test_xeros_own_examples_parse_to_the_right_dates_and_amounts():
    batch = from_json((FIXTURES / "batchpayments_create.json").read_text())["responses"]["200"]
    [made] = batch["BatchPayments"]
    assert parse_date(made["Date"]) == date(2019, 2, 22) and parse_date(made["DateString"]) == date(
        2019, 2, 22
    )
    assert [minor(p["Amount"], "NZD") for p in made["Payments"]] == [100, 100, 100]
    pays = from_json((FIXTURES / "payments_list_response.json").read_text())["responses"]["200"]["Payments"]
    assert all(isinstance(parse_date(p["Date"]), date) for p in pays)
    invoices = from_json((FIXTURES / "invoices_list_response.json").read_text())["responses"]["200"]
    assert invoices["pagination"]["page"] == 1 and "Invoices" in invoices


# ---- the fake keeps us honest ----------------------------------------------------------------------


def _raw(fake: XeroFake, method: str, path: str, body: object, **headers: str) -> requests.Response:
    token = fake.grant()["access_token"]
    return requests.request(
        method,
        fake.api_base + path,
        data=json.dumps(body),
        timeout=5,
        headers={
            "Authorization": f"Bearer {token}",
            "xero-tenant-id": fake.tenant_id,
            "Content-Type": "application/json",
            **headers,
        },
    )


def test_the_fake_accepts_xeros_own_request_examples(fake):
    inv = fake.add_invoice("INV-0004", "230.00")
    example = json.loads((FIXTURES / "payments_create.json").read_text())["request_example"]
    example["Payments"][0]["Invoice"]["InvoiceID"] = inv["InvoiceID"]
    example["Payments"][0]["Account"]["Code"] = "090"
    answer = _raw(fake, "PUT", "/Payments", example)
    assert answer.status_code == 200, answer.text
    assert fake.invoice("INV-0004")["AmountDue"] == Decimal("229.00")
    assert fake.violations == []


def test_the_fake_flags_a_property_the_spec_does_not_define(fake):
    inv = fake.add_invoice("INV-0005", "10.00")
    body = {
        "Payments": [
            {
                "Invoice": {"InvoiceID": inv["InvoiceID"]},
                "Account": {"Code": "090"},
                "Date": "2026-12-04",
                "Amount": 1,
                "Memo": "not a Xero field",
            }
        ]
    }
    assert _raw(fake, "PUT", "/Payments", body).status_code == 400
    assert fake.violations and "Memo is not a field of the schema" in fake.violations[0]


def test_the_fake_refuses_more_than_is_due_with_xeros_validation_exception(fake):
    inv = fake.add_invoice("INV-0006", "10.00")
    body = {
        "Payments": [
            {
                "Invoice": {"InvoiceID": inv["InvoiceID"]},
                "Account": {"Code": "090"},
                "Date": "2026-12-04",
                "Amount": 10.01,
            }
        ]
    }
    answer = _raw(fake, "PUT", "/Payments", body)
    assert answer.status_code == 400
    error = answer.json()
    assert error["Type"] == "ValidationException"
    assert error["Elements"][0]["ValidationErrors"][0]["Message"] == (
        "Payment amount exceeds the amount outstanding on this document"
    )
    assert fake.invoice("INV-0006")["AmountDue"] == Decimal("10.00")
    assert fake.violations == []


def test_the_fake_wants_the_tenant_header(fake):
    token = fake.grant()["access_token"]
    answer = requests.get(
        fake.api_base + "/Invoices", timeout=5, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 400
    assert fake.violations == ["GET /api.xro/2.0/Invoices: missing required header(s) xero-tenant-id"]


def test_the_fake_counts_a_sixty_first_call_in_a_minute_as_a_violation(fake):
    token = fake.grant()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "xero-tenant-id": fake.tenant_id}
    for _ in range(61):
        last = requests.get(fake.api_base + "/Accounts", timeout=5, headers=headers)
    assert last.headers["X-MinLimit-Remaining"] == "0"
    assert fake.violations == [f"tenant {fake.tenant_id} made call 61 in the minute 2026-12-04T15:00"]


def test_the_fakes_where_filter_reads_xeros_syntax():
    from tests.fakes.xero import where_matches

    record = {
        "Reference": 'pay_1 after "rf"',
        "Status": "AUTHORISED",
        "Date": date(2026, 12, 4),
        "Details": None,
    }
    assert where_matches('Reference!=null AND Reference.StartsWith("pay_1")', record)
    assert not where_matches('Details!=null AND Details.StartsWith("pay_1")', record)
    assert where_matches('Details.StartsWith("x") OR Reference.StartsWith("pay_1 after \\"rf")', record)
    assert where_matches(
        'Date>=DateTime(2026,12,01) AND Date<=DateTime(2026,12,31) AND Status=="AUTHORISED"', record
    )
    assert not where_matches("Date>=DateTime(2026,12,05)", record)
    with pytest.raises(Exception, match="not understood"):
        where_matches("Reference ~ 1", record)
