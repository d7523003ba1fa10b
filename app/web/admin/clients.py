"""Clients: the list (balance, overdue, autopay, last payment) and one client's whole picture,
with its overrides form (which also holds the extra reminder recipients and the monthly statement
email, a choice the client's billing contacts can make in the portal too)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from app.core import reports, statements_mail
from app.core.client_overrides import PORTAL_METHODS, OverrideError, from_form, get_overrides, set_overrides
from app.web import services, today
from app.web.admin import bp, entity_filter, queries
from app.web.admin.guard import current_admin


@bp.get("/clients")
def clients() -> Any:
    q = request.args.get("q", "").strip()[:100]
    overdue_only = request.args.get("overdue") == "1"
    rows, count, page, pages = queries.list_clients(
        services().store, today(), q=q, overdue_only=overdue_only, page=request.args.get("page", 1, type=int),
        entity_id=entity_filter.selected_id(),
    )
    return render_template(
        "admin/clients.html", rows=rows, count=count, page=page, pages=pages, q=q, overdue_only=overdue_only
    )


def _client_page(client_id: int, *, errors: dict[str, str] | None = None, values: Any = None) -> Any:
    svc = services()
    store = svc.store
    row = queries.client(store, client_id)
    if row is None:
        abort(404)
    day = today()
    invoices = queries.client_invoices(store, client_id)
    payments, _, _, _ = queries.list_payments(store, queries.PaymentFilters(client_id=client_id), limit=200)
    summary = queries.client_summary(store, day, client_id)
    return render_template(
        "admin/client.html",
        client=row,
        summary=summary,
        contacts=queries.contacts(store, client_id),
        invoices=invoices,
        invoice_status=lambda r: queries.invoice_status(r, day),
        payments=payments,
        reminders=queries.reminders_sent(store, client_id),
        overrides=get_overrides(store.db, client_id),
        statement_monthly=statements_mail.is_subscribed(store.db, client_id),
        refused=_refused(store, client_id),
        autopay=queries.autopay_state(store, client_id, reports.autopay_clients(store.db)),
        methods=PORTAL_METHODS,
        currency=svc.config.entity.currency,
        errors=errors or {},
        values=values,
    ), 400 if errors else 200


def _refused(store: Any, client_id: int) -> dict[str, str]:
    """Extra recipients a mail server refused: address -> when (they get nothing)."""
    extras = get_overrides(store.db, client_id).extra_recipients
    if not extras:
        return {}
    marks = ",".join("?" * len(extras))
    rows = store.all(f"SELECT address, refused_at FROM email_refusals WHERE address IN ({marks})", extras)
    return {r["address"].lower(): r["refused_at"] for r in rows}


@bp.get("/clients/<int:client_id>")
def client(client_id: int) -> Any:
    return _client_page(client_id)


@bp.post("/clients/<int:client_id>/overrides")
def save_overrides(client_id: int) -> Any:
    svc, admin = services(), current_admin()
    if queries.client(svc.store, client_id) is None:
        abort(404)
    form = {**request.form.to_dict(), "payment_methods": request.form.getlist("payment_methods")}
    try:
        new = from_form(form, svc.config.entity.currency)
    except OverrideError as exc:
        return _client_page(client_id, errors=exc.errors, values=request.form)
    with svc.store.write() as db:
        changed = set_overrides(db, svc.clock, client_id, new, actor=admin.actor)
        changed |= statements_mail.set_subscription(
            db, svc.clock, client_id, enabled=bool(request.form.get("statement_monthly")), actor=admin.actor
        )
    flash("Overrides saved." if changed else "Nothing changed.", "info")
    return redirect(url_for("admin.client", client_id=client_id) + "#overrides")
