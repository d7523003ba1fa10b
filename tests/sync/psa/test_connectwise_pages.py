"""ConnectWise pages as the backfill reads them: each record keeps the JSON text it arrived in, the
intake stores that text (no re-encoding) and a re-read of it writes nothing; the next page is
requested while the current one is used, and pages and errors still come in order."""

from __future__ import annotations

import json
import time

import pytest

from app.jobs import poll_psa
from app.services import build_services
from sync.base import ConnectorError
from sync.psa.connectwise import VendorRecord, json_records
from tests.psa_worlds import make_world


def test_json_records_keep_each_objects_text_as_sent() -> None:
    text = ' [ {"id": 1, "name": "Caf\\u00e9",  "n": 68.73} ,\n{"id":2,"tags":[1, 2]}, 3, "x"]\n'
    records = json_records(text)
    assert records == [{"id": 1, "name": "Café", "n": 68.73}, {"id": 2, "tags": [1, 2]}, 3, "x"]
    assert [type(r) for r in records[:2]] == [VendorRecord, VendorRecord]
    assert [r.json_text for r in records[:2]] == ['{"id": 1, "name": "Caf\\u00e9",  "n": 68.73}',
                                                  '{"id":2,"tags":[1, 2]}']
    assert json_records("[]") == [] and json_records('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("text", ["", "[", '[{"a": 1}', "[1,]", "[1] x", '[{"a": 1}}]', "[1 2]"])
def test_json_records_refuse_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        json_records(text)


@pytest.fixture
def world(frozen_clock):
    w = make_world("connectwise", frozen_clock.utc_now)
    yield w
    w.fake.stop()
    assert w.violations == []


def test_the_intake_stores_the_records_text_and_a_reread_writes_nothing(world, tmp_path, frozen_clock):
    world.populate(30)
    services = build_services(world.config(tmp_path, page_size=10), clock=frozen_clock)
    assert poll_psa.run(services).error is None
    rows = services.store.all("SELECT remote_id, raw_json FROM invoices")
    stored = {r["remote_id"]: r["raw_json"] for r in rows}
    assert len(stored) == 30
    for remote_id, text in stored.items():
        record = next(r for r in world.fake.invoices if str(r["id"]) == remote_id)
        assert json.loads(text) == record
        assert ": " in text  # the fake's own separators, as sent (json.dumps of the record)
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
