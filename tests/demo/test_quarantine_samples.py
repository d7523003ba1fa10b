"""The demo's two bad PSA records: the intake quarantines exactly them, with their reasons, and
imports the rest; the admin's exceptions queue shows them. A demo imported before they existed
reads them at its next poll."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from app.core.clock import FrozenClock
from app.demo.bad_records import add_quarantine_samples
from app.demo.dataset import generate
from app.demo.runner import _prepare
from app.jobs import poll_psa
from app.services import build_services
from app.web import create_app
from tests.conftest import make_config
from tests.web.admin.helpers import make_admin, sign_in

TODAY = date(2026, 3, 10)


def _quarantined(svc) -> list[tuple[str, str]]:
    return [(r["remote_id"], r["reason"]) for r in svc.store.all(
        "SELECT remote_id, reason FROM quarantine WHERE resolved_at IS NULL ORDER BY remote_id")]


def test_the_demo_export_holds_two_records_the_intake_quarantines_and_the_queue_shows(tmp_path):
    clock = FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))
    svc = build_services(make_config(tmp_path), clock=clock)
    export = tmp_path / "psa-export"
    generate(export, today=TODAY)
    short, again = add_quarantine_samples(export)
    assert add_quarantine_samples(export) == [short, again]  # once only
    records = json.loads((export / "invoices.json").read_text(encoding="utf-8"))
    assert len(records) == 2102

    report = poll_psa.run(svc)

    assert report.summary() == (
        "companies: created 42; contacts: created 130; invoices: created 2100, quarantined 2"
    )
    assert [remote_id for remote_id, _ in _quarantined(svc)] == ["990001", "990002"]
    [(_, first), (_, second)] = _quarantined(svc)
    assert first.startswith("lines sum to ") and " but subtotal is " in first
    assert second.startswith(f"invoice number {again} is already used by invoice ")
    assert svc.store.scalar("SELECT COUNT(*) FROM invoices") == 2100
    assert svc.store.scalar("SELECT COUNT(*) FROM invoices WHERE number = ?", (short,)) == 0

    admin = sign_in(create_app(svc).test_client(), make_admin(svc, "owner@northwind.example"), clock)
    queue = admin.get("/admin/exceptions").get_data(as_text=True)
    assert first in queue and second.replace("'", "&#39;") in queue


def test_a_demo_imported_before_the_samples_reads_them_at_its_next_poll(tmp_path):
    svc = build_services(make_config(tmp_path), clock=FrozenClock(datetime(2026, 3, 10, 15, tzinfo=UTC)))
    generate(tmp_path / "psa-export", today=TODAY)
    assert "quarantined" not in poll_psa.run(svc).summary()

    _prepare(tmp_path, fresh=False)  # what `cashloop demo` does at start

    assert poll_psa.run(svc).summary().endswith("invoices: quarantined 2")
    assert len(_quarantined(svc)) == 2
