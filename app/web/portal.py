"""The client portal pages: home, invoices, one invoice, payments, one payment, company switch.

Every query is scoped by the company in the session (`portal_user().client_id`); objects in URLs
are public tokens, and a token of another company is a plain 404.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_login import current_user

from app.web import pay, queries, services, today
from app.web.filters import KIND_LABELS
from app.web.session import portal_user, unauthorized

log = logging.getLogger(__name__)
bp = Blueprint("portal", __name__)
FINAL_PAYMENT_STATES = ("succeeded", "failed", "canceled")
SORTS = {"due": "Due date", "date": "Invoice date", "number": "Number", "balance": "Balance"}
STATUSES = {"open": "Open", "overdue": "Overdue", "paid": "Paid", "all": "All"}


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


@bp.get("/")
def home() -> Any:
    store, client_id, day = services().store, portal_user().client_id, today()
    return render_template(
        "home.html",
        totals=queries.due_totals(store, client_id, day),
        urgent=queries.open_invoices(store, client_id, day, limit=5),
        last_payment=queries.last_payment(store, client_id),
    )


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        return default


def _filters() -> queries.InvoiceFilters:
    args = request.args
    kind = args.get("kind", "")
    status = args.get("status", "open")
    sort = args.get("sort", "due")
    return queries.InvoiceFilters(
        kind=kind if kind in KIND_LABELS else "",
        status=status if status in STATUSES else "open",  # type: ignore[arg-type]
        q=args.get("q", "").strip()[:100],
        sort=sort if sort in SORTS else "due",
        direction="desc" if args.get("dir") == "desc" else "asc",
        page=_int_arg("page", 1),
    )


@bp.get("/invoices")
def invoices() -> Any:
    f = _filters()
    result = queries.list_invoices(services().store, portal_user().client_id, today(), f)

    def page_url(**changes: Any) -> str:
        params = {
            "kind": f.kind,
            "status": f.status,
            "q": f.q,
            "sort": f.sort,
            "dir": f.direction,
            "page": result.page,
            **changes,
        }
        return url_for("portal.invoices", **{k: v for k, v in params.items() if v not in ("", None)})

    return render_template(
        "invoices.html", f=f, result=result, page_url=page_url, sorts=SORTS, statuses=STATUSES
    )


@bp.get("/invoices/<token>")
def invoice(token: str) -> Any:
    svc, client_id = services(), portal_user().client_id
    row = queries.find_invoice(svc.store, client_id, token, today())
    if row is None:
        abort(404)
    return render_template(
        "invoice.html",
        inv=row,
        lines=queries.invoice_lines(svc.store, row.id),
        payments=queries.invoice_payments(svc.store, client_id, row.id),
        allow_partial=svc.config.portal.allow_partial_payments,
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
