"""Clients: the list's figures, one client's page, and per-client overrides stored and audited."""

from __future__ import annotations

import json
import re

from app.core.client_overrides import DEFAULTS, ClientOverrides, get_overrides
from app.core.money import Money
from tests.web import factories
from tests.web.admin.helpers import post, seed_finance_world


def _cell(page: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</td>', page, re.S)
    assert found, element_id
    return " ".join(found.group(1).split())


def test_the_client_list_shows_balance_overdue_autopay_and_last_payment(svc, as_owner):
    w = seed_finance_world(svc)
    page = as_owner.get("/admin/clients").get_data(as_text=True)
    assert _cell(page, f"client-{w.initech.id}-balance") == "CA$250.00 · $1,400.00"
    assert _cell(page, f"client-{w.initech.id}-overdue") == "CA$250.00 · $1,400.00"
    assert _cell(page, f"client-{w.acme.id}-balance") == "$1,300.00"
    assert _cell(page, f"client-{w.acme.id}-overdue") == "—"
    assert _cell(page, f"client-{w.acme.id}-autopay") == "on"
    assert _cell(page, f"client-{w.globex.id}-autopay") == "off"
    assert _cell(page, f"client-{w.hooli.id}-balance") == "—"
    assert _cell(page, f"client-{w.acme.id}-last-payment") == "March 2, 2026"
    overdue = as_owner.get("/admin/clients?overdue=1").get_data(as_text=True)
    assert f"client-{w.acme.id}" not in overdue and f"client-{w.umbrella.id}" in overdue
    found = as_owner.get("/admin/clients?q=müller").get_data(as_text=True)
    assert "1 client<" in found and "Hooli Müller GmbH" in found


def test_a_client_page_shows_contacts_invoices_payments_and_reminders(svc, as_owner):
    w = seed_finance_world(svc)
    page = as_owner.get(f"/admin/clients/{w.acme.id}").get_data(as_text=True).replace("<wbr>", "")
    assert "dana@acme.example" in page and "billing" in page
    assert "A1" in page and "AX" in page and "not yet sent" in page
    assert "$200.00" in page and "$50.00" in page
    assert 'id="no-reminders"' in page
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO reminders_sent (invoice_id, step, outcome, sent_on, balance_minor, created_at) "
            "VALUES (?, -5, 'sent', '2026-03-15', 100000, '2026-03-15T14:00:00.000000Z')",
            (w.invoices["A1"].id,),
        )
    page = as_owner.get(f"/admin/clients/{w.acme.id}").get_data(as_text=True)
    assert "March 15, 2026" in page and "5 days before due" in page and "$1,000.00" in page


def test_overrides_are_saved_and_the_change_is_audited_with_before_and_after(svc, as_finance):
    w = seed_finance_world(svc)
    response = post(
        as_finance,
        f"/admin/clients/{w.globex.id}/overrides",
        {
            "reminder_offsets": "14, -3, 0, 7",
            "is_paused": "1",
            "pause_reason": "Payment plan agreed",
            "restrict_methods": "1",
            "payment_methods": "ach",
            "grace_days": "5",
            "approval_threshold": "5,000.00",
        },
    )
    assert response.status_code == 302
    assert get_overrides(svc.store.db, w.globex.id) == ClientOverrides(
        reminder_offsets=(-3, 0, 7, 14),
        is_paused=True,
        pause_reason="Payment plan agreed",
        autopay_allowed=False,
        payment_methods=("ach",),
        grace_days=5,
        approval_threshold=Money(500_000, "USD"),
    )
    row = svc.store.one("SELECT * FROM audit_log WHERE action = 'client.overrides_changed'")
    assert row["actor"] == "admin:finance@northwind.example" and row["target"] == f"client:{w.globex.id}"
    changed = json.loads(row["detail_json"])["changed"]
    assert changed["grace_days"] == [None, 5] and changed["autopay_allowed"] == [True, False]
    assert changed["approval_threshold"] == [None, [500_000, "USD"]]
    page = as_finance.get(f"/admin/clients/{w.globex.id}").get_data(as_text=True)
    assert 'value="-3, 0, 7, 14"' in page and 'value="5000.00"' in page
    assert (
        _cell(as_finance.get("/admin/clients").get_data(as_text=True), f"client-{w.globex.id}-autopay")
        == "not allowed"
    )


def test_bad_overrides_are_refused_field_by_field_and_nothing_is_stored(svc, as_finance):
    w = seed_finance_world(svc)
    response = post(
        as_finance,
        f"/admin/clients/{w.globex.id}/overrides",
        {
            "reminder_offsets": "0, seven",
            "is_paused": "1",
            "grace_days": "120",
            "approval_threshold": "-5",
            "restrict_methods": "1",
            "autopay_allowed": "1",
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for message in (
        "Reminder days: list whole days",
        "Grace days: a whole number from 0 to 90",
        "Approval threshold: a positive amount in USD",
        "Payment methods: allow at least one",
        "Say why the client is paused",
    ):
        assert message in page, message
    assert 'value="0, seven"' in page  # what was typed stays in the form
    assert get_overrides(svc.store.db, w.globex.id) == DEFAULTS
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'client.overrides_changed'") == 0


def test_saving_the_same_overrides_again_changes_nothing_and_audits_nothing(svc, as_finance):
    client = factories.make_client(svc, "Soylent")
    form = {"autopay_allowed": "1", "grace_days": "3"}
    post(as_finance, f"/admin/clients/{client.id}/overrides", form)
    post(as_finance, f"/admin/clients/{client.id}/overrides", form)
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'client.overrides_changed'") == 1


def test_an_unknown_client_is_a_404(as_owner):
    assert as_owner.get("/admin/clients/999").status_code == 404
    assert post(as_owner, "/admin/clients/999/overrides", {}).status_code == 404
