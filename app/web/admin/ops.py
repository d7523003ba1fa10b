"""Sync status per connector, the outbox, the email log and the audit log."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from flask import render_template, request

from app.core.reports import utc_midnight
from app.web import services
from app.web.admin import bp, entity_filter, entity_scope, queries


@bp.get("/sync")
def sync() -> Any:
    from app.core.sync_status import connector_status

    store, entity_id = services().store, entity_filter.selected_id()
    connectors = connector_status(store)
    stored = {c.connector: _stored(store, c.connector, entity_id) for c in connectors}
    if entity_id is None:
        return render_template("admin/sync.html", connectors=connectors, entity_clients={}, stored=stored)
    # A connector serves every entity: under the filter only its counts narrow to the entity's records.
    entity_clients = {}
    for n, c in enumerate(connectors):
        quarantined = sum(
            1
            for row in store.all(
                "SELECT * FROM quarantine WHERE source = ? AND resolved_at IS NULL", (c.connector,)
            )
            if entity_scope.quarantine_entity(store, row) in (None, entity_id)
        )
        held = int(store.scalar(
            "SELECT COUNT(*) FROM exceptions x JOIN invoices i "  # ref: invoice:<id>:<change>
            "ON i.id = CAST(substr(x.ref, 9, instr(substr(x.ref, 9), ':') - 1) AS INTEGER) "
            "JOIN clients c ON c.id = i.client_id WHERE x.kind = 'source_change_on_paid_invoice' "
            "AND x.resolved_at IS NULL AND i.source = ? AND c.entity_id = ?",
            (c.connector, entity_id),
        ) or 0)
        connectors[n] = replace(c, quarantined=quarantined, held_changes=held)
        entity_clients[c.connector] = int(store.scalar(
            "SELECT COUNT(*) FROM clients WHERE source = ? AND entity_id = ?", (c.connector, entity_id)
        ) or 0)
    return render_template(
        "admin/sync.html", connectors=connectors, entity_clients=entity_clients, stored=stored
    )


# What each synced object amounts to in the store, so the page shows what arrived in all, not
# only what the last poll changed (often nothing).
_STORED_SQL = {
    "companies": "SELECT COUNT(*) FROM clients c WHERE c.source = ?",
    "contacts": "SELECT COUNT(*) FROM contacts k JOIN clients c ON c.id = k.client_id "
    "WHERE k.source = ? AND k.is_active = 1",
    "invoices": "SELECT COUNT(*) FROM invoices i JOIN clients c ON c.id = i.client_id "
    "WHERE i.source = ? AND i.status != 'deleted'",
}


def _stored(store: Any, connector: str, entity_id: int | None) -> dict[str, int]:
    if entity_id is None:
        scope, params = "", (connector,)
    else:
        scope, params = " AND c.entity_id = ?", (connector, entity_id)
    return {obj: int(store.scalar(sql + scope, params) or 0) for obj, sql in _STORED_SQL.items()}


@bp.get("/outbox")
def outbox() -> Any:
    view = request.args.get("view", "pending")
    view = view if view in queries.OUTBOX_VIEWS else "pending"
    rows, count, page, pages = queries.list_outbox(
        services().store, view, page=request.args.get("page", 1, type=int),
        entity_id=entity_filter.selected_id(),
    )
    return render_template(
        "admin/outbox.html",
        rows=rows,
        count=count,
        page=page,
        pages=pages,
        view=view,
        views=queries.OUTBOX_VIEWS,
    )


@bp.get("/emails")
def emails() -> Any:
    status = request.args.get("status", "")
    q = request.args.get("q", "").strip()[:100]
    rows, count, page, pages = queries.list_emails(
        services().store, status=status, q=q, page=request.args.get("page", 1, type=int),
        entity_id=entity_filter.selected_id(),
    )
    return render_template(
        "admin/emails.html", rows=rows, count=count, page=page, pages=pages, status=status, q=q
    )


def audit_filters() -> tuple[queries.AuditFilters, tuple[str | None, str | None], str | None]:
    """(filters, UTC bounds of the local date range, an error for a bad date) from the query string."""
    a = request.args
    f = queries.AuditFilters(
        actor=a.get("actor", "").strip()[:100],
        action=a.get("action", "").strip()[:100],
        target=a.get("target", "").strip()[:100],
        since=a.get("since", "").strip(),
        until=a.get("until", "").strip(),
        entity_id=entity_filter.selected_id(),
    )
    tz = services().config.tz
    bounds: list[str | None] = [None, None]
    error = None
    for n, (text, shift) in enumerate(((f.since, 0), (f.until, 1))):
        if not text:
            continue
        try:
            bounds[n] = utc_midnight(date.fromisoformat(text) + timedelta(days=shift), tz)
        except ValueError:
            error = f"{'From' if n == 0 else 'To'} date: enter a date such as 2026-03-09, not {text!r}."
    return f, (bounds[0], bounds[1]), error


@bp.get("/audit")
def audit_log() -> Any:
    f, bounds, error = audit_filters()
    from app.web.admin.audit_detail import detail_items, target_currency

    svc = services()
    rows, count, page, pages = queries.list_audit(
        svc.store, f, bounds if not error else (None, None), page=request.args.get("page", 1, type=int)
    )
    currencies: dict[str | None, str] = {}
    details = []
    for r in rows:
        if r["target"] not in currencies:
            found = target_currency(svc.store, r["target"])
            currencies[r["target"]] = found or svc.config.entity.currency
        details.append(detail_items(r["detail_json"], currencies[r["target"]]))
    return render_template(
        "admin/audit.html", rows=rows, details=details, count=count, page=page, pages=pages, f=f, error=error
    ), 400 if error else 200
