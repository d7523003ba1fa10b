"""Autopay page: the client's rule in words, its upcoming charges (each can be skipped once), and
the form that changes the rule.

The rule itself and its checks belong to the payments engine (app.core.autopay: get_rule,
set_rule, upcoming_charges); this page turns form fields into its arguments and its errors into
messages beside the fields. Amounts are read in the company's invoice currency.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from app.core import autopay, autopay_skips, saved_methods
from app.core.clock import local_today
from app.core.money import Money, MoneyError
from app.web import services
from app.web.filters import wall_clock
from app.web.invoice_actions import VIEW_ONLY
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
        run_time=svc.config.autopay.run_time,
        surcharge=getattr(svc.config, "surcharge", None),
        approval_default=svc.config.portal.approval_threshold,
    )


def _first_charge(client_id: int) -> str:
    """What the saved rules will charge first, said at once: turning autopay on may make invoices
    that are already due chargeable at the next run. The date is the one every page shows
    (app.core.autopay.upcoming_charges)."""
    rule = autopay.get_rule(services().store, client_id)
    charges = upcoming(client_id) if rule and rule.is_enabled else []
    if not charges:
        return ""
    from app.core.emails import date_long, money

    svc = services()
    first = charges[0]
    numbers = ", ".join(it.number for it in first.items)
    amount = money(first.amount_minor, first.currency)
    tz = svc.config.tz
    # The run's real wall-clock time, in the portal's words ("6:00 AM CST"): on a spring-forward
    # night a 02:30 run happens at 03:30.
    run_at = autopay.local_run_at(first.charge_on, svc.config.autopay.run_time, tz)
    at = wall_clock(run_at.astimezone(UTC).astimezone(tz))  # through UTC: a skipped 02:30 reads 03:30
    today = local_today(svc.clock, tz)
    days = (first.charge_on - today).days
    hint = ' To leave an invoice out, use "Skip this charge" below before then.'
    if days == 0:
        when = f"today at {at}"
    elif days == 1:
        when = f"tomorrow at {at}"
    else:
        when, hint = f"on {date_long(first.charge_on)}", ""
    return f" The first charge is {amount} {when}, for {numbers}.{hint}"


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
    text = f"Pay {kinds.lower().replace('t&m', 'T&M')} invoices {_when_in_words(rule)}"
    if method is not None:
        text += f" with {method_label(method)}"
    if rule.max_minor is not None:
        text += f", up to {money(rule.max_minor, currency)} per invoice"
    if rule.grouping == "per_client":
        text += ", all invoices due the same day in one charge"
    return text + "."


def _days(n: int) -> str:
    return f"{n} day{'s' if n != 1 else ''}"


def _when_in_words(rule: autopay.AutopayRule) -> str:
    """The charge date as app.core.autopay.charge_on computes it: the date, plus the grace days."""
    if rule.schedule == "due_date":
        return f"{_days(rule.grace_days)} after their due date" if rule.grace_days else "on their due date"
    total = rule.schedule_days + rule.grace_days
    when = f"{_days(total)} after the invoice date"
    if rule.grace_days:
        when += f" ({rule.schedule_days} + {_days(rule.grace_days)} of grace)"
    return when


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
            abort(403, description=VIEW_ONLY)
        values = request.form.to_dict(flat=False)
        errors = _save(rule, methods, currency)
        if not errors:
            flash("Autopay settings saved." + _first_charge(user.client_id), "info")
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
        skips=skips_of(user.client_id),
        tokens=invoice_tokens(user.client_id),
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
    days, grace = _whole_days(form.get("schedule_days")), _whole_days(form.get("grace_days"))
    if errors:
        # Every wrong field in one answer, not one per submit.
        field_errors = autopay.rule_field_errors(
            kinds=form.getlist("kinds"), max_minor=None, approval_above_minor=None, schedule=schedule,
            schedule_days=days, grace_days=grace, grouping=form.get("grouping", "per_invoice"),
        )
        return {**field_errors, **errors}
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
            grace_days=grace,
            grouping=form.get("grouping", "per_invoice"),
            pause_on_dispute=rule.pause_on_dispute if rule else True,
            actor=f"login:{user.email}",
        )
    except autopay.AutopayRuleError as exc:
        return exc.errors
    return {}


def _whole_days(text: str | None) -> int:
    """A days field as typed: empty is 0; anything but a whole number is -1, which set_rule
    refuses with its own message for the field."""
    typed = (text or "").strip() or "0"
    # isdecimal: digits of any script ("٥"), but not "1_0", "+5" or "²", which int() reads or trips on.
    return int(typed) if typed.isdecimal() and len(typed) <= 6 else -1


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


def invoice_tokens(client_id: int) -> dict[int, str]:
    """invoice id -> public token, for the skip buttons of the upcoming list."""
    rows = services().store.all(
        "SELECT id, token FROM invoices WHERE client_id = ? AND status = 'open'", (client_id,)
    )
    return {r["id"]: r["token"] for r in rows}


def skips_of(client_id: int) -> list[dict[str, Any]]:
    """The client's skipped charges still ahead, each with whether it can still be undone."""
    svc = services()
    cfg = svc.config
    now = svc.clock.utc_now()
    out = []
    tokens = invoice_tokens(client_id)
    for s in autopay_skips.client_skips(svc.store.db, client_id, today=local_today(svc.clock, cfg.tz)):
        out.append(
            {
                "skip": s,
                "token": tokens.get(s.invoice_id, ""),
                "can_undo": autopay_skips.can_undo(s, now=now, run_time=cfg.autopay.run_time, tz=cfg.tz),
            }
        )
    return out


def skip_for(invoice_id: int) -> dict[str, Any] | None:
    """The invoice page's view of a skip of this invoice still ahead (template global)."""
    return next((s for s in skips_of(portal_user().client_id) if s["skip"].invoice_id == invoice_id), None)


def _invoice_id(token: str) -> int:
    found = services().store.scalar(
        "SELECT id FROM invoices WHERE token = ? AND client_id = ?", (token, portal_user().client_id)
    )
    if found is None:
        abort(404)
    return int(found)


def _back(token: str) -> Any:
    if request.form.get("back") == "invoice":
        return redirect(url_for("portal.invoice", token=token))
    return redirect(url_for("portal.autopay"))


def _skip_form() -> tuple[Any, Any, str, int]:
    """(services, the signed-in payer, the form's invoice token, its invoice id): 403 for a viewer,
    404 for an invoice not of this company."""
    svc, user = services(), portal_user()
    if not user.can_pay:
        abort(403, description=VIEW_ONLY)
    token = request.form.get("invoice", "")
    return svc, user, token, _invoice_id(token)


def skip_charge() -> Any:
    svc, user, token, invoice_id = _skip_form()
    cfg = svc.config
    try:
        skip = autopay_skips.skip_next_charge(
            svc.store,
            svc.clock,
            cfg.tz,
            client_id=user.client_id,
            invoice_id=invoice_id,
            days=cfg.autopay.skip_days,
            run_time=cfg.autopay.run_time,
            actor=f"login:{user.email}",
            manage_url=f"{cfg.cashloop.base_url.rstrip('/')}/autopay",
            approval_default=cfg.portal.approval_threshold,
        )
    except autopay_skips.SkipError as exc:
        flash(str(exc), "error")
        return _back(token)
    from app.core.emails import date_long

    flash(
        f"Skipped: autopay will not charge {skip.number} on {date_long(skip.skipped_on)}. If it is still "
        f"open on {date_long(skip.resume_on)}, autopay charges it then; until it is paid, reminders come "
        "as usual. "
        "You can undo this until the charge is due.",
        "info",
    )
    return _back(token)


def undo_skip() -> Any:
    svc, user, token, invoice_id = _skip_form()
    cfg = svc.config
    try:
        skip = autopay_skips.undo_skip(
            svc.store,
            svc.clock,
            cfg.tz,
            client_id=user.client_id,
            invoice_id=invoice_id,
            run_time=cfg.autopay.run_time,
            actor=f"login:{user.email}",
            manage_url=f"{cfg.cashloop.base_url.rstrip('/')}/autopay",
        )
    except autopay_skips.SkipError as exc:
        flash(str(exc), "error")
        return _back(token)
    flash(f"Undone: autopay charges {skip.number} as planned.", "info")
    return _back(token)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/autopay", "autopay", autopay_page, methods=["GET", "POST"])
    bp.add_url_rule("/autopay/skip", "autopay_skip", skip_charge, methods=["POST"])
    bp.add_url_rule("/autopay/skip/undo", "autopay_skip_undo", undo_skip, methods=["POST"])
    bp.add_app_template_global(max_input, "autopay_max_input")
    bp.add_app_template_global(skip_for, "autopay_skip_for")
