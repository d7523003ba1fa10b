"""Payment methods page: saved cards and bank accounts, add one through a SetupIntent, default, remove.

Adding one: the page asks Stripe for a SetupIntent of that type (a call the person waits for),
Stripe.js confirms it in the browser (methods.js: the Card Element, or a bank account with its
debit authorization), and the browser posts the resulting payment method id here; it is read back
from Stripe (never trusted from the browser), attached to the company's customer and saved.
Removing stops its use at once and detaches it at Stripe through the outbox, once.
Only paying roles (billing, approver) change anything; viewers see the list.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from app import checkout
from app.config import PortalMethodSettings
from app.core import saved_methods
from app.core.keys import derive_key
from app.core.method_names import method_name
from app.web import payment_rules, services
from app.web.session import portal_user
from sync.base import ConnectorError

log = logging.getLogger(__name__)
_PM = re.compile(r"pm_[A-Za-z0-9_]{3,250}")
UNAVAILABLE = "We could not reach the card processor. Nothing was saved; please try again in a minute."


def _require_payer() -> None:
    if not portal_user().can_pay:
        abort(403, description="Your access to this company is view-only. Ask a billing contact.")


def _autopay_method_id() -> int | None:
    from app.core import autopay

    rule = autopay.get_rule(services().store, portal_user().client_id)
    return rule.payment_method_id if rule and rule.is_enabled else None


def _bank_allowed() -> bool:
    """True when bank accounts may pay at least one kind of invoice for this company."""
    svc, client_id = services(), portal_user().client_id
    kinds = [f for f in PortalMethodSettings.__dataclass_fields__]
    return any("ach" in payment_rules.methods_for_kinds(svc, client_id, [k]) for k in kinds)


def methods_page() -> Any:
    svc, user = services(), portal_user()
    now = svc.clock.utc_now().astimezone(svc.config.tz)
    methods = saved_methods.list_methods(svc.store.db, user.client_id)
    setup_secret, error = "", None
    bank_allowed = _bank_allowed()
    adding = request.args.get("add")
    adding = adding if adding == "card" or (adding == "bank" and bank_allowed) else None
    if user.can_pay and adding:
        try:
            setup_secret = checkout.setup_intent(
                svc, client_id=user.client_id, login_email=user.email,
                method="ach" if adding == "bank" else "card",
                key=derive_key("setup-method", client=user.client_id, kind=adding,
                               at=svc.clock.utc_now().isoformat()),
            )
        except ConnectorError as exc:
            log.warning("payment methods: SetupIntent failed: %s", exc)
            error = UNAVAILABLE
    return render_template(
        "methods.html",
        methods=methods,
        setup_secret=setup_secret,
        adding=adding if setup_secret else None,
        bank_allowed=bank_allowed,
        error=error,
        autopay_method_id=_autopay_method_id(),
        year=now.year,
        month=now.month,
        publishable_key=svc.config.stripe.publishable_key,
        js_url=svc.config.stripe.js_url,
    )


def save_method() -> Any:
    if not portal_user().can_pay:
        return jsonify(status="failed", message="Your access to this company is view-only."), 403
    svc, user = services(), portal_user()
    data = request.get_json(silent=True)
    pm = data.get("payment_method") if isinstance(data, dict) else None
    if not isinstance(pm, str) or not _PM.fullmatch(pm):
        return jsonify(status="failed", message="The card could not be read. Try again."), 400
    try:
        customer = checkout.stripe_customer(svc, user.client_id, user.email)
        owner = svc.gateway.method_customer(pm)
        if owner is not None and owner != customer:
            return jsonify(status="failed", message="That payment method is not available."), 400
        svc.gateway.attach_method(pm, customer)
        m = svc.gateway.payment_method(pm)
    except ConnectorError as exc:
        log.warning("payment methods: saving %s failed: %s", pm, exc)
        return jsonify(status="failed", message=UNAVAILABLE), 503
    try:
        with svc.store.write() as db:
            saved = saved_methods.save_method(
                db,
                svc.clock,
                client_id=user.client_id,
                processor_ref=m.processor_ref,
                type=m.type,
                brand=m.brand,
                last4=m.last4,
                exp_month=m.exp_month,
                exp_year=m.exp_year,
                bank_name=getattr(m, "bank_name", None),
                actor=user.email,
            )
    except saved_methods.MethodError as exc:
        return jsonify(status="failed", message=str(exc)), 400
    kind = "ach" if saved.type == "us_bank_account" else "card"
    label = method_name(kind, brand=saved.brand, last4=saved.last4, bank_name=saved.bank_name)
    flash(f"Saved {label}.", "info")
    return jsonify(status="saved", redirect=url_for("portal.payment_methods"))


def make_default() -> Any:
    _require_payer()
    svc, user = services(), portal_user()
    try:
        with svc.store.write() as db:
            saved_methods.set_default(
                db,
                svc.clock,
                client_id=user.client_id,
                processor_ref=request.form.get("method", ""),
                actor=user.email,
            )
    except saved_methods.MethodError:
        abort(404)
    flash("Default payment method changed.", "info")
    return redirect(url_for("portal.payment_methods"))


def remove() -> Any:
    _require_payer()
    svc, user = services(), portal_user()
    ref = request.form.get("method", "")
    try:
        with svc.store.write() as db:
            used_by_autopay = saved_methods.remove_method(
                db, svc.clock, client_id=user.client_id, processor_ref=ref, actor=user.email
            )
    except saved_methods.MethodError:
        abort(404)
    if used_by_autopay:
        from app.web.autopay_views import turn_off

        turn_off(reason="its payment method was removed")
        flash(
            "Removed. Autopay used it, so autopay is now off: choose another method to turn it on again.",
            "info",
        )
    else:
        flash("Payment method removed.", "info")
    return redirect(url_for("portal.payment_methods"))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/payment-methods", "payment_methods", methods_page)
    bp.add_url_rule("/payment-methods/save", "save_method", save_method, methods=["POST"])
    bp.add_url_rule("/payment-methods/default", "default_method", make_default, methods=["POST"])
    bp.add_url_rule("/payment-methods/remove", "remove_method", remove, methods=["POST"])
