"""The exceptions queue: every kind with its cause and the action that resolves it, each audited;
the outbox view and the sync page."""

from __future__ import annotations

import json
import re

from app.core.audit import raise_exception
from app.core.clock import to_db
from app.core.outbox import enqueue
from app.jobs import drain_outbox
from app.jobs.intake import quarantine
from tests.web.admin.helpers import post


def _cell(page: str, element_id: str) -> str:
    """The text of a table cell, tags dropped and spaces collapsed."""
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</td>', page, re.S)
    assert found, element_id
    return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())


def _quarantine(svc, remote_id: str = "cw-fake-0042", reason: str = "total is not a number: 'abc'") -> int:
    """What intake does with a bad record (and does again each time it reads it)."""
    with svc.store.write() as db:
        quarantine(
            db,
            svc.clock,
            source="connectwise",
            obj="invoice",
            remote_id=remote_id,
            reason=reason,
            raw_json="{}",
        )
    return int(svc.store.scalar("SELECT id FROM quarantine WHERE remote_id = ?", (remote_id,)))


def _dead_outbox(svc) -> int:
    """An email entry that the mail server refuses permanently (no sink listens on port 9)."""
    with svc.store.write() as db:
        enqueue(
            db,
            svc.clock,
            kind="email",
            key="test-dead-email",
            payload={"template": "no_such_template", "to": ["a@b.example"], "context": {}},
        )
    drain_outbox.run(svc)
    return int(
        svc.store.scalar("SELECT id FROM outbox WHERE idem_key = 'test-dead-email' AND status = 'dead'")
    )


def test_the_queue_lists_every_kind_with_its_cause_and_action(svc, as_owner):
    q = _quarantine(svc)
    outbox_id = _dead_outbox(svc)
    with svc.store.write() as db:
        raise_exception(
            db,
            svc.clock,
            kind="amount_mismatch",
            ref="payment:7",
            summary="amount mismatch: payment tok expected 10000 USD but the processor reports 1000000 USD",
        )
        raise_exception(
            db, svc.clock, kind="dispute", ref="dispute:dp_1", summary="payment tok is disputed (fraudulent)"
        )
        raise_exception(
            db,
            svc.clock,
            kind="autopay_exhausted",
            ref="invoice:1:attempt:3",
            summary="autopay gave up on invoice INV-1 after 4 attempts: card_declined",
        )
        raise_exception(
            db, svc.clock, kind="email_refused", ref="x@y:k", summary="the mail server refused x@y"
        )
        raise_exception(
            db, svc.clock, kind="something_new", ref="r", summary="a kind the console does not know"
        )
        db.execute(
            "INSERT INTO sync_state (connector, object, last_run_at, last_error) "
            "VALUES ('connectwise', 'invoices', ?, '401 Unauthorized')",
            (to_db(svc.clock.utc_now()),),
        )
    page = as_owner.get("/admin/exceptions").get_data(as_text=True)
    for text in (
        "Amount mismatch",
        "reports 1000000 USD",
        "Compare the payment in Stripe",
        "Dispute (chargeback)",
        "Answer the dispute in Stripe",
        "Autopay failed after the last retry",
        "update their card",
        "Email refused",
        "Correct the contact&#39;s email address",
        "Something new",
        "Look into it, then resolve with a note.",
        "Quarantined PSA invoice cw-fake-0042",
        "total is not a number",
        "Correct the record in the PSA",
        "Sync error: connectwise invoices",
        "401 Unauthorized",
        "Delivery failed",
        "no_such_template",
    ):
        assert text in page, text
    assert 'id="retry-' in page and f"/admin/outbox/{outbox_id}/retry" in page
    assert f"/admin/quarantine/{q}/dismiss" in page


def test_resolving_an_exception_takes_it_off_the_queue_and_audits_the_note(svc, as_finance):
    with svc.store.write() as db:
        raise_exception(
            db, svc.clock, kind="overpayment", ref="invoice:3", summary="invoice INV-3 is overpaid"
        )
    exception_id = svc.store.scalar("SELECT id FROM exceptions")
    response = post(
        as_finance, f"/admin/exceptions/{exception_id}/resolve", {"note": "refunded 5.00 by check"}
    )
    assert response.status_code == 302
    assert "invoice INV-3 is overpaid" not in as_finance.get("/admin/exceptions").get_data(as_text=True)
    row = svc.store.one("SELECT * FROM audit_log WHERE action = 'exception.resolved'")
    assert row["actor"] == "admin:finance@northwind.example"
    assert json.loads(row["detail_json"]) == {
        "kind": "overpayment",
        "ref": "invoice:3",
        "note": "refunded 5.00 by check",
    }
    again = post(as_finance, f"/admin/exceptions/{exception_id}/resolve", {"note": "twice"})
    assert "already resolved" in as_finance.get(again.headers["Location"]).get_data(as_text=True)


def test_dismissing_a_quarantined_record_is_audited_and_a_changed_bad_record_comes_back(svc, as_finance):
    q = _quarantine(svc)
    post(as_finance, f"/admin/quarantine/{q}/dismiss", {"note": "test record, deleted in the PSA"})
    assert svc.store.scalar("SELECT resolved_at FROM quarantine WHERE id = ?", (q,)) is not None
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'quarantine.dismissed'") == 1
    _quarantine(svc)  # intake reads the same bad record again: it stays dismissed
    assert "cw-fake-0042" not in as_finance.get("/admin/exceptions").get_data(as_text=True)
    _quarantine(svc, reason="due date is not a date: '31/02'")  # changed in the PSA, still bad
    assert "31/02" in as_finance.get("/admin/exceptions").get_data(as_text=True)


def test_retrying_a_dead_outbox_entry_gives_it_fresh_attempts_and_a_new_death_reopens_it(svc, as_finance):
    outbox_id = _dead_outbox(svc)
    assert post(as_finance, f"/admin/outbox/{outbox_id}/retry").status_code == 302
    row = svc.store.one("SELECT status, attempts FROM outbox WHERE id = ?", (outbox_id,))
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert svc.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'outbox_dead'") == 0
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'outbox.retried'") == 1
    drain_outbox.run(svc)  # the template is still missing: it dies again, and the queue says so
    assert (
        svc.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'outbox_dead' AND resolved_at IS NULL")
        == 1
    )
    refused = post(as_finance, f"/admin/outbox/{outbox_id + 1000}/retry")
    assert "Only a dead outbox entry" in as_finance.get(refused.headers["Location"]).get_data(as_text=True)


def test_the_outbox_view_filters_pending_dead_and_retried(svc, as_owner):
    _dead_outbox(svc)
    with svc.store.write() as db:
        enqueue(db, svc.clock, kind="journal_payment", key="k-pending", payload={})
        enqueue(db, svc.clock, kind="psa_payment", key="k-retried", payload={})
        db.execute("UPDATE outbox SET attempts = 2, last_error = 'timeout' WHERE idem_key = 'k-retried'")
    views = {
        v: as_owner.get(f"/admin/outbox?view={v}").get_data(as_text=True)
        for v in ("pending", "dead", "retried")
    }
    assert "2 entries" in views["pending"] and "journal_payment" in views["pending"]
    assert "1 entry" in views["dead"] and "no_such_template" in views["dead"]
    assert "1 entry" in views["retried"] and "timeout" in views["retried"]


def test_the_sync_page_shows_each_connector_object_with_its_cursor_counts_and_error(svc, as_owner):
    now = to_db(svc.clock.utc_now())
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO sync_state (connector, object, cursor, last_run_at, last_success_at, counts_json) "
            "VALUES ('files', 'invoices', '2026-03-10T14:00:00Z', ?, ?, '{\"created\": 60}')",
            (now, now),
        )
        db.execute(
            "INSERT INTO sync_state (connector, object, last_run_at, last_error) "
            "VALUES ('files', 'contacts', ?, 'contacts.json: not valid JSON')",
            (now,),
        )
    page = as_owner.get("/admin/sync").get_data(as_text=True)
    assert "created 60" in page and "contacts.json: not valid JSON" in page
    # Times read like every other date of the console: "March 10, 2026", then the local time.
    assert "Last run March 10, 2026 10:00 · every object read without error never" in page
    assert _cell(page, "counts-files-invoices") == "created 60"
    assert _cell(page, "counts-files-contacts") == "—"  # that read failed: no counts to show


def test_a_poll_that_found_nothing_new_says_so_in_the_counts(svc, as_owner):
    from app.jobs import poll_psa

    (svc.config.data_path.parent / "psa" / "companies.json").write_text(
        '[{"id": 1, "name": "Acme Dental LLC", "_info": {"lastUpdated": "2026-03-01T00:00:00Z"}}]'
    )
    poll_psa.run(svc)
    first = as_owner.get("/admin/sync").get_data(as_text=True)
    assert _cell(first, "counts-files-companies") == "created 1"
    poll_psa.run(svc)  # the same file again: an empty counts object is stored
    assert json.loads(svc.store.scalar(
        "SELECT counts_json FROM sync_state WHERE object = 'companies'")) == {}
    again = as_owner.get("/admin/sync").get_data(as_text=True)
    assert _cell(again, "counts-files-companies") == "nothing new"
    # What arrived in all stays on the page: the company is in the store.
    assert _cell(again, "stored-files-companies") == "1"
    assert _cell(again, "stored-files-invoices") == "0"


def test_the_email_log_filters_by_status_and_address(svc, as_owner):
    now = to_db(svc.clock.utc_now())
    with svc.store.write() as db:
        for to, status in (("ap@acme.example", "sent"), ("ap@globex.example", "failed")):
            db.execute(
                "INSERT INTO email_log (at, kind, to_addr, subject, status) VALUES (?, 'receipt', ?, "
                "'Receipt for your payment', ?)",
                (now, to, status),
            )
    # Addresses wrap at their joints (<wbr>), which copying or reading them ignores.
    failed = as_owner.get("/admin/emails?status=failed").get_data(as_text=True).replace("<wbr>", "")
    assert "ap@globex.example" in failed and "ap@acme.example" not in failed
    assert "1 email<" in as_owner.get("/admin/emails?q=acme").get_data(as_text=True)


def test_a_quarantined_invoice_is_titled_with_its_number_for_every_psa(psa_world, tmp_path, frozen_clock):
    from app.jobs import poll_psa
    from app.services import build_services
    from app.web import create_app
    from tests.web.admin.helpers import make_admin, sign_in

    specs = psa_world.populate(4, companies=1)
    psa_world.break_invoice(specs[1].remote_id, "missing total")
    fragment = psa_world.break_invoice(specs[2].remote_id, "lines not summing")
    services = build_services(psa_world.config(tmp_path), clock=frozen_clock)
    assert poll_psa.run(services).error is None
    owner = make_admin(services, "o@msp.example", "owner")
    admin = sign_in(create_app(services).test_client(), owner, frozen_clock)
    client_id = services.store.scalar("SELECT id FROM clients")

    page = admin.get("/admin/exceptions").get_data(as_text=True)

    # Named by its number and its client (the company the PSA record names), with a link to it.
    whose = "Client 00 — Ünïcode &amp; Co"
    assert f"Quarantined PSA invoice {specs[1].remote_id} ({specs[1].number}) of {whose}</h2>" in page
    q = services.store.scalar("SELECT id FROM quarantine WHERE remote_id = ?", (specs[1].remote_id,))
    assert f'href="/admin/clients/{client_id}" id="client-of-quarantine-{q}"' in page
    # Amounts in the reason read as money: "$1,234.50", never a bare "1234.50".
    reason = services.store.scalar("SELECT reason FROM quarantine WHERE remote_id = ?", (specs[2].remote_id,))
    assert fragment in reason, reason
    assert re.search(r"\$[\d,]+\.\d\d but (sub)?total is \$[\d,]+\.\d\d", reason), reason


def test_quarantined_companies_and_contacts_are_titled_with_their_names(svc, as_owner):
    records = {
        "cw-co-7": ("company", {"id": 7, "name": " Fabrikam Ltd ", "identifier": "Fab"}),
        "at-co-8": ("company", {"id": 8, "companyName": "Tailspin Toys"}),
        "ct-9": ("contact", {"id": 9, "firstName": "Ana", "lastName": "Silva"}),
        "bad-10": ("invoice", None),  # stored as it came: not JSON, so no label
        "same-11": ("invoice", {"id": 11, "invoiceNumber": "same-11"}),  # the id again adds nothing
    }
    with svc.store.write() as db:
        for remote_id, (obj, raw) in records.items():
            text = "{not json" if raw is None else json.dumps(raw)
            quarantine(db, svc.clock, source="cw", obj=obj, remote_id=remote_id, reason="r", raw_json=text)

    page = as_owner.get("/admin/exceptions").get_data(as_text=True)

    assert "Quarantined PSA company cw-co-7 (Fabrikam Ltd)<" in page
    assert "Quarantined PSA company at-co-8 (Tailspin Toys)<" in page
    assert "Quarantined PSA contact ct-9 (Ana Silva)<" in page
    assert "Quarantined PSA invoice bad-10<" in page
    assert "Quarantined PSA invoice same-11<" in page


def test_every_admin_page_says_which_time_zone_its_times_are_in(svc, as_owner):
    page = as_owner.get("/admin/exceptions").get_data(as_text=True)
    # The test app's MSP is in Chicago; its frozen clock (March 10) is past the change to CDT.
    assert '<p class="muted small" id="admin-time-zone">Times are America/Chicago (CDT).</p>' in page
