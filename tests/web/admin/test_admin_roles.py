"""Roles: read-only admins change nothing (every admin POST is refused), owners alone see admins,
and every page renders for every role on a seeded dataset."""

from __future__ import annotations

import re

import pytest

from app.web.admin.guard import SIGN_IN_ENDPOINTS
from tests.web.admin.helpers import post, seed_finance_world


def _tables(svc) -> dict[str, list[tuple]]:
    """Every row of every table except the admins' own session bookkeeping."""
    names = [
        r[0]
        for r in svc.store.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('admin_sessions', "
            "'_sqlite_migrations') AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {n: [tuple(r) for r in svc.store.all(f"SELECT * FROM {n} ORDER BY rowid")] for n in names}


def _url(rule) -> str:
    url = re.sub(r"<int:[a-z_]+>", "1", rule.rule)
    url = url.replace("<name>", "receipt")  # the email template previews
    assert "<" not in url, rule.rule
    return url


def _admin_rules(app, method: str) -> list:
    return [r for r in app.url_map.iter_rules() if r.endpoint.startswith("admin.") and method in r.methods]


def test_the_sign_in_steps_are_the_only_admin_posts_open_to_every_role():
    assert frozenset({"admin.login", "admin.second_factor", "admin.logout"}) == SIGN_IN_ENDPOINTS


def test_a_read_only_admin_is_refused_every_admin_post_and_nothing_changes(app, svc, as_readonly):
    seed_finance_world(svc)
    posts = [r for r in _admin_rules(app, "POST") if r.endpoint not in SIGN_IN_ENDPOINTS]
    assert len(posts) >= 10, [r.endpoint for r in posts]
    before = _tables(svc)
    for rule in posts:
        response = post(
            as_readonly,
            _url(rule),
            {"amount": "1.00", "note": "x", "method": "check", "reference": "1", "received_on": "2026-03-09"},
        )
        assert response.status_code == 403, (rule.endpoint, response.status_code)
        assert "read-only" in response.get_data(as_text=True), rule.endpoint
    assert _tables(svc) == before


def test_a_read_only_admin_sees_no_buttons_that_would_change_anything(app, svc, as_readonly):
    world = seed_finance_world(svc)
    page = as_readonly.get(f"/admin/clients/{world.acme.id}").get_data(as_text=True)
    assert "record-payment" not in page and "view-as-client" not in page and "save-overrides" not in page
    payment_id = svc.store.scalar("SELECT MIN(id) FROM payments WHERE status = 'succeeded'")
    assert "resend-receipt" not in as_readonly.get(f"/admin/payments/{payment_id}").get_data(as_text=True)


@pytest.mark.parametrize("who", ["as_owner", "as_finance", "as_readonly"])
def test_every_admin_page_renders_for_every_role_that_may_see_it(app, svc, who, request):
    client = request.getfixturevalue(who)
    seed_finance_world(svc)
    owner_only = {"admin.admins"}
    for rule in _admin_rules(app, "GET"):
        if rule.endpoint in SIGN_IN_ENDPOINTS:
            continue
        response = client.get(_url(rule))
        expected = 403 if rule.endpoint in owner_only and who != "as_owner" else 200
        assert response.status_code == expected, (
            rule.endpoint,
            response.status_code,
            response.get_data(as_text=True)[:300],
        )


def test_only_an_owner_may_unlock_an_admin(app, svc, as_finance, finance):
    assert post(as_finance, f"/admin/admins/{finance.id}/unlock").status_code == 403
