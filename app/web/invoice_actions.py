"""What a contact does to one invoice besides paying it: dispute a line, withdraw a dispute, approve.

Viewers only look: every action here needs a paying role (billing or approver), and approving
needs the approver role. The invoice is found through the session's company, so another
company's token is a 404 whatever the form says.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from app.core import approvals, line_disputes
from app.web import queries, services
from app.web.session import portal_user

VIEW_ONLY = "Your access to this company is view-only. Ask a billing contact."


def _invoice(token: str) -> queries.InvoiceRow:
    from app.web.portal import find_invoice_or_404

    return find_invoice_or_404(token)


def _owner(token: str) -> int:
    """The company of an invoice found by `_invoice`: the session's, or one below it (a parent
    company's contact acts on its children's invoices too)."""
    from app.web import scope

    owner = scope.invoice_owner(token)
    if owner is None:
        abort(404)
    return owner


def _line(invoice_id: int, line_no: int) -> Any:
    line = services().store.one(
        "SELECT line_no, description, quantity, amount_minor, ticket, project, agreement, service "
        "FROM invoice_lines WHERE invoice_id = ? AND line_no = ?",
        (invoice_id, line_no),
    )
    if line is None:
        abort(404)
    return line


def dispute_line(token: str, line_no: int) -> Any:
    if not portal_user().can_pay:
        abort(403, description=VIEW_ONLY)
    inv = _invoice(token)
    if inv.is_credit:
        abort(404)
    line = _line(inv.id, line_no)
    context = {
        "inv": inv,
        "line": line,
        "error": None,
        "reason": "",
        "min_len": line_disputes.REASON_MIN,
        "max_len": line_disputes.REASON_MAX,
    }
    if request.method == "GET":
        return render_template("dispute.html", **context)
    svc, user = services(), portal_user()
    context["reason"] = request.form.get("reason", "")[: line_disputes.REASON_MAX + 100]
    try:
        with svc.store.write() as db:
            line_disputes.open_dispute(
                db,
                svc.clock,
                client_id=_owner(token),
                invoice_id=inv.id,
                line_no=line_no,
                reason=context["reason"],
                raised_by=user.email,
            )
    except line_disputes.DisputeError as exc:
        context["error"] = str(exc)
        return render_template("dispute.html", **context), 400
    flash(
        f"Line {line_no} of {inv.number} is now in dispute. We will reply by email; reminders and autopay "
        "wait for this invoice until then.",
        "info",
    )
    return redirect(url_for("portal.invoice", token=token))


def withdraw_dispute(token: str, dispute_token: str) -> Any:
    if not portal_user().can_pay:
        abort(403, description=VIEW_ONLY)
    inv = _invoice(token)
    svc, user = services(), portal_user()
    try:
        with svc.store.write() as db:
            d = line_disputes.withdraw_dispute(
                db, svc.clock, client_id=_owner(token), token=dispute_token, actor=user.email
            )
    except line_disputes.DisputeError:
        abort(404)
    if d.invoice_id != inv.id:  # pragma: no cover - the token is unique; a mismatch is a forged form
        abort(404)
    flash("The dispute is withdrawn.", "info")
    return redirect(url_for("portal.invoice", token=token))


def approve_invoice(token: str) -> Any:
    user = portal_user()
    if user.client.role != approvals.APPROVER_ROLE:
        abort(403, description="Only an approver of your company can approve invoices.")
    inv = _invoice(token)
    svc = services()
    try:
        with svc.store.write() as db:
            approvals.approve(
                db,
                svc.clock,
                invoice_id=inv.id,
                client_id=_owner(token),
                approver=user.email,
                role=user.client.role,
            )
    except approvals.ApprovalError as exc:
        abort(400, description=str(exc))
    flash(f"{inv.number} is approved; it can now be paid.", "info")
    return redirect(url_for("portal.invoice", token=token))


def register(bp: Blueprint) -> None:
    bp.add_url_rule(
        "/invoices/<token>/lines/<int:line_no>/dispute", "dispute_line", dispute_line, methods=["GET", "POST"]
    )
    bp.add_url_rule(
        "/invoices/<token>/disputes/<dispute_token>/withdraw",
        "withdraw_dispute",
        withdraw_dispute,
        methods=["POST"],
    )
    bp.add_url_rule("/invoices/<token>/approve", "approve_invoice", approve_invoice, methods=["POST"])
