"""Parent companies: the tree (nesting, loops and depth refused), the PSA's parent fields in each
connector, intake linking a child synced before its parent, and the admin setting a parent."""

from __future__ import annotations

import json

import pytest

from app.core import client_tree
from app.jobs import intake
from sync.base import RemoteCompany
from sync.psa import autotask, connectwise, halopsa
from tests.web import factories as f
from tests.web.admin.helpers import make_admin, sign_in
from tests.web.admin.helpers import post as admin_post


@pytest.fixture
def as_finance(app, svc, clock):
    return sign_in(app.test_client(), make_admin(svc, "finance@northwind.example", "finance"), clock)


@pytest.fixture
def as_readonly(app, svc, clock):
    return sign_in(app.test_client(), make_admin(svc, "auditor@northwind.example", "readonly"), clock)


def _parent(svc, child: f.Ref, parent: f.Ref | None) -> None:
    with svc.store.write() as db:
        db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (parent.id if parent else None, child.id))


@pytest.fixture
def tree(svc):
    """Holdings above East and West; East above East-Annex; Globex unrelated."""
    holdings = f.make_client(svc, "Holdings Group")
    east = f.make_client(svc, "East Branch")
    west = f.make_client(svc, "West Branch")
    annex = f.make_client(svc, "East Annex")
    other = f.make_client(svc, "Globex Corporation")
    _parent(svc, east, holdings)
    _parent(svc, west, holdings)
    _parent(svc, annex, east)
    return holdings, east, west, annex, other


def test_a_family_is_the_company_then_its_children_then_theirs(svc, tree):
    holdings, east, west, annex, other = tree
    db = svc.store.db
    assert client_tree.family(db, holdings.id) == [holdings.id, east.id, west.id, annex.id]
    assert client_tree.family(db, east.id) == [east.id, annex.id]
    assert client_tree.family(db, west.id) == [west.id]
    assert client_tree.ancestors(db, annex.id) == [east.id, holdings.id]
    assert client_tree.family(db, other.id) == [other.id]


def test_loops_self_parents_and_too_deep_trees_are_refused_with_a_reason(svc, tree):
    holdings, east, west, annex, other = tree
    db = svc.store.db
    with pytest.raises(client_tree.TreeError, match="own parent"):
        client_tree.check_parent(db, east.id, east.id)
    with pytest.raises(
        client_tree.TreeError, match="already below East Branch; making it the parent would make a loop"
    ):
        client_tree.check_parent(db, east.id, annex.id)
    with pytest.raises(client_tree.TreeError, match="loop"):
        client_tree.check_parent(db, holdings.id, annex.id)
    deeper = f.make_client(svc, "Annex Kiosk")
    client_tree.check_parent(db, deeper.id, annex.id)  # 3 levels below the top: allowed
    _parent(svc, deeper, annex)
    deepest = f.make_client(svc, "Kiosk Cart")
    with pytest.raises(client_tree.TreeError, match="4 levels below the top company; at most 3"):
        client_tree.check_parent(db, deepest.id, deeper.id)
    # Moving a whole branch is measured with its height: East (with Annex and Kiosk) under West.
    with pytest.raises(client_tree.TreeError, match="levels below the top"):
        client_tree.check_parent(db, east.id, west.id)
    with pytest.raises(client_tree.TreeError, match="does not exist"):
        client_tree.check_parent(db, other.id, 999_999)


def test_a_loop_already_in_the_data_does_not_hang_the_family_query(svc, tree):
    holdings, east, _, annex, _ = tree
    _parent(svc, holdings, annex)  # holdings -> east -> annex -> holdings, written behind our back
    assert set(client_tree.family(svc.store.db, holdings.id)) == {holdings.id, east.id, annex.id, tree[2].id}


def test_connectwise_prefers_the_bill_to_company_then_the_parent_company():
    base = {"id": 301, "name": "East Branch"}
    both = {**base, "billToCompany": {"id": 310}, "parentCompany": {"id": 320}}
    assert connectwise.company_from_api(both).parent_remote_id == "310"
    self_billed = {**base, "billToCompany": {"id": 301}, "parentCompany": {"id": 320}}
    assert connectwise.company_from_api(self_billed).parent_remote_id == "320"
    assert connectwise.company_from_api({**base, "billToCompany": {"id": 301}}).parent_remote_id is None
    assert connectwise.company_from_api({**base, "parentCompany": None}).parent_remote_id is None


def test_autotask_and_halo_name_their_parent_fields():
    at = autotask.company_from_api(
        {"id": 29683501, "companyName": "East Branch", "parentCompanyID": 29683510}
    )
    assert at.parent_remote_id == "29683510"
    assert autotask.company_from_api({"id": 1, "companyName": "Solo"}).parent_remote_id is None
    child = halopsa.client_from_api(
        {"id": 12, "name": "East Branch", "client_to_invoice": 10, "toplevel_id": 1}
    )
    assert child.parent_remote_id == "10"
    for none in (0, 12, None, ""):
        raw = {"id": 12, "name": "East Branch", "client_to_invoice": none, "toplevel_id": 1}
        assert halopsa.client_from_api(raw).parent_remote_id is None, none


def _company(remote_id: str, name: str, parent: str | None) -> RemoteCompany:
    return RemoteCompany(remote_id=remote_id, name=name, parent_remote_id=parent, raw={"id": remote_id})


def test_intake_links_a_child_synced_before_its_parent_and_keeps_an_admin_choice(svc):
    db_write = svc.store.write
    with db_write() as db:
        intake.upsert_company(db, svc.clock, "files", svc.entity_id, _company("c-east", "East", "c-hold"))
        intake.upsert_company(db, svc.clock, "files", svc.entity_id, _company("c-hold", "Holdings", None))
        intake.upsert_company(db, svc.clock, "files", svc.entity_id, _company("c-other", "Other", None))
    ids = {r["remote_id"]: r["id"] for r in svc.store.all("SELECT id, remote_id FROM clients")}
    assert svc.store.scalar("SELECT parent_id FROM clients WHERE id = ?", (ids["c-east"],)) == ids["c-hold"]
    with db_write() as db:
        assert client_tree.set_parent(
            db, svc.clock, ids["c-east"], ids["c-other"], actor="admin:ann@msp.example"
        )
        # The PSA says Holdings again (a changed record): the admin's choice stays.
        intake.upsert_company(
            db,
            svc.clock,
            "files",
            svc.entity_id,
            RemoteCompany("c-east", "East (renamed)", parent_remote_id="c-hold", raw={"x": 1}),
        )
    assert svc.store.scalar("SELECT parent_id FROM clients WHERE id = ?", (ids["c-east"],)) == ids["c-other"]
    with db_write() as db:
        assert client_tree.set_parent(db, svc.clock, ids["c-east"], None, actor="admin:ann@msp.example")
    row = svc.store.one("SELECT parent_id, parent_set_by FROM clients WHERE id = ?", (ids["c-east"],))
    assert (row["parent_id"], row["parent_set_by"]) == (ids["c-hold"], None)
    actions = [
        r["action"]
        for r in svc.store.all(
            "SELECT action FROM audit_log WHERE target = ? ORDER BY id", (f"client:{ids['c-east']}",)
        )
    ]
    assert actions == ["client.parent_set", "client.parent_cleared"]


def test_a_loop_named_by_the_psa_is_not_linked_and_a_person_is_told(svc):
    with svc.store.write() as db:
        intake.upsert_company(db, svc.clock, "files", svc.entity_id, _company("a", "Alpha", None))
        intake.upsert_company(db, svc.clock, "files", svc.entity_id, _company("b", "Beta", "a"))
        intake.upsert_company(
            db,
            svc.clock,
            "files",
            svc.entity_id,
            RemoteCompany("a", "Alpha", parent_remote_id="b", raw={"v": 2}),
        )
    alpha = svc.store.one("SELECT id, parent_id FROM clients WHERE remote_id = 'a'")
    assert alpha["parent_id"] is None
    [exc] = svc.store.all("SELECT kind, ref, summary FROM exceptions WHERE kind = 'parent_link'")
    assert exc["ref"] == f"client:{alpha['id']}" and "loop" in exc["summary"]


def test_an_admin_sets_and_clears_a_parent_and_a_loop_is_refused_on_the_page(svc, as_finance, tree):
    holdings, _, west, annex, other = tree
    page = as_finance.get(f"/admin/clients/{west.id}").get_data(as_text=True)
    assert 'id="parent-form"' in page and "Billed to" in page and "Holdings Group" in page
    saved = admin_post(as_finance, f"/admin/clients/{other.id}/parent", {"parent": str(west.id)})
    assert saved.status_code == 302
    assert svc.store.scalar("SELECT parent_id FROM clients WHERE id = ?", (other.id,)) == west.id
    [entry] = svc.store.all("SELECT actor, detail_json FROM audit_log WHERE action = 'client.parent_set'")
    assert entry["actor"] == "admin:finance@northwind.example"
    assert json.loads(entry["detail_json"]) == {"from": None, "to": west.id}
    refused = admin_post(
        as_finance, f"/admin/clients/{holdings.id}/parent", {"parent": str(annex.id)}, follow_redirects=True
    )
    assert "make a loop" in refused.get_data(as_text=True)
    assert svc.store.scalar("SELECT parent_id FROM clients WHERE id = ?", (holdings.id,)) is None
    cleared = admin_post(
        as_finance, f"/admin/clients/{other.id}/parent", {"parent": ""}, follow_redirects=True
    )
    assert "the PSA&#39;s parent applies again" in cleared.get_data(as_text=True)
    assert svc.store.scalar("SELECT parent_id FROM clients WHERE id = ?", (other.id,)) is None


def test_a_read_only_admin_cannot_change_a_parent(svc, as_readonly, tree):
    _, _, west, _, other = tree
    page = as_readonly.get(f"/admin/clients/{west.id}").get_data(as_text=True)
    assert 'id="parent-form"' not in page and "Holdings Group" in page
    assert (
        admin_post(as_readonly, f"/admin/clients/{other.id}/parent", {"parent": str(west.id)}).status_code
        == 403
    )
    assert svc.store.scalar("SELECT parent_id FROM clients WHERE id = ?", (other.id,)) is None
