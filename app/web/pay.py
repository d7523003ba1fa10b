"""Paying: choose invoices and amounts (/pay), the card page (/pay/<token>) and its confirm call.

Amounts are typed by a person, so they are parsed here with messages for them; whether the
amounts may be charged is decided again by `app.checkout.begin_checkout`, which owns the ledger.
Card numbers never reach this server: Stripe.js turns them into a payment method id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for

from app.core.emails import money
from app.core.money import Money, MoneyError, exponent
from app.core.store import Store
from app.web import payment_rules, queries, scope, services, today
from app.web.session import portal_user
from sync.base import ConnectorError

log = logging.getLogger(__name__)
MAX_INVOICES = 200
PROCESSOR_DOWN = "We could not reach the card processor. Nothing was charged; please try again in a minute."
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_PAYMENT_METHOD = re.compile(r"[A-Za-z0-9_]{3,255}")


class AmountError(ValueError):
    """An amount a person typed that we cannot use; the message is for them."""


class AmountTooLarge(AmountError):
    """More digits than any invoice has; the form answers with what is left to pay."""


def parse_amount(text: str, currency: str) -> int:
    """The minor units of an amount typed as "1,250.00" or "$1250"; raises AmountError."""
    cleaned = text.strip().replace(",", "").replace(" ", "").lstrip("$€£¥")
    if not cleaned:
        raise AmountError("Enter an amount.")
    if not _NUMBER.fullmatch(cleaned):
        raise AmountError("Enter the amount as a number, such as 1250.00.")
    if cleaned.startswith("-"):
        raise AmountError("The amount cannot be negative.")
    if len(cleaned.split(".")[0]) > 15:
        # No invoice is that large; stopping here also keeps absurd digit strings out of the money code.
        raise AmountTooLarge("That amount is far larger than any invoice; check the digits.")
    try:
        return Money.from_decimal(cleaned, currency).amount_minor
    except MoneyError:
        places = exponent(currency)
        if places == 0:
            raise AmountError(f"{currency} amounts have no decimal places.") from None
        raise AmountError(f"{currency} amounts have at most {places} decimal places.") from None


def check_amounts(
    rows: list[queries.InvoiceRow], form: Mapping[str, str], *, allow_partial: bool, minimum: str
) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(items, errors): `items` are (invoice token, amount_minor); `errors` maps a token to a message."""
    items: list[tuple[str, int]] = []
    errors: dict[str, str] = {}
    for row in rows:
        due = money(row.payable_minor, row.currency)
        try:
            smallest = Money.from_decimal(minimum, row.currency).amount_minor
        except MoneyError:  # a minimum such as 0.50 means nothing in yen: any whole amount will do
            smallest = 1
        try:
            if not allow_partial:
                amount = row.payable_minor
            else:
                try:
                    amount = parse_amount(form.get(f"amount-{row.token}", ""), row.currency)
                except AmountTooLarge:
                    raise AmountError(f"This invoice has {due} left to pay; enter that or less.") from None
            if amount == 0:
                raise AmountError("Enter an amount greater than zero.")
            if amount > row.payable_minor:
                raise AmountError(f"This invoice has {due} left to pay; enter that or less.")
            if amount < row.payable_minor and amount < smallest:
                raise AmountError(f"The smallest partial payment is {money(smallest, row.currency)}.")
        except AmountError as exc:
            errors[row.token] = str(exc)
            continue
        items.append((row.token, amount))
    return items, errors


def _chosen_rows() -> list[queries.InvoiceRow]:
    from app.web.portal import thresholds

    svc, client_id = services(), portal_user().client_id
    if request.values.get("all") == "due":
        rows = queries.open_invoices(svc.store, client_id, today(), th=thresholds())
        currency = request.values.get("currency")
        rows = [r for r in rows if r.currency == currency] if currency else rows
        # As home's button says: the kinds paid online (app.web.payment_rules.pay_all_kinds).
        kinds = payment_rules.pay_all_kinds(svc, client_id, [r.kind for r in rows if r.payable_minor > 0])
        return [r for r in rows if r.kind in kinds or r.payable_minor <= 0]
    tokens = request.values.getlist("invoice")[:MAX_INVOICES]
    # A parent company's contact may choose invoices of the companies below it (app.web.scope).
    rows = scope.find_invoices(tokens, today())
    if rows is None:
        abort(404)
    return rows


def _require_payer() -> None:
    if not portal_user().can_pay:
        abort(403, description="Your access to this company is view-only. Ask a billing contact to pay.")


def pay_form() -> Any:
    _require_payer()
    svc = services()
    portal = svc.config.portal
    chosen = _chosen_rows()
    payable = [r for r in chosen if r.payable_minor > 0]
    awaiting = [r for r in chosen if r.awaits_approval and r.owed_minor > 0]
    skipped = [r for r in chosen if r.payable_minor <= 0 and r not in awaiting]
    methods = payment_rules.methods_for_kinds(svc, portal_user().client_id, [r.kind for r in payable])
    method = request.values.get("method", methods[0] if methods else "card")
    context: dict[str, Any] = {
        "rows": payable,
        "skipped": skipped,
        "awaiting": awaiting,
        "errors": {},
        "form_error": None,
        # An amount typed on the invoice page arrives here first and is kept in the form.
        "values": request.form if request.method == "POST" else {},
        "allow_partial": portal.allow_partial_payments,
        "minimum": portal.minimum_partial_payment,
        "methods": methods,
        "method": method if method in methods else (methods[0] if methods else ""),
        "fees": _fees(svc, payable, methods),
        # Which company each invoice is of, when a parent pays for its companies.
        "row_companies": {i: c.name for i, c in scope.owners_of(payable).items()} if scope.is_group() else {},
        "surcharge": (
            payment_rules.surcharge_terms(svc, portal_user().client_id, payable[0].currency)
            if payable and "card" in methods else None
        ),
    }
    context["shown_total"], context["shown_fee"] = _shown_totals(svc, context)
    if not chosen:
        if request.values.get("all") != "due":
            from app.web.selection import back_with_message

            return back_with_message("Tick at least one invoice to pay.")
        context["form_error"] = "Nothing is due right now."
        return render_template("pay.html", **context), 200
    if len({r.currency for r in payable}) > 1:
        context["form_error"] = "These invoices are in different currencies. Pay one currency at a time."
        return render_template("pay.html", **context), 400
    if payable and not methods:
        context["form_error"] = (
            "These invoices cannot be paid online together. Pay each kind of invoice on its own, "
            "or contact us for other ways to pay." if len({r.kind for r in payable}) > 1 else
            "This kind of invoice is not paid online. Contact us for other ways to pay."
        )
        return render_template("pay.html", **context), 400
    if request.method == "GET" or request.form.get("action") != "checkout" or not payable:
        status = 400 if request.method == "POST" and not payable else 200
        if status == 400 and not context["form_error"]:
            context["form_error"] = (
                "These invoices need an approver's OK before they can be paid." if awaiting
                else "Nothing is left to pay on these invoices."
            )
        return render_template("pay.html", **context), status
    if request.form.get("method", context["method"]) not in methods:
        choices = " or ".join(payment_rules.LABELS[m] for m in methods)
        context["form_error"] = f"Choose how to pay: {choices}."
        return render_template("pay.html", **context), 400
    context["values"] = request.form
    items, errors = check_amounts(
        payable,
        request.form,
        allow_partial=portal.allow_partial_payments,
        minimum=portal.minimum_partial_payment,
    )
    if errors:
        context["errors"] = errors
        return render_template("pay.html", **context), 400
    from app import checkout
    from app.core import approvals
    from app.core.payments import PaymentRequestError

    # Checked again right before the checkout is written, from the store (not the page).
    late = approvals.unapproved_numbers(svc.store.db, [r.id for r in payable],
                                        default_threshold=portal.approval_threshold)
    if late:
        context["form_error"] = f"Invoice {', '.join(late)} needs an approver's OK before it can be paid."
        return render_template("pay.html", **context), 400
    try:
        started = checkout.begin_checkout(
            svc, client_id=portal_user().client_id, login_email=portal_user().email, items=items,
            method=request.form.get("method", context["method"]),
            for_children=scope.is_group(),
        )
    except PaymentRequestError as exc:
        context["form_error"] = str(exc)
        return render_template("pay.html", **context), 400
    except ConnectorError as exc:
        log.warning("starting a checkout failed: %s", exc)
        context["form_error"] = PROCESSOR_DOWN
        return render_template("pay.html", **context), 503
    # NOTE: redirect (not render) so a reload cannot post the form again; the card page asks
    # for a fresh SetupIntent, which costs nothing if unused.
    return redirect(url_for("portal.checkout_page", payment_token=started.payment_token))


def _shown_totals(svc: Any, context: dict[str, Any]) -> tuple[int, int]:
    """(invoices total, surcharge) as the form first shows them: of the amounts kept in the form
    (typed on the invoice page), else of what is left to pay; pay-form.js follows later typing."""
    rows, values = context["rows"], context["values"]
    if not rows:
        return 0, 0
    total = 0
    for row in rows:
        try:
            typed = values.get(f"amount-{row.token}") if context["allow_partial"] else None
            total += parse_amount(typed, row.currency) if typed else row.payable_minor
        except AmountError:
            total += row.payable_minor
    fee = payment_rules.surcharge_minor(svc, portal_user().client_id, amount_minor=total,
                                        currency=rows[0].currency, method=context["method"])
    return total, fee if context["surcharge"] else 0


def _fees(svc: Any, rows: list[queries.InvoiceRow], methods: tuple[str, ...]) -> dict[str, int]:
    """The surcharge each method would add to paying `rows` in full (shown before anyone pays;
    pay-form.js follows the amounts typed with `surcharge_terms`, the checkout page shows the
    figure begin_checkout charges)."""
    if not rows:
        return {}
    total = sum(r.payable_minor for r in rows)
    return {
        m: payment_rules.surcharge_minor(svc, portal_user().client_id, amount_minor=total,
                                         currency=rows[0].currency, method=m)
        for m in methods
    }


def retry_url(store: Store, client_id: int, payment_id: int) -> str:
    tokens = [r["token"] for r in queries.payment_lines(store, client_id, payment_id) if r["is_visible"]]
    return url_for("portal.pay_form", invoice=tokens)


def checkout_page(payment_token: str) -> Any:
    _require_payer()
    svc, client_id = services(), portal_user().client_id
    row = queries.find_payment(svc.store, client_id, payment_token)
    if row is None:
        abort(404)
    if row["status"] != "pending":
        return redirect(url_for("portal.payment", token=payment_token))
    from app import checkout
    from app.core.payments import PaymentRequestError

    retry = retry_url(svc.store, client_id, row["id"])
    try:
        co = checkout.checkout_view(
            svc, client_id=client_id, payment_token=payment_token, login_email=portal_user().email
        )
    except PaymentRequestError:
        abort(404)
    except ConnectorError as exc:
        log.warning("loading checkout %s failed: %s", payment_token, exc)
        return render_template(
            "message.html",
            title="Online payments are unavailable",
            message=PROCESSOR_DOWN,
            link=retry,
            link_text="Try again",
        ), 503
    return render_template("checkout.html", co=co, retry_url=retry)


def confirm(payment_token: str) -> Any:
    if not portal_user().can_pay:
        return jsonify(status="failed", message="Your access to this company is view-only."), 403
    svc, client_id = services(), portal_user().client_id
    row = queries.find_payment(svc.store, client_id, payment_token)
    if row is None:
        return jsonify(status="failed", message="This payment was not found."), 404
    retry = retry_url(svc.store, client_id, row["id"])
    data = request.get_json(silent=True)
    method = data.get("payment_method") if isinstance(data, dict) else None
    if not isinstance(method, str) or not _PAYMENT_METHOD.fullmatch(method):
        message = "Choose a card or bank account to pay with."
        return jsonify(status="failed", message=message, retry=retry), 400
    from app import checkout
    from app.core.payments import PaymentRequestError

    try:
        result = checkout.confirm_checkout(
            svc,
            client_id=client_id,
            payment_token=payment_token,
            payment_method=method,
            save=data.get("save") is True,
        )
    except PaymentRequestError as exc:
        return jsonify(status="failed", message=str(exc), retry=retry), 400
    except ConnectorError as exc:
        log.warning("confirming checkout %s failed: %s", payment_token, exc)
        return jsonify(
            status="failed",
            message=PROCESSOR_DOWN,
            retry=retry,
            redirect=url_for("portal.payment", token=payment_token),
        ), 503
    if result.status != "failed":
        from app.web import method_labels

        method_labels.remember(svc, client_id=client_id, payment_token=payment_token, pm_id=method)
    return jsonify(
        status=result.status,
        client_secret=result.client_secret,
        message=result.message,
        redirect=result.redirect,
        retry=retry,
    )


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/pay", "pay_form", pay_form, methods=["GET", "POST"])
    bp.add_url_rule("/pay/<payment_token>", "checkout_page", checkout_page)
    bp.add_url_rule("/pay/<payment_token>/confirm", "confirm", confirm, methods=["POST"])
