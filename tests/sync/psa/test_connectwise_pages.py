"""ConnectWise pages as the backfill reads them: decoded by sync.jsonio (orjson, with the json
module deciding what orjson refuses), stored as compact JSON, and a re-read writes nothing; the next
page is requested while the current one is used, and pages and errors still come in order."""

from __future__ import annotations

import json
import time

import pytest

from app.jobs import poll_psa
from app.services import build_services
from sync import jsonio
from sync.base import ConnectorError
from tests.psa_worlds import make_world


def test_jsonio_reads_what_json_reads_and_writes_it_back_compact() -> None:
    text = ' [ {"id": 1, "name": "Caf\u00e9",  "n": 68.73} ,\n{"id":2,"tags":[1, 2]}, 3, "x"]\n'
    assert jsonio.loads(text) == jsonio.loads(text.encode()) == json.loads(text)
    assert jsonio.dumps(jsonio.loads(text)[0]) == '{"id":1,"name":"Café","n":68.73}'
    # What orjson refuses but JSON allows comes back as json reads it: an id past 64 bits, an
    # escaped lone surrogate, NaN; and goes out as json writes it.
    odd = '[{"id": 123456789012345678901234567890, "name": "\\ud800", "n": NaN}]'
    decoded = jsonio.loads(odd)
    assert decoded[0]["id"] == 123456789012345678901234567890 and decoded[0]["name"] == "\ud800"
    assert json.loads(jsonio.dumps(decoded[0]))["id"] == 123456789012345678901234567890
    assert jsonio.dumps({1: "a"}) == '{"1":"a"}'
    assert jsonio.dumps({"d": object}) == '{"d":"<class \'object\'>"}'


@pytest.mark.parametrize(
    "text", ["", "[", '[{"a": 1}', "[1,]", "[1] x", '[{"a": 1}}]', "[1 2]", b"[\"\xff\"]"]
)
def test_jsonio_refuses_what_json_refuses(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsonio.loads(text)


@pytest.fixture
def world(frozen_clock):
    w = make_world("connectwise", frozen_clock.utc_now)
    yield w
    w.fake.stop()
    assert w.violations == []


def test_the_intake_stores_each_record_as_compact_json_and_a_reread_writes_nothing(
    world, tmp_path, frozen_clock
):
    world.populate(30)
    services = build_services(world.config(tmp_path, page_size=10), clock=frozen_clock)
    assert poll_psa.run(services).error is None
    rows = services.store.all("SELECT remote_id, raw_json FROM invoices")
    stored = {r["remote_id"]: r["raw_json"] for r in rows}
    assert len(stored) == 30
    for remote_id, text in stored.items():
        record = next(r for r in world.fake.invoices if str(r["id"]) == remote_id)
        assert json.loads(text) == record
        assert text == json.dumps(record, separators=(",", ":"), ensure_ascii=False)  # compact
    before = services.store.all("SELECT id, source_hash, synced_at FROM invoices ORDER BY id")
    report = poll_psa.run(services, full=True)
    assert report.error is None and report.counts["invoices"] == {"unchanged": 30}
    assert services.store.all("SELECT id, source_hash, synced_at FROM invoices ORDER BY id") == before


def test_pages_come_in_order_and_an_error_on_a_later_page_comes_after_the_pages_before(
    world, tmp_path, frozen_clock
):
    world.populate(25)
    services = build_services(world.config(tmp_path, page_size=10), clock=frozen_clock)
    pages = services.psa.invoices(None)
    first = next(pages)
    assert [i.remote_id for i in first.items] == [str(50_000 + n) for n in range(10)]
    # The second page is requested while the first is in our hands (nothing else asked for it).
    deadline = time.monotonic() + 10
    while len(world.invoice_list_requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(world.invoice_list_requests()) == 2
    world.fake.fail_next(400, path="/finance/invoices")  # the third page's request fails
    second = next(pages)
    assert [i.remote_id for i in second.items] == [str(50_010 + n) for n in range(10)]
    with pytest.raises(ConnectorError, match="HTTP 400"):
        next(pages)
    assert len(world.invoice_list_requests()) == 3
