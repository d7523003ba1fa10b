"""Autopay page: the client's rule in words, its upcoming charges, and the form that changes it.

The rule itself and its checks belong to the payments engine (app.core.autopay: get_rule,
set_rule, upcoming_charges); this page turns form fields into its arguments and its errors into
messages beside the fields. Amounts are read in the company's invoice currency.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from app.core import autopay, saved_methods
from app.core.money import Money, MoneyError
from app.web import services
from app.web.pay import AmountError, parse_amount
from app.web.session import portal_user

KIND_CHOICES = (
    ("agreement", "Agreement"),
    ("project", "Project"),
    ("time_and_materials", "Time and materials"),
    ("product", "Product"),
    ("other", "Other"),
)


def company_currency() -> str:
    """The currency most of the company's invoices are in (else the entity's)."""
    svc = services()
    found = svc.store.scalar(
        "SELECT currency FROM invoices WHERE client_id = ? AND status = 'open' GROUP BY currency "
        "ORDER BY COUNT(*) DESC LIMIT 1",
        (portal_user().client_id,),
    )
    return str(found or svc.config.entity.currency)


def upcoming(client_id: int) -> list[autopay.PlannedCharge]:
    svc = services()
    return autopay.upcoming_charges(
        svc.store,
        svc.clock,
        svc.config.tz,
        client_id,
        surcharge=getattr(svc.config, "surcharge", None),
        approval_default=svc.config.portal.approval_threshold,
    )


def rule_in_words(
    rule: autopay.AutopayRule | None, methods: list[saved_methods.SavedMethodRow], currency: str
) -> str:
    if rule is None or not rule.is_enabled:
        return "Autopay is off: invoices are paid only when someone pays them here."
    from app.core.emails import money
    from app.web.filters import KIND_LABELS

    names = [KIND_LABELS.get(k, k) for k in rule.kinds]
    kinds = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    method = next((m for m in methods if m.id == rule.payment_method_id), None)
    when = (
        "on their due date"
        if rule.schedule == "due_date"
        else f"{rule.schedule_days} day{'s' if rule.schedule_days != 1 else ''} after the invoice date"
    )
    if rule.grace_days:
        when += f", {rule.grace_days} day{'s' if rule.grace_days != 1 else ''} later"
    text = f"Pay {kinds.lower().replace('t&m', 'T&M')} invoices {when}"
    if method is not None:
        text += f" with {method_label(method)}"
    if rule.max_minor is not None:
        text += f", up to {money(rule.max_minor, currency)} per invoice"
    return text + "."


def method_label(m: saved_methods.SavedMethodRow) -> str:
    from app.web.filters import method_label as label

    return label({"method": m.method, "brand": m.brand, "last4": m.last4, "bank_name": m.bank_name})


def autopay_page() -> Any:
    svc, user = services(), portal_user()
    rule = autopay.get_rule(svc.store, user.client_id)
    methods = saved_methods.list_methods(svc.store.db, user.client_id)
    currency = company_currency()
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    status = 200
    if request.method == "POST":
        if not user.can_pay:
            abort(403, description="Your access to this company is view-only. Ask a billing contact.")
        values = request.form.to_dict(flat=False)
        errors = _save(rule, methods, currency)
        if not errors:
            flash("Autopay settings saved.", "info")
            return redirect(url_for("portal.autopay"))
        status = 400
    return render_template(
        "autopay.html",
        rule=rule,
        methods=methods,
        currency=currency,
        errors=errors,
        values=values,
        words=rule_in_words(rule, methods, currency),
        upcoming=upcoming(user.client_id) if rule else [],
        kind_choices=KIND_CHOICES,
        method_label=method_label,
    ), status


def _save(
    rule: autopay.AutopayRule | None, methods: list[saved_methods.SavedMethodRow], currency: str
) -> dict[str, str]:
    svc, user = services(), portal_user()
    form = request.form
    errors: dict[str, str] = {}
    enabled = form.get("enabled") == "on"
    method_ref = form.get("method", "")
    method = next((m for m in methods if m.processor_ref == method_ref), None)
    if method_ref and method is None:
        errors["payment_method_id"] = "That payment method is not saved for this company."
    max_minor = None
    if form.get("max_amount", "").strip():
        try:
            max_minor = parse_amount(form["max_amount"], currency)
        except AmountError as exc:
            errors["max_minor"] = str(exc)
    schedule = form.get("schedule", "due_date")
    try:
        days = int(form.get("schedule_days", "0") or 0)
    except ValueError:
        days = -1
    if errors:
        return errors
    try:
        autopay.set_rule(
            svc.store,
            svc.clock,
            user.client_id,
            enabled=enabled,
            payment_method_id=method.id if method else None,
            kinds=form.getlist("kinds"),
            max_minor=max_minor,
            approval_above_minor=rule.approval_above_minor if rule else None,
            schedule=schedule,
            schedule_days=days,
            grace_days=rule.grace_days if rule else 0,
            grouping=rule.grouping if rule else "per_invoice",
            pause_on_dispute=rule.pause_on_dispute if rule else True,
            actor=f"login:{user.email}",
        )
    except autopay.AutopayRuleError as exc:
        return exc.errors
    return {}


def turn_off(*, reason: str) -> None:
    """Switch autopay off keeping the rest of the rule (after its method was removed)."""
    svc, user = services(), portal_user()
    rule = autopay.get_rule(svc.store, user.client_id)
    if rule is None or not rule.is_enabled:
        return
    autopay.set_rule(
        svc.store,
        svc.clock,
        user.client_id,
        enabled=False,
        payment_method_id=None,
        kinds=rule.kinds,
        max_minor=rule.max_minor,
        approval_above_minor=rule.approval_above_minor,
        schedule=rule.schedule,
        schedule_days=rule.schedule_days,
        grace_days=rule.grace_days,
        grouping=rule.grouping,
        pause_on_dispute=rule.pause_on_dispute,
        actor=f"login:{user.email} ({reason})",
    )


def max_input(rule: autopay.AutopayRule | None, currency: str) -> str:
    if rule is None or rule.max_minor is None:
        return ""
    try:
        return format(Money(rule.max_minor, currency).to_decimal(), "f")
    except MoneyError:
        return ""


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/autopay", "autopay", autopay_page, methods=["GET", "POST"])
    bp.add_app_template_global(max_input, "autopay_max_input")
