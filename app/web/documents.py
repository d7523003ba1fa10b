"""Documents a client keeps: invoice PDFs (one, or a selection in one file), the monthly statement
(page, PDF, by email now or every month), payment receipts.

Each is found through the session's company like the pages are; a receipt exists only for a
payment that succeeded. An id of another company in a selection is a 404, never silently dropped.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from app.core import statements_mail
from app.core.keys import derive_key, public_token
from app.web import companies_views, queries, scope, services, statements, today
from app.web.pdf import html_document, logo_data_url, pdf_response, render_pdf
from app.web.selection import back_with_message
from app.web.session import portal_user

SELECTION_TITLE_NUMBERS = 5  # beyond this many, a title listing numbers is too long to read
MAX_SELECTION = 100  # invoices in one selection PDF: a few seconds of rendering, a few MB at most


def _company(client_id: int | None = None) -> Any:
    return services().store.one(
        "SELECT name, remote_id, identifier FROM clients WHERE id = ?",
        (portal_user().client_id if client_id is None else client_id,),
    )


def _common(client_id: int | None = None) -> dict[str, Any]:
    svc = services()
    return {
        "company": _company(client_id),
        "logo": logo_data_url(svc.config.branding.logo_url),
        "base_url": svc.config.cashloop.base_url.rstrip("/"),
        "entity_name": svc.config.entity.name,
        "generated_on": today(),
        "paper_size": svc.config.portal.paper_size,  # the @page size of pdf/_base.html
    }


def _invoice_context(inv: queries.InvoiceRow) -> dict[str, Any]:
    svc, client_id = services(), portal_user().client_id
    return {
        "inv": inv,
        "lines": queries.invoice_lines(svc.store, inv.id),
        "payments": queries.invoice_payments(svc.store, client_id, inv.id),
        **_common(),
    }


def invoice_pdf(token: str) -> Any:
    from app.web.portal import find_invoice_or_404

    inv = find_invoice_or_404(token)
    data = render_pdf("pdf/invoice.html", **_invoice_context(inv))
    prefix = "credit-memo" if inv.is_credit else "invoice"
    return pdf_response(data, f"{prefix}-{inv.number}.pdf")


def selection_title(numbers: list[str]) -> str:
    """The document title of a selection PDF: "Invoices INV-1, INV-2, INV-3", or "12 invoices"."""
    if len(numbers) <= SELECTION_TITLE_NUMBERS:
        return "Invoices " + ", ".join(numbers)
    return f"{len(numbers)} invoices"


def invoices_pdf() -> Any:
    """The ticked invoices of the list in one PDF, in the order they were listed; each keeps its
    own page numbers. Any id that is not this company's makes the whole request a 404."""
    from app.web.portal import thresholds

    # Payable rows tick as "invoice" (the pay form reads those), the others as "pdf": both count,
    # in the order the list showed them.
    tokens = list(
        dict.fromkeys(v for k, v in request.args.items(multi=True) if k in ("invoice", "pdf") and v)
    )
    if not tokens:
        return back_with_message("Tick at least one invoice to download.")
    if len(tokens) > MAX_SELECTION:
        return back_with_message(
            f"You ticked {len(tokens)} invoices; one download holds at most {MAX_SELECTION}. "
            "Download them in parts, or narrow the list with the filters."
        )
    rows = queries.find_invoices(services().store, portal_user().client_id, tokens, today(), thresholds())
    if rows is None:
        abort(404)
    documents = [html_document(render_template("pdf/invoice.html", **_invoice_context(inv))).render()
                 for inv in rows]
    pages = [page for doc in documents for page in doc.pages]
    combined = documents[0].copy(pages)
    if len(rows) > 1:  # the first invoice's own title would name only that one
        combined.metadata.title = selection_title([inv.number for inv in rows])
    data = combined.write_pdf()
    name = f"invoices-{len(rows)}-{today().isoformat()}.pdf"
    if len(rows) == 1:
        name = f"invoice-{rows[0].number}.pdf"
    return pdf_response(data, name)


def statements_page() -> Any:
    svc, user = services(), portal_user()
    months = companies_views.statement_months()  # the session's company and those below it
    return render_template(
        "statements.html",
        months=months,
        subscribed=statements_mail.is_subscribed(svc.store.db, user.client_id),
        request_id=public_token(),
    )


def _month_or_404(month_text: str) -> date:
    month = statements.parse_month(month_text)
    if month is None or month > today().replace(day=1):
        abort(404)
    return month


def build_statement(client_id: int, month: date) -> statements.Statement:
    from app.web import queries as q

    svc = services()
    return statements.build(
        svc.store,
        client_id,
        month,
        today=today(),
        tz=svc.config.tz,
        thresholds=q.thresholds(svc.store, svc.config, client_id),
    )


def statement_page(month: str) -> Any:
    if scope.is_group():  # a parent: one statement over it and its companies
        return companies_views.consolidated_statement(month, as_pdf=False)
    st = build_statement(portal_user().client_id, _month_or_404(month))
    return render_template("statement.html", st=st, buckets=statements.BUCKETS, month_text=month)


def statement_pdf_bytes(client_id: int, month: date) -> bytes:
    """The statement PDF of a client and month, for whoever is asking (any request context); a
    parent's is the consolidated one over it and its companies."""
    if len(scope.family_of(client_id)) > 1:
        return companies_views.consolidated_pdf_bytes(client_id, month)
    st = build_statement(client_id, month)
    return render_pdf("pdf/statement.html", st=st, buckets=statements.BUCKETS, **_common(client_id))


def statement_pdf(month: str) -> Any:
    if scope.is_group():
        return companies_views.consolidated_statement(month, as_pdf=True)
    data = statement_pdf_bytes(portal_user().client_id, _month_or_404(month))
    return pdf_response(data, f"statement-{month}.pdf")


def email_statement() -> Any:
    """Email the signed-in contact the chosen month's statement. The form's request id makes the
    key: a double click (or a resubmitted form) queues one email."""
    svc, user = services(), portal_user()
    month_text = request.form.get("month", "")
    month = statements.parse_month(month_text)
    if month is None or month > today().replace(day=1) or month not in statements.available_months(
        svc.store, user.client_id, today()
    ):
        flash("Choose a month from the list to email its statement.", "error")
        return redirect(url_for("portal.statements"))
    request_id = request.form.get("request_id", "")[:64] or public_token()
    base = svc.config.cashloop.base_url.rstrip("/")
    with svc.store.write() as db:
        first = db.execute(
            "SELECT first_name FROM contacts WHERE client_id = ? AND lower(email) = lower(?) LIMIT 1",
            (user.client_id, user.email),
        ).fetchone()
        statements_mail.enqueue_statement(
            db,
            svc.clock,
            client_id=user.client_id,
            client_name=user.client.name,
            month=month,
            to=user.email,
            first_name=(first["first_name"] if first else "") or "",
            key=derive_key(
                "statement-email",
                client=user.client_id,
                to=user.email.lower(),
                month=statements_mail.month_key(month),
                request=request_id,
            ),
            link=f"{base}/statements/{statements_mail.month_key(month)}",
            is_monthly=False,
        )
    flash(
        f"The {statements_mail.month_label(month)} statement is on its way to {user.email} as a PDF "
        "attachment; it should arrive within a few minutes.",
        "info",
    )
    return redirect(url_for("portal.statements"))


def statement_subscription() -> Any:
    svc, user = services(), portal_user()
    if not user.can_pay:
        abort(403, description="Only a billing contact can change how statements are sent.")
    enabled = request.form.get("monthly") == "on"
    with svc.store.write() as db:
        changed = statements_mail.set_subscription(
            db, svc.clock, user.client_id, enabled=enabled, actor=f"login:{user.email}"
        )
    if not changed:
        flash("Nothing changed.", "info")
    elif enabled:
        flash(
            "Done: on the 1st of each month your billing contacts get the previous month's statement "
            "by email.",
            "info",
        )
    else:
        flash("Done: statements are no longer emailed each month.", "info")
    return redirect(url_for("portal.statements"))


def receipt_pdf(token: str) -> Any:
    svc, client_id = services(), portal_user().client_id
    p = queries.find_payment(svc.store, client_id, token)
    if p is None or p["status"] != "succeeded":
        abort(404)
    lines = queries.payment_lines(svc.store, client_id, p["id"])
    visible = [ln["token"] for ln in lines if ln["is_visible"]]
    balances = {
        r.token: r
        for r in (scope.find_invoices(visible, today()) or [])
    }
    data = render_pdf("pdf/receipt.html", p=p, lines=lines, balances=balances, **_common())
    from app.web.filters import payment_reference

    return pdf_response(data, f"receipt-{payment_reference(p['id'])}.pdf")


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/invoices/<token>/pdf", "invoice_pdf", invoice_pdf)
    bp.add_url_rule("/invoices/pdf", "invoices_pdf", invoices_pdf)
    bp.add_url_rule("/statements", "statements", statements_page)
    bp.add_url_rule("/statements/email", "email_statement", email_statement, methods=["POST"])
    bp.add_url_rule(
        "/statements/subscription", "statement_subscription", statement_subscription, methods=["POST"]
    )
    bp.add_url_rule("/statements/<month>", "statement", statement_page)
    bp.add_url_rule("/statements/<month>/pdf", "statement_pdf", statement_pdf)
    bp.add_url_rule("/payments/<token>/receipt", "receipt_pdf", receipt_pdf)
