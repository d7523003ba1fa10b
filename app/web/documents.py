"""Documents a client keeps: the invoice PDF, the monthly statement (page and PDF), payment receipts.

Each is found through the session's company like the pages are; a receipt exists only for a
payment that succeeded.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template

from app.web import queries, services, statements, today
from app.web.pdf import logo_data_url, pdf_response, render_pdf
from app.web.session import portal_user


def _company() -> Any:
    return services().store.one(
        "SELECT name, remote_id, identifier FROM clients WHERE id = ?", (portal_user().client_id,)
    )


def _common() -> dict[str, Any]:
    svc = services()
    return {
        "company": _company(),
        "logo": logo_data_url(svc.config.branding.logo_url),
        "base_url": svc.config.cashloop.base_url.rstrip("/"),
        "entity_name": svc.config.entity.name,
        "generated_on": today(),
    }


def invoice_pdf(token: str) -> Any:
    from app.web.portal import find_invoice_or_404

    svc, client_id = services(), portal_user().client_id
    inv = find_invoice_or_404(token)
    data = render_pdf(
        "pdf/invoice.html",
        inv=inv,
        lines=queries.invoice_lines(svc.store, inv.id),
        payments=queries.invoice_payments(svc.store, client_id, inv.id),
        **_common(),
    )
    prefix = "credit-memo" if inv.is_credit else "invoice"
    return pdf_response(data, f"{prefix}-{inv.number}.pdf")


def statements_page() -> Any:
    months = statements.available_months(services().store, portal_user().client_id, today())
    return render_template("statements.html", months=months)


def _statement(month_text: str) -> statements.Statement:
    from app.web.portal import thresholds

    month = statements.parse_month(month_text)
    day = today()
    if month is None or month > day.replace(day=1):
        abort(404)
    svc = services()
    return statements.build(
        svc.store, portal_user().client_id, month, today=day, tz=svc.config.tz, thresholds=thresholds()
    )


def statement_page(month: str) -> Any:
    return render_template(
        "statement.html", st=_statement(month), buckets=statements.BUCKETS, month_text=month
    )


def statement_pdf(month: str) -> Any:
    st = _statement(month)
    data = render_pdf("pdf/statement.html", st=st, buckets=statements.BUCKETS, **_common())
    return pdf_response(data, f"statement-{month}.pdf")


def receipt_pdf(token: str) -> Any:
    svc, client_id = services(), portal_user().client_id
    p = queries.find_payment(svc.store, client_id, token)
    if p is None or p["status"] != "succeeded":
        abort(404)
    from app.web.portal import thresholds

    lines = queries.payment_lines(svc.store, client_id, p["id"])
    visible = [ln["token"] for ln in lines if ln["is_visible"]]
    balances = {
        r.token: r
        for r in (queries.find_invoices(svc.store, client_id, visible, today(), thresholds()) or [])
    }
    data = render_pdf("pdf/receipt.html", p=p, lines=lines, balances=balances, **_common())
    from app.web.filters import payment_reference

    return pdf_response(data, f"receipt-{payment_reference(p['id'])}.pdf")


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/invoices/<token>/pdf", "invoice_pdf", invoice_pdf)
    bp.add_url_rule("/statements", "statements", statements_page)
    bp.add_url_rule("/statements/<month>", "statement", statement_page)
    bp.add_url_rule("/statements/<month>/pdf", "statement_pdf", statement_pdf)
    bp.add_url_rule("/payments/<token>/receipt", "receipt_pdf", receipt_pdf)
