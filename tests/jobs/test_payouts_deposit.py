"""The payout's way in and out: Stripe POSTs payout.paid to the webhook endpoint and the payout is
booked; the accounting_deposit handler reads each payment's booking when it delivers (not when the
payout was queued); the reconcile job is on the schedule."""

from __future__ import annotations

import json
import time
from datetime import date

from app.core import payouts
from app.jobs import accounting_deposit, drain_outbox, run_autopay, scheduler
from app.web import create_app
from tests.autopay_world import enable, engine_services, saved_card
from tests.conftest import LiveServer, free_port
from tests.factories import make_client, make_invoice


def _paid(s, double, amounts):
    client_id = make_client(s)
    enable(s, client_id, saved_card(s, double, client_id))
    for i, amount in enumerate(amounts):
        make_invoice(s, f"INV-80{i}", total_minor=amount, due_on=date(2026, 3, 1))
    assert run_autopay.run(s).succeeded == len(amounts)


def test_payout_paid_posted_by_stripe_to_the_webhook_is_booked_once(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    double.reset()
    port = free_port()
    s = engine_services(tmp_path, frozen_clock, double, mail, port=port)
    _paid(s, double, [4_000, 6_000])
    server = LiveServer(create_app(s), port).start()
    double.register_webhook(f"{server.url}/stripe/webhook", str(s.config.stripe.webhook_secret),
                            webhook_id="payouts-test", events=["payout.paid", "payout.failed"])
    try:
        po = stripe_ext.payout("usd")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not s.store.scalar(
            "SELECT deposit_key FROM payouts WHERE processor_ref = ?", (po["id"],)
        ):
            time.sleep(0.1)
    finally:
        double.unregister_webhook("payouts-test")
        server.stop()

    # (Only this payout's event: a payout of an earlier test may still be delivered to this endpoint.)
    event = s.store.one(
        "SELECT type, processed_at, error FROM stripe_events WHERE type = 'payout.paid' "
        "AND json_extract(payload_json, '$.data.object.id') = ?", (po["id"],))
    assert event is not None and event["processed_at"] and event["error"] is None
    entries = s.store.all("SELECT idem_key, payload_json FROM outbox WHERE kind = 'accounting_deposit'")
    assert [e["idem_key"] for e in entries] == [payouts.deposit_key(po["id"])]
    payload = json.loads(entries[0]["payload_json"])
    assert payload["amount_minor"] == po["amount"] == 10_000 - (146 + 204)  # 2.9% + 0.30 on each
    assert payload["fee_minor"] == 350
    assert sorted(ln["amount_minor"] for ln in payload["lines"]) == [4_000, 6_000]


def test_the_deposit_handler_reads_each_payments_booking_when_it_delivers(
    tmp_path, frozen_clock, stripe_ext, mail
):
    double = stripe_ext.double
    double.reset()
    s = engine_services(tmp_path, frozen_clock, double, mail)
    _paid(s, double, [3_000, 9_000])
    po = stripe_ext.payout("usd")
    assert payouts.sync_payout(s, po["id"]) == "booked"  # queued before any payment reached the books
    payload = json.loads(s.store.scalar("SELECT payload_json FROM outbox WHERE kind = 'accounting_deposit'"))

    before = accounting_deposit.deposit(s, payload, "journal")
    drain_outbox.run(s)
    after = accounting_deposit.deposit(s, payload, "journal")

    booked = {
        r["local_id"]: r["remote_id"]
        for r in s.store.all("SELECT local_id, remote_id FROM external_refs WHERE kind = 'journal_payment'")
    }
    assert len(booked) == 2
    assert [ln.remote_payment_ref for ln in before.lines] == [None, None]
    by_token = {p["token"]: booked[p["id"]] for p in s.store.all("SELECT id, token FROM payments")}
    assert {ln.payment_token: ln.remote_payment_ref for ln in after.lines} == by_token
    assert after.amount_minor == sum(ln.amount_minor for ln in after.lines) - after.fee_minor == po["amount"]
    deposit_ref = s.store.one("SELECT system, remote_id FROM external_refs WHERE kind = 'accounting_deposit'")
    assert (deposit_ref["system"], deposit_ref["remote_id"]) == ("journal", payouts.deposit_key(po["id"]))


def test_the_reconcile_job_is_scheduled_at_the_configured_interval(tmp_path, frozen_clock, stripe_ext, mail):
    s = engine_services(tmp_path, frozen_clock, stripe_ext.double, mail)
    sched = scheduler.start(s)
    try:
        job = sched.apscheduler.get_job("reconcile_payouts")
        assert job is not None
        assert job.trigger.interval.total_seconds() == s.config.stripe.payout_reconcile_minutes * 60 == 3600
    finally:
        scheduler.stop(sched)
