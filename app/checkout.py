"""The card checkout: core payments wired to the Stripe gateway for the portal's requests.

The portal card flow is two steps, which both Stripe and the local double support:
1. the browser collects the card with the Card Element and confirms a SetupIntent, which gives
   a PaymentMethod id without the card ever touching this server;
2. the server creates and confirms the PaymentIntent for exactly the allocated amount; if the
   bank asks for 3-D Secure, the browser finishes it with confirmCardPayment.
Every Stripe call here is one the person is waiting for; everything else goes to the outbox.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from app.core import payments
from app.core.audit import audit
from app.core.clock import from_db, to_db
from app.core.keys import derive_key
from app.core.payments import PayItem, PaymentRequestError
from app.entity_services import for_client, owns_client
from app.services import Services
from sync.base import ConnectorError
from sync.payments.stripe import CardDeclined, IntentState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedMethodView:
    processor_ref: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    is_default: bool
    type: str = "card"
    bank_name: str | None = None


@dataclass(frozen=True)
class Checkout:
    payment_token: str
    amount_minor: int
    currency: str
    setup_client_secret: str
    publishable_key: str
    js_url: str
    saved_methods: list[SavedMethodView] = field(default_factory=list)
    lines: list[tuple[str, int]] = field(default_factory=list)
    status: str = "pending"
    method: str = "card"  # card | ach: what the pay page chose; the SetupIntent is of that type
    surcharge_minor: int = 0  # included in amount_minor, never allocated


@dataclass(frozen=True)
class ConfirmResult:
    status: str  # succeeded | processing | requires_action | failed | pending
    client_secret: str | None
    message: str
    redirect: str


# Stripe's payment method type for each payments.method the portal takes.
METHOD_TYPES = {"card": "card", "ach": "us_bank_account"}


def stripe_customer(services: Services, client_id: int, login_email: str | None) -> str:
    """The client's Stripe customer id, created at Stripe on first use (a call the person waits for).

    Raises PaymentRequestError (no such client) or ConnectorError (Stripe unreachable)."""
    services = for_client(services, client_id)
    store = services.store
    client = store.one("SELECT id, token, name, stripe_customer_id FROM clients WHERE id = ?", (client_id,))
    if client is None:
        raise PaymentRequestError("This company is not available.")
    if client["stripe_customer_id"]:
        return str(client["stripe_customer_id"])
    email = login_email or store.scalar(
        "SELECT email FROM contacts WHERE client_id = ? AND role = 'billing' AND email IS NOT NULL LIMIT 1",
        (client_id,),
    )
    customer_id = services.gateway.ensure_customer(
        customer_id=None,
        name=client["name"],
        email=email,
        client_token=client["token"],
        key=derive_key("stripe-customer", client=client["token"]),
    )
    with store.write() as db:
        # First writer wins; a concurrent checkout that made a second customer leaves it unused.
        db.execute(
            "UPDATE clients SET stripe_customer_id = ? WHERE id = ? AND stripe_customer_id IS NULL",
            (customer_id, client_id),
        )
        return str(
            db.execute("SELECT stripe_customer_id FROM clients WHERE id = ?", (client_id,)).fetchone()[0]
        )


_customer = stripe_customer  # the older private name


def _saved_methods(services: Services, client_id: int, method: str = "card") -> list[SavedMethodView]:
    rows = services.store.all(
        "SELECT processor_ref, type, brand, last4, exp_month, exp_year, bank_name, is_default "
        "FROM payment_methods WHERE client_id = ? AND removed_at IS NULL AND type = ? "
        "ORDER BY is_default DESC, id",
        (client_id, METHOD_TYPES.get(method, "card")),
    )
    return [
        SavedMethodView(
            r["processor_ref"], r["brand"], r["last4"], r["exp_month"], r["exp_year"], bool(r["is_default"]),
            r["type"], r["bank_name"],
        )
        for r in rows
    ]


def setup_intent(
    services: Services, *, client_id: int, login_email: str | None, method: str, key: str
) -> str:
    """A SetupIntent's client secret for collecting a new card or bank account (`method` card or ach)
    in the browser. Raises PaymentRequestError or ConnectorError."""
    services = for_client(services, client_id)
    if method not in METHOD_TYPES:
        raise PaymentRequestError("Choose how to pay: card or bank account.")
    customer_id = stripe_customer(services, client_id, login_email)
    _, secret = services.gateway.create_setup_intent(customer_id, key=key, method_type=METHOD_TYPES[method])
    return secret


def begin_checkout(
    services: Services,
    *,
    client_id: int,
    login_email: str,
    items: list[tuple[str, int]],
    method: str = "card",
    for_children: bool = False,
) -> Checkout:
    """Reserve nothing yet: write a pending payment for (invoice token, amount) pairs and a SetupIntent.

    `method` is card or ach; a card payment carries the card surcharge of app.core.surcharge (the
    rule autopay uses), worked out here from the amounts, never taken from the page.
    With `for_children` the invoices may also be those of the companies below the client (one
    payment of the parent for its children; see app.core.client_tree).
    Raises PaymentRequestError (message for the person) or ConnectorError (Stripe unreachable).
    """
    from app.core import client_tree, surcharge

    if method not in METHOD_TYPES:
        raise PaymentRequestError("Choose how to pay: card or bank account.")
    services = for_client(services, client_id)
    store, cfg = services.store, services.config
    tokens = [t for t, _ in items]
    owners = client_tree.payable_family(store.db, client_id) if for_children else [client_id]
    rows = (
        store.all(
            f"SELECT id, token FROM invoices WHERE client_id IN ({','.join('?' * len(owners))}) AND token IN "
            f"({','.join('?' * len(tokens))})",
            (*owners, *tokens),
        )
        if tokens
        else []
    )
    by_token = {r["token"]: r["id"] for r in rows}
    if len(by_token) != len(set(tokens)):
        raise PaymentRequestError("One of the invoices is not available for payment.")
    currency = store.scalar(
        "SELECT currency FROM invoices WHERE id = ?", (by_token[tokens[0]],)
    ) if tokens else cfg.entity.currency
    surcharge_minor = surcharge.surcharge_for(
        cfg.surcharge, amount_minor=sum(a for _, a in items), currency=currency, method=method,
        region=surcharge.client_region(store.db, client_id),
    )
    plan = payments.start_payment(
        store,
        services.clock,
        client_id=client_id,
        items=[PayItem(by_token[t], amount) for t, amount in items],
        initiated_by=f"login:{login_email}",
        allow_partial=cfg.portal.allow_partial_payments,
        minimum_partial=cfg.portal.minimum_partial_payment,
        method=method,
        surcharge_minor=surcharge_minor,
        approval_threshold=cfg.portal.approval_threshold,
        for_children=for_children,
    )
    # The checkout page (a GET the browser is sent to next) makes the SetupIntent.
    return checkout_view(services, client_id=client_id, payment_token=plan.token, login_email=login_email,
                         with_setup=False)


def checkout_view(services: Services, *, client_id: int, payment_token: str, login_email: str,
                  with_setup: bool = True) -> Checkout:
    """The checkout page's data for an existing pending payment (a reload makes a fresh SetupIntent)."""
    services = for_client(services, client_id)
    pay = _payment(services, client_id, payment_token)
    method = pay["method"] if pay["method"] in METHOD_TYPES else "card"
    setup_secret = ""
    if with_setup and pay["status"] == "pending":
        setup_secret = setup_intent(
            services, client_id=client_id, login_email=login_email, method=method,
            key=derive_key("setup", payment=pay["id"], at=services.clock.utc_now().isoformat()),
        )
    lines = _lines(services, pay["id"])
    return Checkout(
        payment_token=payment_token,
        amount_minor=pay["amount_minor"],
        currency=pay["currency"],
        setup_client_secret=setup_secret,
        publishable_key=services.config.stripe.publishable_key,
        js_url=services.config.stripe.js_url,
        saved_methods=_saved_methods(services, client_id, method),
        lines=lines,
        status=pay["status"],
        method=method,
        surcharge_minor=int(pay["surcharge_minor"] or 0),
    )


def _payment(services: Services, client_id: int, payment_token: str) -> Any:
    pay = services.store.one(
        "SELECT * FROM payments WHERE token = ? AND client_id = ?", (payment_token, client_id)
    )
    if pay is None:
        raise PaymentRequestError("This payment is not available.")
    return pay


def _apply(services: Services, pay: Any, state: IntentState) -> payments.Outcome:
    return payments.record_intent(
        services.store,
        services.clock,
        payment_id=pay["id"],
        intent_id=state.intent_id,
        processor_status=state.status,
        amount_minor=state.amount_minor,
        currency=state.currency,
        failure=state.failure_message or state.failure_code,
        base_url=services.config.cashloop.base_url,
        timezone=services.config.tz,
        charge_ref=state.charge_id,
    )


def _result(status: str, token: str, *, secret: str | None = None, message: str = "") -> ConfirmResult:
    return ConfirmResult(status, secret, message, f"/payments/{token}")


def confirm_checkout(
    services: Services, *, client_id: int, payment_token: str, payment_method: str, save: bool
) -> ConfirmResult:
    """Charge a pending payment once with `payment_method` (a new card's or a saved one's id).

    Only the request that claims the payment calls Stripe; a repeat gets the current status.
    """
    services = for_client(services, client_id)
    store, clock = services.store, services.clock
    pay = _payment(services, client_id, payment_token)
    if not isinstance(payment_method, str) or not payment_method.startswith("pm_"):
        raise PaymentRequestError("No card or bank account was given.")
    saved = store.one("SELECT client_id, removed_at FROM payment_methods WHERE processor_ref = ?",
                      (payment_method,))
    if saved is not None and (saved["client_id"] != client_id or saved["removed_at"]):
        # Another company's saved card, or one removed: refused before anything reaches Stripe.
        raise PaymentRequestError("That card is not available for this company.")
    # A card attached at Stripe to another customer is someone else's, whatever Cashloop knows.
    try:
        described = services.gateway.payment_method(payment_method)
    except ConnectorError as exc:
        if exc.retryable:
            raise
        raise PaymentRequestError("That card could not be used. Please enter it again.") from exc
    owner = described.customer
    if owner is not None and owner != _customer(services, client_id, None):
        raise PaymentRequestError("That card is not available for this company.")
    if described.type != METHOD_TYPES.get(pay["method"], "card"):
        # The amount (and its surcharge) was worked out for the method chosen on the pay page.
        raise PaymentRequestError(
            "This payment was set up for a bank account; choose one, or start again to pay by card."
            if pay["method"] == "ach" else
            "This payment was set up for a card; choose one, or start again to pay by bank account."
        )
    if not payments.claim_for_submission(store, clock, pay["id"]):
        current = store.one("SELECT status, failure_reason FROM payments WHERE id = ?", (pay["id"],))
        return _result(
            current["status"],
            payment_token,
            message=current["failure_reason"] or "This payment was already submitted.",
        )
    customer_id = _customer(services, client_id, None)
    # A bank account is always kept: its mandate covers this payment and later ones, and a
    # processing debit must stay traceable to a method the company can see and remove.
    save = save or (pay["method"] == "ach" and saved is None)
    numbers = [n for n, _ in _lines(services, pay["id"])]
    metadata = {"payment_token": payment_token, "invoices": ",".join(numbers)[:450]}
    try:
        if save:
            services.gateway.attach_method(payment_method, customer_id)
        state = services.gateway.create_intent(
            amount_minor=pay["amount_minor"],
            currency=pay["currency"],
            customer_id=customer_id,
            payment_method=payment_method,
            metadata=metadata,
            key=pay["idem_key"],
            method_type=described.type,
        )
    except CardDeclined as exc:
        if exc.intent_id:
            payments.attach_intent(store, clock, pay["id"], exc.intent_id)
        payments.record_intent(
            store,
            clock,
            payment_id=pay["id"],
            intent_id=exc.intent_id or f"declined-{pay['token']}",
            processor_status="requires_payment_method",
            amount_minor=pay["amount_minor"],
            currency=pay["currency"],
            failure=exc.message,
            base_url=services.config.cashloop.base_url,
            timezone=services.config.tz,
        )
        return _result("failed", payment_token, message=exc.message)
    except ConnectorError as exc:
        # Stripe may or may not have the intent: stay "submitted"; the recovery job asks Stripe.
        log.warning("payment %s: Stripe call failed, left for recovery: %s", pay["id"], exc)
        return _result(
            "submitted",
            payment_token,
            message="We could not confirm the payment yet. Please check your payments page shortly.",
        )
    payments.attach_intent(store, clock, pay["id"], state.intent_id)
    if save:
        _remember_method(services, client_id, payment_method)
    outcome = _apply(services, pay, state)
    if state.status == "requires_action":
        return _result("requires_action", payment_token, secret=state.client_secret)
    return _result(outcome.status, payment_token, message=outcome.message)


def _lines(services: Services, payment_id: int) -> list[tuple[str, int]]:
    return [
        (r["number"], r["amount_minor"])
        for r in services.store.all(
            "SELECT i.number, a.amount_minor FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
            "WHERE a.payment_id = ? ORDER BY i.number",
            (payment_id,),
        )
    ]


def _remember_method(services: Services, client_id: int, pm_id: str) -> None:
    try:
        m = services.gateway.payment_method(pm_id)
    except ConnectorError as exc:
        log.warning("could not read back payment method %s: %s", pm_id, exc)
        return
    with services.store.write() as db:
        has_default = db.execute(
            "SELECT 1 FROM payment_methods WHERE client_id = ? AND is_default = 1 AND removed_at IS NULL",
            (client_id,),
        ).fetchone()
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "bank_name, routing_number, is_default, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (processor_ref) DO NOTHING",
            (
                client_id,
                m.processor_ref,
                m.type,
                m.brand,
                m.last4,
                m.exp_month,
                m.exp_year,
                m.bank_name,
                m.routing_number,
                0 if has_default else 1,
                to_db(services.clock.utc_now()),
            ),
        )
        audit(
            db,
            services.clock,
            actor=f"client:{client_id}",
            action="payment_method.saved",
            target=m.processor_ref,
            detail={"type": m.type, "brand": m.brand, "bank_name": m.bank_name, "last4": m.last4},
        )


def refresh_payment(services: Services, *, client_id: int, payment_token: str) -> str:
    """Re-read an unfinished payment's PaymentIntent (a return from 3-D Secure); returns the status."""
    services = for_client(services, client_id)
    pay = _payment(services, client_id, payment_token)
    if (
        pay["status"] in payments.FINAL
        or not pay["processor_ref"]
        or pay["processor_ref"].startswith("declined-")
    ):
        return str(pay["status"])
    try:
        state = services.gateway.retrieve_intent(pay["processor_ref"])
    except ConnectorError as exc:
        log.warning("payment %s: could not refresh from Stripe: %s", pay["id"], exc)
        return str(pay["status"])
    return _apply(services, pay, state).status


def handle_stripe_event(services: Services, body: bytes, signature: str | None) -> str:
    """Verify, store once, and apply a Stripe webhook. Raises BadSignature. Safe to replay.

    The event's own copy of the object is not trusted (events arrive late, twice and out of
    order): the PaymentIntent is read back from Stripe and its current state applied.
    """
    event = services.gateway.parse_webhook(body, signature)
    store, clock = services.store, services.clock
    with store.write() as db:
        db.execute(
            "INSERT INTO stripe_events (id, type, received_at, payload_json) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (event["id"], event["type"], to_db(clock.utc_now()), json.dumps(event)),
        )
        seen = db.execute("SELECT processed_at FROM stripe_events WHERE id = ?", (event["id"],)).fetchone()
    if seen["processed_at"]:
        return "duplicate"
    note = None
    try:
        result = _dispatch(services, event)
    except ConnectorError as exc:
        if exc.retryable:
            with store.write() as db:
                db.execute("UPDATE stripe_events SET error = ? WHERE id = ?", (str(exc)[:1000], event["id"]))
            raise
        # Stripe itself refuses (404: it has no such object): a redelivery can never succeed, so the
        # event is acknowledged, with the reason kept on its row.
        log.warning("Stripe event %s names what Stripe does not have: %s", event["id"], exc)
        result = note = f"ignored: {exc}"
    except Exception as exc:
        with store.write() as db:
            db.execute("UPDATE stripe_events SET error = ? WHERE id = ?", (str(exc)[:1000], event["id"]))
        raise
    with store.write() as db:
        db.execute(
            "UPDATE stripe_events SET processed_at = ?, error = ? WHERE id = ?",
            (to_db(clock.utc_now()), note, event["id"]),
        )
    return result


def _dispatch(services: Services, event: dict[str, Any]) -> str:
    from app import stripe_events

    if stripe_events.handles(event["type"]):
        return stripe_events.dispatch(services, event)
    if not event["type"].startswith("payment_intent."):
        return "ignored"
    obj = event["data"]["object"]
    token = (obj.get("metadata") or {}).get("payment_token")
    pay = services.store.one("SELECT * FROM payments WHERE processor_ref = ?", (obj["id"],))
    if pay is None and token:
        pay = services.store.one("SELECT * FROM payments WHERE token = ?", (token,))
    if pay is None or not owns_client(services, pay["client_id"]):
        return "not ours"  # another entity's payment is never touched through this account
    state = services.gateway.retrieve_intent(obj["id"])
    return _apply(services, pay, state).status


def recover_submitted(services: Services, *, older_than_seconds: int = 120, limit: int = 50) -> int:
    """Resolve payments left "submitted" by a crash or timeout by asking Stripe, never by charging.

    A PaymentIntent found by our token is applied; none found after the grace period means the
    create call never reached Stripe, and the payment fails so the person can pay again.
    """
    now = services.clock.utc_now()
    # Autopay's own payments are resolved by app.jobs.run_autopay (which may re-send them with the
    # same idempotency key), never failed here.
    rows = services.store.all(
        "SELECT * FROM payments WHERE status IN ('submitted', 'requires_action', 'processing') "
        "AND initiated_by <> 'autopay' ORDER BY id LIMIT ?",
        (limit,),
    )
    resolved = 0
    base = services
    for pay in rows:
        if (now - from_db(pay["updated_at"])).total_seconds() < older_than_seconds:
            continue
        services = for_client(base, pay["client_id"])  # asked through the payment's own Stripe account
        try:
            state = (
                services.gateway.retrieve_intent(pay["processor_ref"])
                if pay["processor_ref"]
                else services.gateway.find_intent(payment_token=pay["token"])
            )
        except ConnectorError as exc:
            log.warning("recovery of payment %s postponed: %s", pay["id"], exc)
            continue
        if state is None:
            if pay["status"] == "submitted":
                payments.record_intent(
                    services.store,
                    services.clock,
                    payment_id=pay["id"],
                    intent_id=f"none-{pay['token']}",
                    processor_status="requires_payment_method",
                    amount_minor=pay["amount_minor"],
                    currency=pay["currency"],
                    failure="the payment never reached the processor",
                    base_url=services.config.cashloop.base_url,
                    timezone=services.config.tz,
                )
                resolved += 1
            continue
        if _apply(services, pay, state).changed:
            resolved += 1
    return resolved
