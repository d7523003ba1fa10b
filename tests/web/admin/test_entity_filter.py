"""The admin's entity filter: each entity's figures, totals across entities per currency, the filter
kept on every admin link, and a single-entity console without any of it."""

from __future__ import annotations

import re

import pytest

from app.core import entities
from app.services import build_services
from tests.e2e.entity_world import ca_toml
from tests.web import factories as f
from tests.web.conftest import web_config


@pytest.fixture
def svc(tmp_path, clock):
    return build_services(web_config(tmp_path, extra=ca_toml("http://127.0.0.1:9")), clock=clock)


@pytest.fixture
def world(svc):
    us = f.make_client(svc, "Contoso Dental Inc")
    ca = f.make_client(svc, "Maple Leaf Dental Ltd")
    entities.move_client(svc.store, svc.clock, client_id=ca.id, entity_key="ca", actor="admin:test")
    us_inv = f.make_invoice(svc, us, "US-1", total_minor=100_000)
    f.make_invoice(svc, ca, "CA-1", total_minor=50_000, currency="CAD")
    ca_usd = f.make_invoice(svc, ca, "CA-2", total_minor=7_000)  # a Canadian client billed in USD
    f.make_payment(svc, us, [(us_inv, 30_000)])  # March 5: this month
    f.make_payment(svc, ca, [(ca_usd, 2_000)])
    return us, ca


def _cell(html: str, cell_id: str) -> str:
    found = re.search(rf'id="{cell_id}">([^<]*)<', html)
    assert found, cell_id
    return found.group(1)


def test_dashboard_totals_per_entity_and_across_them_per_currency(as_owner, world):
    html = as_owner.get("/admin/").get_data(as_text=True)
    assert _cell(html, "entity-ar-default") == "$700.00"  # 1,000.00 less 300.00 paid
    assert _cell(html, "entity-ar-ca") == "CA$500.00 · $50.00"
    assert _cell(html, "entity-ar-all") == "CA$500.00 · $750.00"  # USD added across, CAD apart
    assert _cell(html, "entity-collected-default") == "$300.00"
    assert _cell(html, "entity-collected-ca") == "$20.00"
    assert _cell(html, "entity-collected-all") == "$320.00"


def test_the_filter_narrows_the_dashboard_and_clients_and_follows_every_admin_link(as_owner, world):
    html = as_owner.get("/admin/?entity=ca").get_data(as_text=True)
    assert _cell(html, "ar-total-CAD") == "CA$500.00" and _cell(html, "ar-total-USD") == "$50.00"
    assert 'href="/admin/clients?entity=ca"' in html and 'href="/admin/payments?entity=ca"' in html
    assert '<option value="ca" selected>' in html
    clients = as_owner.get("/admin/clients?entity=ca").get_data(as_text=True)
    assert "Maple Leaf Dental Ltd" in clients and "Contoso Dental Inc" not in clients
    clients = as_owner.get("/admin/clients?entity=default").get_data(as_text=True)
    assert "Contoso Dental Inc" in clients and "Maple Leaf Dental Ltd" not in clients
    us_only = as_owner.get("/admin/?entity=default").get_data(as_text=True)
    assert _cell(us_only, "ar-total-USD") == "$700.00" and 'id="ar-total-CAD"' not in us_only
    everything = as_owner.get("/admin/").get_data(as_text=True)
    assert _cell(everything, "ar-total-USD") == "$750.00" and 'href="/admin/clients"' in everything
    assert as_owner.get("/admin/clients?entity=uk").status_code == 404


def test_a_single_entity_console_has_no_filter_or_entity_totals(tmp_path, clock):
    from app.web import create_app
    from tests.web.admin.helpers import make_admin, sign_in

    (tmp_path / "one").mkdir()
    single = build_services(web_config(tmp_path / "one"), clock=clock)
    client = sign_in(create_app(single).test_client(), make_admin(single, "o@northwind.example"), clock)
    html = client.get("/admin/").get_data(as_text=True)
    assert 'id="entity-filter"' not in html and 'id="entity-totals"' not in html
    assert client.get("/admin/?entity=ca").status_code == 404


def test_payments_and_the_exports_follow_the_filter(as_owner, world):
    page = as_owner.get("/admin/payments?entity=ca").get_data(as_text=True)
    assert "Maple Leaf Dental Ltd" in page and "Contoso Dental Inc" not in page
    page = as_owner.get("/admin/payments").get_data(as_text=True)
    assert "Maple Leaf Dental Ltd" in page and "Contoso Dental Inc" in page
    ar = as_owner.get("/admin/export/ar.csv?entity=ca").get_data(as_text=True)
    assert "CA-1" in ar and "CA-2" in ar and "US-1" not in ar
    ar_all = as_owner.get("/admin/export/ar.csv").get_data(as_text=True)
    assert "US-1" in ar_all and "CA-1" in ar_all


def test_an_admin_moves_a_client_that_paid_nothing_yet_and_not_one_that_did(
    as_owner, as_readonly, svc, world
):
    from tests.web.admin.helpers import post

    us, _ = world
    fresh = f.make_client(svc, "Northern Lights Clinic")
    page = as_owner.get(f"/admin/clients/{fresh.id}").get_data(as_text=True)
    assert '<option value="default" selected>' in page and 'id="client-entity-move"' in page
    assert post(as_owner, f"/admin/clients/{fresh.id}/entity", {"entity": "ca"}).status_code == 302
    assert entities.key_of_client(svc.store.db, fresh.id) == "ca"
    assert svc.store.scalar("SELECT entity_pinned FROM clients WHERE id = ?", (fresh.id,)) == 1
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'client.entity_moved' "
                            "AND target = ?", (f"client:{fresh.id}",)) == 1
    # Contoso has a payment through the US account: it stays, with the reason shown.
    response = post(as_owner, f"/admin/clients/{us.id}/entity", {"entity": "ca"}, follow_redirects=True)
    assert "cannot move" in response.get_data(as_text=True)
    assert entities.key_of_client(svc.store.db, us.id) == "default"
    # A read-only admin cannot move anyone.
    assert post(as_readonly, f"/admin/clients/{fresh.id}/entity", {"entity": "default"}).status_code == 403
    assert entities.key_of_client(svc.store.db, fresh.id) == "ca"
