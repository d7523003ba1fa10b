"""PSA intake through poll_psa, once per PSA (ConnectWise, Autotask, HaloPSA), each against its
spec-checking fake on loopback and a real SQLite file: full sync, incremental polls, changes at
the source, failures, quarantine, and a void after a real card payment (localstripe)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import stripe

from app import checkout
from app.core.sync_status import connector_status
from app.jobs import poll_psa
from app.services import build_services
from tests.cw_world import open_quarantine
from tests.psa_worlds import BAD, make_world


@pytest.fixture
def world(psa_world):
    return psa_world


def _services(world, tmp_path, clock, **kw):
    return build_services(world.config(tmp_path, **kw), clock=clock)


def _snapshot(services) -> dict[str, list[tuple]]:
    """Every row of every table but sync_state (the poll's own status), in rowid order."""
    tables = [
        r[0]
        for r in services.store.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT IN ('sync_state', '_sqlite_migrations')"
        )
    ]
    return {t: [tuple(r) for r in services.store.all(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}


def test_a_full_sync_of_1200_invoices_reads_three_pages_and_every_invoice_sums_to_its_total(
    world, tmp_path, frozen_clock
):
    specs = world.populate(1200)
    services = _services(world, tmp_path, frozen_clock)

    report = poll_psa.run(services)

    assert report.error is None, report.error
    assert len(world.invoice_list_requests()) == 3
    s = services.store
    assert s.scalar("SELECT COUNT(*) FROM invoices WHERE source = ?", (world.kind,)) == 1200
    rows = {
        r["remote_id"]: r
        for r in s.all(
            "SELECT i.remote_id, i.total_minor, i.subtotal_minor, i.tax_minor, i.currency, i.status, "
            "i.is_approved, "
            "COUNT(l.id) AS n_lines, SUM(l.amount_minor) AS lines_minor, SUM(l.tax_minor) AS line_tax "
            "FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id GROUP BY i.id"
        )
    }
    assert len(rows) == 1200
    for spec in specs:
        row = rows[spec.remote_id]
        assert (row["total_minor"], row["tax_minor"], row["currency"]) == (spec.total, spec.tax, "USD")
        assert row["lines_minor"] + row["tax_minor"] == row["total_minor"] == spec.total
        assert row["lines_minor"] == row["subtotal_minor"] == sum(spec.lines)
        assert (row["n_lines"], row["status"], row["is_approved"]) == (3, "open", 1)
        if world.kind != "connectwise":  # CW's REST invoice does not itemise tax per line
            assert row["line_tax"] == spec.tax
    # To the cent, across the whole import.
    assert s.scalar("SELECT SUM(total_minor) FROM invoices") == sum(x.total for x in specs)
    assert s.scalar("SELECT COUNT(*) FROM clients") == 12
    assert s.scalar("SELECT COUNT(*) FROM contacts WHERE role = 'billing'") == 12
    assert s.scalar("SELECT COUNT(*) FROM quarantine") == 0


def test_a_second_poll_with_nothing_changed_writes_nothing(world, tmp_path, frozen_clock):
    world.populate(1200)
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    cursors = services.store.all("SELECT connector, object, cursor FROM sync_state ORDER BY object")
    before = _snapshot(services)
    frozen_clock.advance(timedelta(minutes=15))

    report = poll_psa.run(services)

    assert report.error is None, report.error
    assert _snapshot(services) == before
    assert services.store.all("SELECT connector, object, cursor FROM sync_state ORDER BY object") == cursors
    assert "created" not in report.summary() and "updated" not in report.summary()


def test_a_change_on_page_two_is_picked_up_by_the_next_poll(world, tmp_path, frozen_clock):
    specs = world.populate(1200)
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    target = specs[700]  # page 2 of 500
    frozen_clock.advance(timedelta(minutes=15))
    expected = world.change(target.remote_id)

    report = poll_psa.run(services)

    assert report.error is None, report.error
    row = services.store.one("SELECT * FROM invoices WHERE remote_id = ?", (target.remote_id,))
    assert {k: row[k] for k in expected} == expected
    assert report.counts["invoices"]["updated"] == 1
    lines = services.store.scalar(
        "SELECT SUM(amount_minor) FROM invoice_lines WHERE invoice_id = ?", (row["id"],)
    )
    assert lines + row["tax_minor"] == row["total_minor"]
    # Nothing else moved.
    assert services.store.scalar("SELECT SUM(total_minor) FROM invoices") == sum(x.total for x in specs)


def test_a_429_with_retry_after_is_waited_out_and_the_sync_completes(world, tmp_path, frozen_clock):
    world.populate(3, companies=1)
    services = _services(world, tmp_path, frozen_clock)
    world.fail_next(429, retry_after=2)

    started = time.monotonic()
    report = poll_psa.run(services)
    elapsed = time.monotonic() - started

    assert report.error is None, report.error
    assert 2.0 <= elapsed < 10
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 3


def test_a_refused_login_stops_the_connector_with_one_error_and_no_retry_storm(world, tmp_path, frozen_clock):
    world.populate(3, companies=1)
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    world.lock_out()
    world.fake.requests.clear()

    first = poll_psa.run(services)

    assert first.stopped and "401" in (first.error or "")
    refused = len(world.fake.requests)
    assert refused == (2 if world.kind == "halopsa" else 1)  # Halo: the API call, then one new token
    exceptions = services.store.all("SELECT kind, summary, resolved_at FROM exceptions")
    assert [(e["kind"], e["resolved_at"]) for e in exceptions] == [("sync_auth", None)]
    assert "credentials" in exceptions[0]["summary"]
    (status,) = connector_status(services.store)
    assert status.is_stopped and status.last_error and "401" in status.last_error

    # The scheduler's next polls do not knock again, and add no second error.
    for _ in range(3):
        frozen_clock.advance(timedelta(minutes=5))
        again = poll_psa.run(services)
        assert again.stopped and again.error.startswith("stopped:")
    assert len(world.fake.requests) == refused
    assert services.store.scalar("SELECT COUNT(*) FROM exceptions") == 1


def test_a_poll_by_hand_after_the_keys_are_fixed_clears_the_stop(world, tmp_path, frozen_clock):
    world.populate(3, companies=1)
    services = _services(world, tmp_path, frozen_clock)
    world.lock_out()
    assert poll_psa.run(services).stopped
    # The PSA admin restores the API user's key; the settings are unchanged, so the scheduler would
    # keep skipping: the MSP runs `cashloop sync` by hand.
    assert poll_psa.run(services).stopped
    if world.kind == "connectwise":
        world.fake.credentials = (world.fake.credentials[0], "priv-fake-0001")
    elif world.kind == "autotask":
        world.fake.secret = "at-secret-fake-0001"
    else:
        world.fake.client_secret = "halo-secret-fake-0001"

    report = poll_psa.run(services, retry_stopped=True)

    assert report.error is None and not report.stopped
    assert services.store.scalar("SELECT COUNT(*) FROM exceptions WHERE resolved_at IS NULL") == 0
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 3
    assert not connector_status(services.store)[0].is_stopped


def test_malformed_invoices_are_quarantined_each_with_its_reason_and_the_rest_imports(
    world, tmp_path, frozen_clock
):
    specs = world.populate(40, companies=4)
    expected = {
        specs[5 + i].remote_id: world.break_invoice(specs[5 + i].remote_id, how) for i, how in enumerate(BAD)
    }
    services = _services(world, tmp_path, frozen_clock)

    report = poll_psa.run(services)

    assert report.error is None, report.error
    reasons = {
        r["remote_id"]: r["reason"]
        for r in services.store.all(
            "SELECT remote_id, reason FROM quarantine WHERE object = 'invoice' AND resolved_at IS NULL"
        )
    }
    assert set(reasons) == set(expected)
    for remote_id, fragment in expected.items():
        assert fragment in reasons[remote_id], (remote_id, reasons[remote_id])
    imported = {r[0] for r in services.store.all("SELECT remote_id FROM invoices")}
    assert imported == {s.remote_id for s in specs} - set(expected)
    # The raw record is kept for the person who fixes it.
    raw = services.store.scalar("SELECT raw_json FROM quarantine WHERE remote_id = ?", (specs[5].remote_id,))
    assert specs[5].number in raw


def test_an_unpaid_invoice_voided_at_the_source_is_closed_in_the_portal(world, tmp_path, frozen_clock):
    specs = world.populate(5, companies=1)
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    frozen_clock.advance(timedelta(minutes=15))
    world.void(specs[2].remote_id)

    report = poll_psa.run(services)

    assert report.error is None
    assert (
        services.store.scalar("SELECT status FROM invoices WHERE remote_id = ?", (specs[2].remote_id,))
        == "void"
    )
    assert services.store.scalar("SELECT COUNT(*) FROM exceptions") == 0


def test_an_unpaid_invoice_deleted_at_the_source_disappears_from_the_portal(world, tmp_path, frozen_clock):
    specs = world.populate(5, companies=1)
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    world.delete(specs[1].remote_id)

    report = poll_psa.run(services, full=True)

    assert report.error is None, report.error
    assert report.counts["deleted"]["deleted"] == 1
    rows = dict(services.store.all("SELECT remote_id, status FROM invoices"))
    assert rows.pop(specs[1].remote_id) == "deleted"
    assert set(rows.values()) == {"open"}
    # The check runs again only when it is due (deletion_check_hours), not on every poll.
    frozen_clock.advance(timedelta(minutes=15))
    assert "deleted" not in poll_psa.run(services).counts


def test_a_listing_that_lost_most_invoices_closes_none_and_says_why(world, tmp_path, frozen_clock):
    specs = world.populate(30, companies=1)
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    for spec in specs[:25]:
        world.delete(spec.remote_id)

    report = poll_psa.run(services, full=True)

    assert "no longer lists 25 of 30 invoices" in (report.error or "")
    assert services.store.scalar("SELECT COUNT(*) FROM invoices WHERE status = 'deleted'") == 0


def _pay(services, stripe_double, remote_id: str, email: str) -> int:
    inv = services.store.one(
        "SELECT id, client_id, token, total_minor FROM invoices WHERE remote_id = ?", (remote_id,)
    )
    client = stripe.StripeClient(stripe_double.secret_key, base_addresses={"api": stripe_double.api_base})
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    )
    co = checkout.begin_checkout(
        services, client_id=inv["client_id"], login_email=email, items=[(inv["token"], inv["total_minor"])]
    )
    result = checkout.confirm_checkout(
        services,
        client_id=inv["client_id"],
        payment_token=co.payment_token,
        payment_method=str(pm.id),
        save=False,
    )
    assert result.status == "succeeded"
    return int(inv["id"])


def _ledger(services, invoice_id: int) -> list[tuple]:
    return [
        tuple(r)
        for r in services.store.all(
            "SELECT p.id, p.status, p.amount_minor, a.amount_minor, a.invoice_id FROM payments p "
            "JOIN allocations a ON a.payment_id = p.id WHERE a.invoice_id = ? ORDER BY a.id",
            (invoice_id,),
        )
    ]


def test_a_void_after_payment_lands_in_the_exceptions_queue_and_the_payment_is_untouched(
    world, tmp_path, frozen_clock, stripe_double, mail
):
    specs = world.populate(4, companies=1)
    services = _services(
        world, tmp_path, frozen_clock, stripe_base=stripe_double.api_base, smtp_port=mail.port
    )
    poll_psa.run(services)
    invoice_id = _pay(services, stripe_double, specs[0].remote_id, "ap0@client0.example")
    ledger = _ledger(services, invoice_id)
    before = dict(
        services.store.one("SELECT status, total_minor, kind FROM invoices WHERE id = ?", (invoice_id,))
    )
    frozen_clock.advance(timedelta(minutes=15))
    world.void(specs[0].remote_id)

    report = poll_psa.run(services)
    poll_psa.run(services)  # and again: still one exception

    assert report.counts["invoices"]["held"] == 1
    exceptions = services.store.all(
        "SELECT kind, summary, detail_json FROM exceptions WHERE resolved_at IS NULL"
    )
    assert [e["kind"] for e in exceptions] == ["source_change_on_paid_invoice"]
    assert specs[0].number in exceptions[0]["summary"] and "status open -> void" in exceptions[0]["summary"]
    assert json.loads(exceptions[0]["detail_json"])["invoice_id"] == invoice_id
    after = dict(
        services.store.one("SELECT status, total_minor, kind FROM invoices WHERE id = ?", (invoice_id,))
    )
    assert after == before == {**before, "status": "open"}
    assert _ledger(services, invoice_id) == ledger and ledger[0][1] == "succeeded"
    assert ledger[0][2] == specs[0].total
    (status,) = connector_status(services.store)
    assert status.held_changes == 1


def test_invoices_waiting_for_their_company_import_once_the_company_is_fixed_at_the_source(
    world, tmp_path, frozen_clock
):
    specs = world.populate(6, companies=2)
    waiting = [s for s in specs if s.company == 101]
    world.rename_company(101, "")  # refused (no name): its invoices wait for it in quarantine
    services = _services(world, tmp_path, frozen_clock)
    poll_psa.run(services)
    assert set(open_quarantine(services)) == {s.remote_id for s in waiting}
    assert set(open_quarantine(services).values()) == {"invoice's company 101 is unknown"}
    contacts_waiting = open_quarantine(services, "contact")
    assert contacts_waiting and set(contacts_waiting.values()) == {"contact's company 101 is unknown"}
    frozen_clock.advance(timedelta(minutes=15))
    world.change(next(s for s in specs if s.company == 100).remote_id)  # business goes on
    world.edit_contact(100)
    poll_psa.run(services)  # and the cursors move on, past the waiting records' own stamps
    frozen_clock.advance(timedelta(minutes=15))
    gone, waiting = waiting[0], waiting[1:]
    world.delete(gone.remote_id)  # one of them is deleted at the PSA meanwhile
    world.rename_company(101, "Client 01 Fixed Ltd")  # fixed at the PSA; its invoices stay unchanged

    report = poll_psa.run(services)

    assert report.error is None, report.error
    assert open_quarantine(services) == {
        gone.remote_id: "invoice's company 101 is unknown; read again once the company arrived, "
        "the PSA no longer has it"
    }
    assert open_quarantine(services, "contact") == {}
    assert services.store.scalar(
        "SELECT COUNT(*) FROM contacts k JOIN clients c ON c.id = k.client_id WHERE c.remote_id = '101'"
    ) == len(contacts_waiting)
    rows = services.store.all(
        "SELECT i.remote_id, i.total_minor, c.name FROM invoices i JOIN clients c ON c.id = i.client_id "
        "WHERE c.remote_id = '101'"
    )
    expected = {(s.remote_id, s.total, "Client 01 Fixed Ltd") for s in waiting}
    assert {(r[0], r[1], r[2]) for r in rows} == expected
    assert report.counts["invoices"]["created"] == len(waiting)
    asked = len(world.fake.requests)
    again = poll_psa.run(services)
    assert again.counts["invoices"]["created"] == 0 and len(open_quarantine(services)) == 1
    assert again.counts["contacts"]["created"] == 0
    # The deleted invoice is not asked for again.
    assert not any(r.path.endswith(f"/{gone.remote_id}") for r in world.fake.requests[asked:])


def test_a_paid_invoice_moved_to_another_company_at_the_source_is_held_and_stays_with_its_payer(
    world, tmp_path, frozen_clock, stripe_double, mail
):
    specs = world.populate(4, companies=2)
    paid, other = specs[0], next(s for s in specs if s.company != specs[0].company)
    services = _services(
        world, tmp_path, frozen_clock, stripe_base=stripe_double.api_base, smtp_port=mail.port
    )
    poll_psa.run(services)
    c = paid.company - 100  # populate() names company 100 + c's billing contact ap{c}@client{c}
    invoice_id = _pay(services, stripe_double, paid.remote_id, f"ap{c}@client{c}.example")
    ledger = _ledger(services, invoice_id)
    owner = services.store.scalar("SELECT client_id FROM invoices WHERE id = ?", (invoice_id,))
    frozen_clock.advance(timedelta(minutes=15))
    world.move(paid.remote_id, other.company)

    report = poll_psa.run(services)

    assert report.counts["invoices"]["held"] == 1
    assert services.store.scalar("SELECT client_id FROM invoices WHERE id = ?", (invoice_id,)) == owner
    (exc,) = services.store.all("SELECT kind, summary FROM exceptions WHERE resolved_at IS NULL")
    assert exc["kind"] == "source_change_on_paid_invoice"
    assert f"company {paid.company} -> {other.company}" in exc["summary"], exc["summary"]
    assert _ledger(services, invoice_id) == ledger


def test_a_paid_invoice_deleted_at_the_source_is_held_for_a_person(
    world, tmp_path, frozen_clock, stripe_double, mail
):
    specs = world.populate(4, companies=1)
    services = _services(
        world, tmp_path, frozen_clock, stripe_base=stripe_double.api_base, smtp_port=mail.port
    )
    poll_psa.run(services)
    invoice_id = _pay(services, stripe_double, specs[1].remote_id, "ap0@client0.example")
    world.delete(specs[1].remote_id)

    report = poll_psa.run(services, full=True)

    assert report.counts["deleted"] == {"held": 1}
    assert services.store.scalar("SELECT status FROM invoices WHERE id = ?", (invoice_id,)) == "open"
    (summary,) = [
        r[0] for r in services.store.all("SELECT summary FROM exceptions WHERE resolved_at IS NULL")
    ]
    assert "deleted at the source" in summary


def test_sync_status_shows_last_success_counts_and_quarantine_per_connector(world, tmp_path, frozen_clock):
    specs = world.populate(20, companies=2)
    world.break_invoice(specs[3].remote_id, "missing total")
    services = _services(world, tmp_path, frozen_clock)

    poll_psa.run(services)

    (status,) = connector_status(services.store)
    assert status.connector == world.kind
    assert status.last_success_at == "2026-03-10T15:00:00.000000Z" and status.last_error is None
    assert status.quarantined == 1 and not status.is_stopped
    by_object = {o.object: o for o in status.objects}
    assert by_object["companies"].counts == {"created": 2}
    assert by_object["invoices"].counts == {"created": 19, "quarantined": 1}
    assert by_object["invoices"].last_success_at == status.last_success_at
    assert status.counts["created"] == 2 + by_object["contacts"].counts["created"] + 19


def test_a_card_payment_is_written_back_where_the_psa_can_take_it_and_never_counted_twice(
    world, tmp_path, frozen_clock, stripe_double, mail
):
    from app.jobs import drain_outbox

    specs = world.populate(3, companies=1)
    services = _services(
        world, tmp_path, frozen_clock, stripe_base=stripe_double.api_base, smtp_port=mail.port
    )
    poll_psa.run(services)
    invoice_id = _pay(services, stripe_double, specs[0].remote_id, "ap0@client0.example")
    drain_outbox.run(services)
    drain_outbox.run(services)  # a second drain sends nothing again

    psa_rows = services.store.all("SELECT status FROM outbox WHERE kind = 'psa_payment'")
    assert [r[0] for r in psa_rows] == ["done"]
    refs = services.store.all("SELECT system, remote_id FROM external_refs WHERE kind = 'psa_payment'")
    if world.kind == "connectwise":
        assert [p["amount"] for p in world.fake.payments] == [specs[0].total / 100]
        assert [r[0] for r in refs] == ["connectwise"]
    elif world.kind == "halopsa":
        (paid,) = world.fake.payments
        assert (paid["invoice_id"], paid["amount"]) == (int(specs[0].remote_id), specs[0].total / 100)
        assert paid["thirdpartyid"].startswith("cashloop:v1-")
        assert [r[0] for r in refs] == ["halopsa"]
    else:  # Autotask has no invoice payment in its API: nothing is sent, nothing is pretended
        assert refs == [] and all("Payment" not in r.path for r in world.fake.requests)
    # The PSA now shows the invoice paid (ours); the next poll must not count that payment again.
    frozen_clock.advance(timedelta(minutes=15))
    if world.kind == "autotask":
        world.change(specs[0].remote_id)  # the MSP marks it paid in Autotask by hand
    report = poll_psa.run(services)
    assert report.error is None
    assert (
        services.store.scalar(
            "SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (invoice_id,)
        )
        == 0
    )
    assert services.store.scalar("SELECT paid_elsewhere_minor FROM invoices WHERE id = ?", (invoice_id,)) == 0
    assert services.store.scalar("SELECT COUNT(*) FROM exceptions WHERE resolved_at IS NULL") == 0


@pytest.mark.parametrize("kind", ["connectwise", "halopsa"])
def test_only_invoices_finalised_at_the_psa_are_shown(kind, tmp_path, frozen_clock):
    world = make_world(kind, frozen_clock.utc_now)
    try:
        specs = world.populate(3, companies=1)
        draft = world._record(specs[1].remote_id)
        if kind == "connectwise":
            draft["status"] = {"id": 1, "name": "New"}  # CW's status for an invoice not yet sent
        else:
            draft["posted"] = False  # a Halo draft
        services = _services(world, tmp_path, frozen_clock)
        poll_psa.run(services)
        visible = {
            r[0]
            for r in services.store.all(
                "SELECT remote_id FROM invoices WHERE status = 'open' AND is_approved = 1"
            )
        }
        assert visible == {specs[0].remote_id, specs[2].remote_id}
        # Once finalised at the PSA, it shows.
        frozen_clock.advance(timedelta(minutes=15))
        if kind == "connectwise":
            world.fake.touch(draft, frozen_clock.utc_now(), status={"id": 2, "name": "Sent"})
        else:
            world.fake.touch(draft, posted=True)
        poll_psa.run(services)
        assert (
            services.store.scalar(
                "SELECT is_approved FROM invoices WHERE remote_id = ?", (specs[1].remote_id,)
            )
            == 1
        )
        assert world.violations == []
    finally:
        world.fake.stop()
