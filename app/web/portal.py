"""The client portal pages: home, invoices, one invoice, payments, one payment, company switch.

Every query is scoped by the company in the session (`portal_user().client_id`); objects in URLs
are public tokens, and a token of another company is a plain 404.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_login import current_user

from app.core import line_disputes
from app.web import (
    autopay_views,
    companies_views,
    contacts,
    documents,
    invoice_actions,
    invoice_list,
    methods_views,
    pay,
    queries,
    services,
    today,
)
from app.web.session import portal_user, unauthorized

log = logging.getLogger(__name__)
bp = Blueprint("portal", __name__)
FINAL_PAYMENT_STATES = ("succeeded", "failed", "canceled")


@bp.before_request
def _require_login() -> Any:
    if not current_user.is_authenticated:
        return unauthorized()
    return None


@bp.app_context_processor
def _companies() -> dict[str, Any]:
    """The company switcher of the header: (token, name, is_current) when a person has several."""
    if not current_user.is_authenticated or len(portal_user().clients) < 2:
        return {"companies": []}
    user = portal_user()
    tokens = queries.client_tokens(services().store, [c.client_id for c in user.clients])
    return {
        "companies": [
            (tokens[c.client_id], c.name, c.client_id == user.client_id)
            for c in user.clients
            if c.client_id in tokens
        ]
    }


def thresholds() -> dict[str, int]:
    """The signed-in company's approval thresholds, per currency (computed once per request)."""
    from flask import g

    if "cashloop_thresholds" not in g:
        svc = services()
        g.cashloop_thresholds = queries.thresholds(svc.store, svc.config, portal_user().client_id)
    return g.cashloop_thresholds


@bp.get("/")
def home() -> Any:
    store, client_id, day = services().store, portal_user().client_id, today()
    th = thresholds()
    totals = queries.due_totals(store, client_id, day, th)
    return render_template(
        "home.html",
        next_autopay=_autopay_charges()[:1],
        autopay_on=_autopay_on(),
        totals=totals,
        pay_all={t.currency: _pay_all_minor(t, client_id) for t in totals},
        credits=queries.credit_totals(store, client_id, day),
        urgent=queries.open_invoices(store, client_id, day, limit=5, th=th),
        last_payment=queries.last_payment(store, client_id),
    )


def _pay_all_minor(total: queries.DueTotal, client_id: int) -> int:
    """What "Pay all open invoices" pays in this currency: the kinds paid online (see pay_all_kinds)."""
    from app.web import payment_rules

    amounts = dict(total.payable_by_kind)
    kinds = payment_rules.pay_all_kinds(services(), client_id, [k for k, v in amounts.items() if v > 0])
    return sum(amounts[k] for k in kinds)


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        return default


@bp.get("/invoices")
def invoices() -> Any:
    from markupsafe import Markup

    from app.web import list_cache, scope

    if scope.is_group():
        return companies_views.grouped_invoices()
    svc, client_id, day = services(), portal_user().client_id, today()
    f, errors = invoice_list.filters_from_args(request.args)
    th = thresholds()
    # One key for this client's data as it is now; see app.web.list_cache.
    key = (svc.store.path, client_id, list_cache.client_version(svc.store, client_id), f, day,
           tuple(sorted(th.items())))
    result = list_cache.pages.get_or_compute(
        key, lambda: invoice_list.list_invoices(svc.store, client_id, day, f, thresholds=th))

    def page_url(**changes: Any) -> str:
        return url_for("portal.invoices", **f.params(**{"page": result.page, **changes}))

    can_select = current_user.can_pay and any(r.payable_minor > 0 for r in result.rows)
    table = list_cache.tables.get_or_compute(
        (*key, can_select),
        # NOTE: Markup of our own rendered (autoescaped) template, not of any input.
        lambda: Markup(  # noqa: S704
            render_template(
                "_invoice_table.html", f=f, result=result, page_url=page_url, can_select=can_select
            )
        ),
    )
    return render_template(
        "invoices.html",
        f=f,
        errors=errors,
        result=result,
        table=table,
        page_url=page_url,
        sorts=invoice_list.SORTS,
        statuses=invoice_list.STATUS_FILTERS,
        options=invoice_list.filter_options(svc.store, client_id),
        can_select=can_select,
    )


def _autopay_on() -> bool:
    from app.core import autopay

    rule = autopay.get_rule(services().store, portal_user().client_id)
    return bool(rule and rule.is_enabled)


def _autopay_charges() -> list[Any]:
    """What autopay will charge this client next (empty when it is off)."""
    if not _autopay_on():
        return []
    from app.web.autopay_views import upcoming

    return upcoming(portal_user().client_id)


def _reminders_sent(invoice_id: int) -> list[sqlite3.Row]:
    try:
        return services().store.all(
            "SELECT sent_on, balance_minor FROM reminders_sent WHERE invoice_id = ? AND outcome = 'sent' "
            "ORDER BY sent_on", (invoice_id,))
    except sqlite3.OperationalError:  # the reminders migration is not in this release
        return []


def find_invoice_or_404(token: str) -> queries.InvoiceRow:
    """The invoice `token` of the session's company or of a company below it (app.web.scope)."""
    from app.web import scope

    row = scope.find_invoice(token, today())
    if row is None:
        abort(404)
    return row


@bp.get("/invoices/<token>")
def invoice(token: str) -> Any:
    from app.core import approvals
    from app.web import payment_rules

    svc, client_id = services(), portal_user().client_id
    row = find_invoice_or_404(token)
    db = svc.store.db
    approval = svc.store.one("SELECT approved_by, approved_at FROM invoice_approvals WHERE invoice_id = ?",
                             (row.id,)) if approvals.is_approved(db, row.id) else None
    return render_template(
        "invoice.html",
        inv=row,
        lines=queries.invoice_lines(svc.store, row.id),
        payments=queries.invoice_payments(svc.store, client_id, row.id),
        disputes=line_disputes.disputes_for_invoice(db, row.id),
        reminders=_reminders_sent(row.id),
        needs_approval=approvals.needs_approval(
            db, row.id, default_threshold=svc.config.portal.approval_threshold
        ),
        approval=approval,
        methods=payment_rules.methods_for_kinds(svc, client_id, [row.kind]),
        autopay_charge=next((c for c in _autopay_charges() if row.id in c.invoice_ids), None),
        allow_partial=svc.config.portal.allow_partial_payments,
        minimum=svc.config.portal.minimum_partial_payment,
    )


@bp.get("/payments")
def payments() -> Any:
    rows, page, pages = queries.list_payments(
        services().store, portal_user().client_id, page=_int_arg("page", 1)
    )
    return render_template("payments.html", payments=rows, page=page, pages=pages)


@bp.get("/payments/<token>")
def payment(token: str) -> Any:
    svc, client_id = services(), portal_user().client_id
    row = queries.find_payment(svc.store, client_id, token)
    if row is None:
        abort(404)
    if row["status"] not in FINAL_PAYMENT_STATES:
        # A return from 3-D Secure is recorded now rather than when the webhook arrives.
        from app import checkout

        try:
            checkout.refresh_payment(svc, client_id=client_id, payment_token=token)
        except Exception:
            log.exception("refreshing payment %s failed; showing the stored status", token)
        row = queries.find_payment(svc.store, client_id, token)
        assert row is not None
    return render_template(
        "payment.html",
        p=row,
        lines=queries.payment_lines(svc.store, client_id, row["id"]),
        retry_url=pay.retry_url(svc.store, client_id, row["id"]),
        receipt_sent=queries.receipt_sent(svc.store, row["id"]),
    )


@bp.post("/switch")
def switch_company() -> Any:
    user = portal_user()
    client_id = queries.client_by_token(services().store, request.form.get("client", ""))
    if client_id is None or client_id not in {c.client_id for c in user.clients}:
        abort(404)
    session["client_id"] = client_id
    # NOTE: always land on home: the page we came from names the other company's objects.
    return redirect(url_for("portal.home"))


pay.register(bp)
companies_views.register(bp)
invoice_actions.register(bp)
documents.register(bp)
methods_views.register(bp)
autopay_views.register(bp)
contacts.register(bp)

from app.web import authenticate  # noqa: E402 - registers its page on this blueprint, like pay

authenticate.register(bp)
