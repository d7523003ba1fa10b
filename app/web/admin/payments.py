"""Payments: the list with filters, one payment (allocations, outbox effects, resend receipt) and
recording a manual payment (check, wire, cash) over a client's invoices."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from app.core.audit import audit
from app.core.keys import public_token
from app.core.manual_payments import MANUAL_METHODS, Allocation, ManualPaymentError, record_manual_payment
from app.core.receipts import ResendError, resend_receipt
from app.web import services, today
from app.web.admin import bp, entity_filter, queries
from app.web.admin.guard import current_admin
from app.web.pay import AmountError, parse_amount

STATUSES = ("succeeded", "processing", "requires_action", "submitted", "failed", "canceled")
METHODS = ("card", "ach", "check", "wire", "cash", "credit")


def payment_filters() -> queries.PaymentFilters:
    a = request.args
    return queries.PaymentFilters(
        status=a.get("status", "") if a.get("status", "") in STATUSES else "",
        method=a.get("method", "") if a.get("method", "") in METHODS else "",
        client_id=a.get("client", type=int),
        q=a.get("q", "").strip()[:100],
        entity_id=entity_filter.selected_id(),
    )


@bp.get("/payments")
def payments() -> Any:
    f = payment_filters()
    rows, count, page, pages = queries.list_payments(
        services().store, f, page=request.args.get("page", 1, type=int)
    )
    return render_template(
        "admin/payments.html",
        rows=rows,
        count=count,
        page=page,
        pages=pages,
        f=f,
        statuses=STATUSES,
        methods=METHODS,
    )


@bp.get("/payments/<int:payment_id>")
def payment(payment_id: int) -> Any:
    from app.core.refunds import refundable_minor

    store = services().store
    row = queries.payment(store, payment_id)
    if row is None:
        abort(404)
    full = store.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
    refundable = refundable_minor(store.db, full) if row["status"] == "succeeded" else 0
    return render_template(
        "admin/payment.html",
        p=row,
        allocations=queries.payment_allocations(store, payment_id),
        effects=queries.payment_outbox(store, payment_id),
        refunds=queries.payment_refunds(store, payment_id),
        refundable=refundable,
        can_refund=refundable > 0 and row["processor_ref"] is not None and row["method"] in ("card", "ach"),
        request_key=public_token(),
    )


@bp.post("/payments/<int:payment_id>/refund")
def refund(payment_id: int) -> Any:
    """A full or partial refund through Stripe (app/core/refunds.py); a double submit refunds once."""
    from app.core.refunds import RefundError
    from app.core.refunds import refund as refund_at_processor
    from sync.base import ConnectorError

    svc, admin = services(), current_admin()
    row = queries.payment(svc.store, payment_id)
    if row is None:
        abort(404)
    back = redirect(url_for("admin.payment", payment_id=payment_id))
    if row["processor_ref"] is None:
        flash("This payment did not go through Stripe; pay it back outside Cashloop.", "error")
        return back
    try:
        amount = parse_amount(request.form.get("amount", ""), row["currency"])
    except AmountError as exc:
        flash(f"Refund amount: {exc}", "error")
        return back
    key = request.form.get("request_key", "")[:64]
    with svc.store.write() as db:
        # The same form posted twice (a double click) carries the same key: only the first refunds.
        if (
            key
            and db.execute(
                "SELECT 1 FROM audit_log WHERE action = 'payment.refund_requested' AND target = ? "
                "AND json_extract(detail_json, '$.request_key') = ?",
                (f"payment:{payment_id}", key),
            ).fetchone()
        ):
            flash("This refund was already requested (the form was sent twice).", "info")
            return back
        audit(
            db,
            svc.clock,
            actor=admin.actor,
            action="payment.refund_requested",
            target=f"payment:{payment_id}",
            detail={"request_key": key, "amount_minor": amount},
        )
    try:
        result = refund_at_processor(
            svc, row["token"], amount, admin.actor, request.form.get("reason", "")[:200]
        )
    except RefundError as exc:
        flash(str(exc), "error")
    except ConnectorError as exc:
        flash(f"Stripe could not be reached; nothing was refunded ({exc}).", "error")
    else:
        if result.status == "failed":
            flash(f"Stripe refused the refund: {result.message}", "error")
        elif result.status == "succeeded":
            flash("Refunded.", "info")
        else:
            flash("The refund is sent; Stripe's answer will be recorded.", "info")
    return back


@bp.post("/payments/<int:payment_id>/resend-receipt")
def resend(payment_id: int) -> Any:
    svc, admin = services(), current_admin()
    if queries.payment(svc.store, payment_id) is None:
        abort(404)
    try:
        n = resend_receipt(svc.store, svc.clock, payment_id, actor=admin.actor)
    except ResendError as exc:
        flash(str(exc), "error")
    else:
        flash(f"The receipt is queued to be sent again (resend {n}).", "info")
    return redirect(url_for("admin.payment", payment_id=payment_id))


def _manual_form(
    client: Any, *, values: Any = None, error: str | None = None, field_errors: dict[str, str] | None = None
) -> Any:
    store = services().store
    invoices = queries.client_invoices(store, client["id"], open_only=True)
    return render_template(
        "admin/manual_payment.html",
        client=client,
        invoices=invoices,
        methods=MANUAL_METHODS,
        values=values or {"received_on": today().isoformat(), "request_key": public_token()},
        error=error,
        field_errors=field_errors or {},
        currency=invoices[0]["currency"] if invoices else services().config.entity.currency,
    ), 400 if (error or field_errors) else 200


@bp.route("/clients/<int:client_id>/payments/new", methods=["GET", "POST"])
def new_manual_payment(client_id: int) -> Any:
    svc = services()
    client = queries.client(svc.store, client_id)
    if client is None:
        abort(404)
    if request.method == "GET":
        return _manual_form(client)
    form = request.form
    invoices = {r["id"]: r for r in queries.client_invoices(svc.store, client_id, open_only=True)}
    field_errors: dict[str, str] = {}
    allocations: list[Allocation] = []
    currency = next(iter(invoices.values()))["currency"] if invoices else svc.config.entity.currency
    for key, text in form.items():
        if not key.startswith("alloc-") or not text.strip():
            continue
        invoice_id = int(key.removeprefix("alloc-")) if key.removeprefix("alloc-").isdigit() else -1
        inv = invoices.get(invoice_id)
        if inv is None:
            return _manual_form(
                client, values=form, error="One of the invoices does not belong to this client."
            )
        try:
            allocations.append(Allocation(invoice_id, parse_amount(text, inv["currency"])))
        except AmountError as exc:
            field_errors[key] = f"{inv['number']}: {exc}"
    try:
        amount = parse_amount(form.get("amount", ""), currency)
    except AmountError as exc:
        field_errors["amount"] = f"Amount received: {exc}"
        amount = 0
    try:
        received_on = date.fromisoformat(form.get("received_on", ""))
    except ValueError:
        field_errors["received_on"] = "Date received: enter a date such as 2026-03-09."
        received_on = today()
    if field_errors:
        return _manual_form(client, values=form, field_errors=field_errors)
    admin = current_admin()
    try:
        recorded = record_manual_payment(
            svc.store,
            svc.clock,
            client_id=client_id,
            method=form.get("method", ""),
            amount_minor=amount,
            allocations=allocations,
            reference=form.get("reference", ""),
            received_on=received_on,
            note=form.get("note", ""),
            actor=admin.actor,
            request_key=form.get("request_key", "") or public_token(),
            base_url=svc.config.cashloop.base_url,
            timezone=svc.config.tz,
        )
    except ManualPaymentError as exc:
        return _manual_form(client, values=form, error=str(exc))
    if recorded.is_new:
        flash(
            "The payment is recorded; the receipt, PSA write-back and journal entry are on their way.", "info"
        )
    else:
        flash("This payment was already recorded (the form was sent twice); nothing was added.", "info")
    return redirect(url_for("admin.payment", payment_id=recorded.payment_id))
