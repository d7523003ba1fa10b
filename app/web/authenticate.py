"""The page an "action required" email links to: the person confirms a payment their bank held
for 3-D Secure (an autopay charge made while they were away), with Stripe.js.

Signed-in only, like every portal page; the link names the payment by its public token. When
the payment belongs to another of the person's companies, the session switches to it (the link
came from that company's email). The PaymentIntent's client secret is read from Stripe when the
page is shown and never stored.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, redirect, render_template, session, url_for

from app.web import queries, services
from app.web.session import portal_user
from sync.base import ConnectorError

log = logging.getLogger(__name__)


def authenticate_page(token: str) -> Any:
    svc, user = services(), portal_user()
    owner = svc.store.scalar("SELECT client_id FROM payments WHERE token = ?", (token,))
    if owner is None or owner not in {c.client_id for c in user.clients}:
        abort(404)
    if owner != user.client_id:
        session["client_id"] = owner
        return redirect(url_for("portal.authenticate", token=token))
    row = queries.find_payment(svc.store, owner, token)
    if row is None:
        abort(404)
    pay = svc.store.one("SELECT processor_ref, payment_method_ref FROM payments WHERE id = ?", (row["id"],))
    if row["status"] != "requires_action" or not pay["processor_ref"] or not user.can_pay:
        return redirect(url_for("portal.payment", token=token))
    try:
        state = svc.gateway.retrieve_intent(pay["processor_ref"])
    except ConnectorError as exc:
        log.warning("authenticate %s: Stripe unreachable: %s", token, exc)
        return render_template(
            "message.html",
            title="Card payments are unavailable",
            message="We could not reach the card processor. Please try again in a minute.",
            link=url_for("portal.payment", token=token),
            link_text="Back to the payment",
        ), 503
    return render_template(
        "authenticate.html",
        p=row,
        lines=queries.payment_lines(svc.store, owner, row["id"]),
        client_secret=state.client_secret,
        payment_method=pay["payment_method_ref"] or "",
        publishable_key=svc.config.stripe.publishable_key,
        js_url=svc.config.stripe.js_url,
    )


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/payments/<token>/authenticate", "authenticate", authenticate_page)
