"""The shared HTTP client against a vendor fake on loopback: Retry-After is honoured but capped, a
timeout is retried, a refused login is not (tests/fakes/autotask.py is the server)."""

from __future__ import annotations

import pytest

from sync.base import ConnectorError
from sync.http import HttpClient
from tests.fakes.autotask import AutotaskFake

QUERY = {"MaxRecords": 10, "filter": [{"op": "gt", "field": "id", "value": 0}]}


@pytest.fixture
def fake():
    with AutotaskFake() as at:
        at.add("companies", {"id": 1, "companyName": "Contoso"})
        yield at
        assert at.violations == []


def _post(client: HttpClient, fake: AutotaskFake):
    headers = {"ApiIntegrationCode": fake.integration_code, "UserName": fake.username, "Secret": fake.secret}
    return client.request(
        "POST", fake.zone_url + "V1.0/Companies/query", json=QUERY, headers=headers, idempotent=True
    )


def test_a_retry_after_longer_than_the_cap_waits_the_cap(fake: AutotaskFake) -> None:
    sleeps: list[float] = []
    fake.fail_next(429, retry_after=3600, times=2)
    resp = _post(HttpClient(timeout=5, max_backoff=30, sleep=sleeps.append), fake)
    assert resp.json()["items"][0]["companyName"] == "Contoso"
    assert sleeps == [30.0, 30.0]


def test_503_without_retry_after_backs_off_exponentially_up_to_the_cap(fake: AutotaskFake) -> None:
    sleeps: list[float] = []
    fake.fail_next(503, times=4)
    _post(HttpClient(timeout=5, max_backoff=5, backoff_base=2, sleep=sleeps.append), fake)
    assert sleeps == [2.0, 4.0, 5.0, 5.0]


def test_retries_run_out_with_a_retryable_error_naming_the_status(fake: AutotaskFake) -> None:
    fake.fail_next(429, retry_after=1, times=10)
    with pytest.raises(ConnectorError) as err:
        _post(HttpClient(timeout=5, max_retries=2, sleep=lambda s: None), fake)
    assert (err.value.retryable, err.value.status, err.value.retry_after) == (True, 429, 1.0)


def test_a_read_timeout_is_retried_and_the_second_answer_is_used(fake: AutotaskFake) -> None:
    sleeps: list[float] = []
    fake._server.stall_next(1.5)
    resp = _post(HttpClient(timeout=0.5, sleep=sleeps.append), fake)
    # The first answer came too late; the repeat (after one backoff) was answered at once.
    assert resp.status_code == 200 and sleeps == [1.0]


def test_a_refused_login_is_not_retried(fake: AutotaskFake) -> None:
    sleeps: list[float] = []
    client = HttpClient(timeout=5, sleep=sleeps.append)
    headers = {"ApiIntegrationCode": fake.integration_code, "UserName": fake.username, "Secret": "revoked"}
    with pytest.raises(ConnectorError) as err:
        client.request(
            "POST", fake.zone_url + "V1.0/Companies/query", json=QUERY, headers=headers, idempotent=True
        )
    assert (err.value.status, err.value.retryable, sleeps) == (401, False, [])


@pytest.mark.parametrize("value", ["-5", "nan", "NaN", "inf", "soon", "Fri, 32 Foo 2026 99:00:00 GMT"])
def test_a_retry_after_that_is_no_delay_gets_the_usual_backoff_not_an_instant_retry(fake, value) -> None:
    sleeps: list[float] = []
    fake.fail_next(429, retry_after=value, times=4)
    resp = _post(HttpClient(timeout=5, max_backoff=60, sleep=sleeps.append), fake)
    assert resp.status_code == 200
    assert sleeps == [1.0, 2.0, 4.0, 8.0]


def test_a_retry_after_date_waits_until_then_and_a_past_date_not_at_all(fake) -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    sleeps: list[float] = []
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    fake.fail_next(503, retry_after=soon, times=1)
    _post(HttpClient(timeout=5, max_backoff=60, sleep=sleeps.append), fake)
    fake.fail_next(503, retry_after=past, times=1)
    _post(HttpClient(timeout=5, max_backoff=60, sleep=sleeps.append), fake)
    assert 15 <= sleeps[0] <= 20 and sleeps[1] == 0.0


@pytest.mark.parametrize(("value", "kept"), [("1e9", 6 * 3600.0), ("inf", None), ("120", 120.0)])
def test_the_retry_after_a_caller_sees_is_finite_and_at_most_six_hours(fake, value, kept) -> None:
    fake.fail_next(429, retry_after=value, times=10)
    with pytest.raises(ConnectorError) as err:
        _post(HttpClient(timeout=5, max_retries=1, sleep=lambda s: None), fake)
    assert err.value.retry_after == kept
