"""The admin's entity filter: `?entity=<key>` narrows the pages to one billing entity's clients and
is carried along by every admin link; the dashboard adds totals per entity and across them.

Totals never add different currencies: each entity's figures, and the across-entities ones, are
given per currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, flash, g, redirect, request, url_for

from app.core import entities, reports
from app.core.store import Store
from app.web import services
from app.web.admin import bp
from app.web.admin.guard import current_admin

PARAM = "entity"


def selected() -> tuple[str, int] | None:
    """(key, entities.id) of the entity the admin filters by, or None for all. 404 for an unknown key."""
    key = request.args.get(PARAM, "").strip()
    if not key:
        return None
    ids = services().entities.ids()
    if key not in ids or not services().config.entities:
        abort(404)
    return key, ids[key]


def selected_id() -> int | None:
    found = selected()
    return found[1] if found else None


@bp.url_defaults
def _keep_filter(endpoint: str, values: dict[str, Any]) -> None:
    key = g.get("admin_entity_key")
    if key and endpoint.startswith("admin.") and PARAM not in values:
        values[PARAM] = key


@bp.before_request
def _remember_filter() -> None:
    # Runs before the sign-in guard: an unknown key is refused (404) only by the page that uses it.
    key = request.args.get(PARAM, "").strip()
    known = key and services().config.entities and key in services().entities.ids()
    g.admin_entity_key = key if known else None


@bp.app_context_processor
def _choices() -> dict[str, Any]:
    svc = services()
    if not svc.config.entities or request.blueprint != "admin":
        return {"entity_choices": []}
    names = {"default": svc.config.entity.name, **{e.key: e.name for e in svc.config.entities}}
    return {"entity_choices": list(names.items()), "entity_selected": g.get("admin_entity_key") or ""}


@dataclass
class EntityTotals:
    key: str
    name: str
    open_ar: dict[str, int] = field(default_factory=dict)  # by currency
    collected_this_month: dict[str, int] = field(default_factory=dict)


def totals(store: Store, today: date, tz: ZoneInfo) -> tuple[list[EntityTotals], EntityTotals]:
    """(each entity's open AR and money collected this month, by currency; the same across entities)."""
    rows = {
        r["key"]: EntityTotals(r["key"], r["name"])
        for r in store.all("SELECT key, name FROM entities ORDER BY key != 'default', name")
    }
    for r in store.all(
        "SELECT e.key, i.currency, SUM(b.balance_minor) AS ar FROM invoices i "
        "JOIN invoice_balances b ON b.invoice_id = i.id JOIN clients c ON c.id = i.client_id "
        "JOIN entities e ON e.id = c.entity_id WHERE i.status = 'open' AND i.is_approved = 1 "
        "AND i.kind != 'credit_memo' AND b.balance_minor > 0 GROUP BY e.key, i.currency"
    ):
        rows[r["key"]].open_ar[r["currency"]] = int(r["ar"])
    start, end = reports.month_start(today), reports.month_start(today, -1)
    for r in store.all(
        "SELECT e.key, p.currency, SUM(p.amount_minor) AS total FROM payments p "
        "JOIN clients c ON c.id = p.client_id JOIN entities e ON e.id = c.entity_id "
        "WHERE p.status = 'succeeded' AND p.succeeded_at >= ? AND p.succeeded_at < ? "
        "GROUP BY e.key, p.currency",
        (reports.utc_midnight(start, tz), reports.utc_midnight(end, tz)),
    ):
        rows[r["key"]].collected_this_month[r["currency"]] = int(r["total"])
    across = EntityTotals("", "All entities")
    for t in rows.values():
        for c, v in t.open_ar.items():
            across.open_ar[c] = across.open_ar.get(c, 0) + v
        for c, v in t.collected_this_month.items():
            across.collected_this_month[c] = across.collected_this_month.get(c, 0) + v
    return list(rows.values()), across


@bp.app_template_global("client_entity_key")
def client_entity_key(client_id: int) -> str:
    return entities.key_of_client(services().store.db, client_id)


@bp.post("/clients/<int:client_id>/entity")
def move_client_entity(client_id: int) -> Any:
    """Place a client in another entity (refused once money went through its current one)."""
    svc, admin = services(), current_admin()
    key = request.form.get("entity", "")
    try:
        entities.move_client(svc.store, svc.clock, client_id=client_id, entity_key=key, actor=admin.actor)
    except entities.EntityError as exc:
        flash(str(exc), "error")
    else:
        flash("The client is now billed by the entity chosen.", "info")
    return redirect(url_for("admin.client", client_id=client_id))
