"""Charging a saved card or bank account (off-session): autopay and "pay with my saved account".

One charge passes these steps, each a fault point (app.core.faults) the crash tests kill at:
1. a pending payment (and, for autopay, its attempt) is committed before anything else;
2. `claim_for_submission` flips it to submitted: only the caller that wins calls Stripe;
3. Stripe is called with the payment's derived idempotency key;
4. its answer (or its decline) is recorded in one transaction with all its consequences.

After a crash or a timeout a submitted payment is `resolve`d by asking Stripe (PaymentIntent
metadata carries our token). If Stripe has it, its state is applied. If Stripe has none, the
create call never reached Stripe, and it is sent again with the same idempotency key (which
production Stripe would answer with the first result, had it arrived) while Stripe still keeps
keys (about 24 h); after that the payment fails and autopay's retry schedule takes over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core import faults, payments
from app.core.autopay_attempts import mark_submitted
from app.core.clock import from_db
from app.core.payments import PayItem, PaymentRequestError
from app.entity_services import for_client
from app.services import Services
from sync.base import ConnectorError
from sync.payments.stripe import AUTHENTICATION_REQUIRED, CardDeclined, IntentState

log = logging.getLogger(__name__)
KEY_LIFETIME_SECONDS = 23 * 3600
DEFINITE_FAILURES = (400, 402, 404)  # Stripe refused the request: nothing was charged


@dataclass
class StripeTime:
    """Time spent waiting on Stripe, for the job report and the benchmark."""

    seconds: float = 0.0
    calls: int = 0

    def timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def _record(services: Services, pay: Any, state: IntentState, failure: str | None = None) -> str:
    with services.store.write():
        payments.attach_intent(services.store, services.clock, pay["id"], state.intent_id)
        outcome = payments.record_intent(
            services.store,
            services.clock,
            payment_id=pay["id"],
            intent_id=state.intent_id,
            processor_status=state.status,
            amount_minor=state.amount_minor,
            currency=state.currency,
            failure=failure or state.failure_message or state.failure_code,
            base_url=services.config.cashloop.base_url,
            timezone=services.config.tz,
            charge_ref=state.charge_id,
        )
        faults.point("before_commit")
    return outcome.status


def _record_failure(services: Services, pay: Any, intent_id: str | None, message: str) -> str:
    with services.store.write():
        if intent_id:
            payments.attach_intent(services.store, services.clock, pay["id"], intent_id)
        outcome = payments.record_intent(
            services.store,
            services.clock,
            payment_id=pay["id"],
            intent_id=intent_id or f"declined-{pay['token']}",
            processor_status="requires_payment_method",
            amount_minor=pay["amount_minor"],
            currency=pay["currency"],
            failure=message,
            base_url=services.config.cashloop.base_url,
            timezone=services.config.tz,
        )
        faults.point("before_commit")
    return outcome.status


def _call_stripe(services: Services, pay: Any, timing: StripeTime) -> str:
    """Create and confirm the PaymentIntent of a claimed payment and record the answer."""
    services = for_client(services, pay["client_id"])  # charged through the client's entity's account
    method = services.store.one(
        "SELECT type FROM payment_methods WHERE processor_ref = ?", (pay["payment_method_ref"],)
    )
    customer = services.store.scalar(
        "SELECT stripe_customer_id FROM clients WHERE id = ?", (pay["client_id"],)
    )
    numbers = [
        r["number"]
        for r in services.store.all(
            "SELECT i.number FROM allocations a JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = "
            "? "
            "ORDER BY i.number",
            (pay["id"],),
        )
    ]
    metadata = {
        "payment_token": pay["token"],
        "invoices": ",".join(numbers)[:450],
        "initiated_by": pay["initiated_by"].split(":")[0],
    }
    faults.point("before_stripe")
    try:
        state = timing.timed(
            services.gateway.create_intent,
            amount_minor=pay["amount_minor"],
            currency=pay["currency"],
            customer_id=customer or "",
            payment_method=pay["payment_method_ref"],
            metadata=metadata,
            key=pay["idem_key"],
            off_session=True,
            method_type=method["type"] if method else "card",
        )
    except CardDeclined as exc:
        faults.point("after_stripe")
        if exc.code == AUTHENTICATION_REQUIRED and exc.intent_id:
            # The bank wants the customer: the PaymentIntent waits for them (email with a link).
            return _record(services, pay, timing.timed(services.gateway.retrieve_intent, exc.intent_id))
        return _record_failure(services, pay, exc.intent_id, exc.message)
    except ConnectorError as exc:
        if exc.status in DEFINITE_FAILURES:
            return _record_failure(services, pay, None, str(exc))
        # Stripe may or may not have it: stay submitted; `resolve` asks Stripe later.
        log.warning("payment %s: Stripe call failed, left for recovery: %s", pay["id"], exc)
        return "submitted"
    faults.point("after_stripe")
    return _record(services, pay, state)


def submit(services: Services, payment_id: int, *, timing: StripeTime | None = None) -> str:
    """Claim a pending payment and charge its saved method once; returns the payment's status.

    A payment someone else claimed is not charged here (returns its current status).
    """
    timing = timing or StripeTime()
    faults.point("before_claim")
    with services.store.write() as db:
        claimed = payments.claim_for_submission(services.store, services.clock, payment_id)
        if claimed:
            mark_submitted(db, services.clock, payment_id)
    pay = services.store.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
    if not claimed:
        return str(pay["status"])
    return _call_stripe(services, pay, timing)


def resolve(
    services: Services, payment_id: int, *, min_age_seconds: float = 0, timing: StripeTime | None = None
) -> str:
    """Settle a payment that a crash or timeout left unfinished, by asking Stripe; see the module doc."""
    timing = timing or StripeTime()
    pay = services.store.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
    if pay is None or pay["status"] in payments.FINAL:
        return pay["status"] if pay else "unknown"
    services = for_client(services, pay["client_id"])
    if pay["status"] == "pending":
        return submit(services, payment_id, timing=timing)
    if (services.clock.utc_now() - from_db(pay["updated_at"])).total_seconds() < min_age_seconds:
        return str(pay["status"])
    if pay["processor_ref"] and not pay["processor_ref"].startswith("declined-"):
        return _record(services, pay, timing.timed(services.gateway.retrieve_intent, pay["processor_ref"]))
    found = timing.timed(services.gateway.find_intent, payment_token=pay["token"])
    if found is not None:
        return _record(services, pay, found)
    if (services.clock.utc_now() - from_db(pay["created_at"])).total_seconds() < KEY_LIFETIME_SECONDS:
        log.info("payment %s never reached Stripe; sending it with its own idempotency key", pay["id"])
        return _call_stripe(services, pay, timing)
    return _record_failure(services, pay, None, "the payment never reached the processor")


def give_up_waiting(
    services: Services, payment_id: int, *, reason: str, timing: StripeTime | None = None
) -> str:
    """Cancel a PaymentIntent still waiting for 3-D Secure and fail its payment with `reason`.

    If the customer completed it meanwhile, Stripe refuses the cancel and its state is applied
    instead (a success is never thrown away)."""
    timing = timing or StripeTime()
    pay = services.store.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
    if pay["status"] != "requires_action" or not pay["processor_ref"]:
        return str(pay["status"])
    services = for_client(services, pay["client_id"])
    try:
        timing.timed(services.gateway.cancel_intent, pay["processor_ref"], key=f"cancel-{pay['idem_key']}")
    except ConnectorError as exc:
        if exc.retryable:
            raise
        return _record(services, pay, timing.timed(services.gateway.retrieve_intent, pay["processor_ref"]))
    return _record_failure(services, pay, pay["processor_ref"], reason)


def pay_with_saved_method(
    services: Services,
    *,
    client_id: int,
    items: Sequence[tuple[int, int]],
    payment_method_ref: str,
    initiated_by: str,
    surcharge_minor: int = 0,
) -> tuple[str, str]:
    """Pay (invoice id, amount_minor) pairs with one of the client's saved methods now.

    For the portal's "pay with my saved bank account" (ACH goes to processing for days) and
    tests. Returns (payment token, status). Raises PaymentRequestError (nothing charged).
    """
    method = services.store.one(
        "SELECT * FROM payment_methods WHERE processor_ref = ? AND client_id = ? AND removed_at IS NULL",
        (payment_method_ref, client_id),
    )
    if method is None:
        raise PaymentRequestError("That payment method is not available for this company.")
    plan = payments.start_payment(
        services.store,
        services.clock,
        client_id=client_id,
        items=[PayItem(i, a) for i, a in items],
        initiated_by=initiated_by,
        allow_partial=services.config.portal.allow_partial_payments,
        minimum_partial=services.config.portal.minimum_partial_payment,
        method="ach" if method["type"] == "us_bank_account" else "card",
        surcharge_minor=surcharge_minor,
        payment_method_ref=payment_method_ref,
        approval_threshold=services.config.portal.approval_threshold,
    )
    return plan.token, submit(services, plan.payment_id)
