"""Pages over several companies: a parent's invoices grouped by company, and "All my companies".

A parent company's list shows each company of its family under its own name with its totals,
and the totals of all of them; one payment may cover invoices of several of these companies.
"All my companies" lists the open invoices of every company the person may see; a payment
from there covers one family (a company and the companies it pays for), never two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, session, url_for

from app.web import invoice_list, queries, scope, services, today
from app.web.invoice_list import CurrencyTotal, InvoiceFilters, InvoicePage
from app.web.invoice_rows import InvoiceRow
from app.web.session import PAYING_ROLES, portal_user

GROUP_ROWS = 100  # rows shown per company; "show all" narrows the list to that company


@dataclass(frozen=True)
class Group:
    company: scope.Company
    rows: list[InvoiceRow]
    count: int
    totals: list[CurrencyTotal]

    @property
    def payable(self) -> bool:
        return any(r.payable_minor > 0 for r in self.rows)


def overall(groups: list[Group]) -> list[CurrencyTotal]:
    """Totals of every group, per currency (never added across currencies)."""
    out: dict[str, CurrencyTotal] = {}
    for g in groups:
        for t in g.totals:
            held = out.get(t.currency, CurrencyTotal(t.currency, 0, 0, 0))
            out[t.currency] = CurrencyTotal(
                t.currency,
                held.total_minor + t.total_minor,
                held.balance_minor + t.balance_minor,
                held.overdue_minor + t.overdue_minor,
            )
    return [out[c] for c in sorted(out)]


def _group(company: scope.Company, f: InvoiceFilters) -> Group:
    page: InvoicePage = invoice_list.list_invoices(
        services().store,
        company.id,
        today(),
        f,
        thresholds=scope.thresholds_of(company.id),
        per_page=GROUP_ROWS,
    )
    return Group(company, page.rows, page.count, page.totals)


def grouped_invoices() -> Any:
    """/invoices of a company with children: one group per company, or the one company filtered."""
    f, errors = invoice_list.filters_from_args(request.args)
    f = InvoiceFilters(status=f.status, q=f.q, kind=f.kind, due_from=f.due_from, due_to=f.due_to)
    chosen = request.args.get("company", "")
    family = scope.companies()
    if chosen:
        one = scope.company_by_token(chosen)
        if one is None:
            errors["company"] = "That company is not one of yours; all companies are shown."
            chosen = ""
        else:
            family = [one]
    groups = [_group(c, f) for c in family]
    can_select = portal_user().can_pay and any(g.payable for g in groups)
    return render_template(
        "invoices_grouped.html",
        f=f,
        errors=errors,
        groups=groups,
        overall=overall(groups),
        family=scope.companies(),
        chosen=chosen,
        statuses=invoice_list.STATUS_FILTERS,
        can_select=can_select,
    )


def all_companies() -> Any:
    """Open invoices of every company the person may see, grouped by family and company."""
    f = InvoiceFilters(status="unpaid")
    families = []
    for head, members in scope.reachable():
        role = next((c.role for c in portal_user().clients if c.client_id == head.id), "viewer")
        groups = [_group(c, f) for c in members]
        families.append((head, groups, role in PAYING_ROLES))
    return render_template(
        "companies.html", families=families, overall=overall([g for _, groups, _ in families for g in groups])
    )


def pay_for_company() -> Any:
    """Start paying invoices of one family: act for its head company, then choose amounts."""
    token = request.form.get("company", "")
    head = queries.client_by_token(services().store, token)
    user = portal_user()
    if head is None or head not in {c.client_id for c in user.clients}:
        abort(404)
    invoices = request.form.getlist("invoice")
    session["client_id"] = head
    return redirect(url_for("portal.pay_form", invoice=invoices))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/companies", "companies", all_companies)
    bp.add_url_rule("/companies/pay", "pay_for_company", pay_for_company, methods=["POST"])


def statement_months() -> list[Any]:
    """Months with a statement for the session's company and every company below it, newest first."""
    from app.web import statements

    store, day = services().store, today()
    months = {m for c in scope.companies() for m in statements.available_months(store, c.id, day)}
    return sorted(months, reverse=True)[: statements.MAX_MONTHS]


def consolidated_statement(month_text: str, *, as_pdf: bool) -> Any:
    """One statement over a parent and its companies: each company's invoices, payments and aging."""
    from app.web import documents
    from app.web.pdf import pdf_response, render_pdf

    month = documents._month_or_404(month_text)
    context = _consolidated(scope.companies(), month)
    if not as_pdf:
        return render_template("statement_consolidated.html", **context)
    data = render_pdf("pdf/statement_consolidated.html", **context, **documents._common())
    return pdf_response(data, f"statement-{month_text}.pdf")


def consolidated_pdf_bytes(client_id: int, month: date) -> bytes:
    """The consolidated statement PDF of a parent (and its companies), outside a signed-in request:
    what its monthly statement email carries."""
    from app.web import documents
    from app.web.pdf import render_pdf

    context = _consolidated(scope.family_of(client_id), month)
    return render_pdf("pdf/statement_consolidated.html", **context, **documents._common(client_id))


def _consolidated(companies: list[scope.Company], month: date) -> dict[str, Any]:
    from app.web import documents, statements

    parts = [(c, documents.build_statement(c.id, month)) for c in companies]
    overall: dict[str, statements.Aging] = {}
    for _, st in parts:
        for a in st.aging:
            total = overall.setdefault(a.currency, statements.Aging(a.currency))
            for key, minor in a.buckets.items():
                total.buckets[key] += minor
    return {
        "parts": parts,
        "buckets": statements.BUCKETS,
        "month": month,
        "month_text": month.strftime("%Y-%m"),
        "overall": [overall[c] for c in sorted(overall)],
    }
