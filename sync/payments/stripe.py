"""Stripe through the official library: customers, SetupIntents, PaymentIntents, payouts, webhooks.

Only calls a person is waiting for happen on the request path (creating a SetupIntent or a
PaymentIntent, reading one back after Stripe.js returns). The PaymentIntent parameters are kept
to the set that both Stripe and the local test double accept (see README, "Stripe double").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import stripe

from sync.base import ConnectorError

if TYPE_CHECKING:
    from app.config import StripeSettings

API_VERSION = "2026-10-28.endive"
AUTHENTICATION_REQUIRED = "authentication_required"


class BadSignature(Exception):
    """A webhook whose Stripe-Signature does not verify (or is missing or too old)."""


class BadEvent(BadSignature):
    """A correctly signed body that is not a Stripe event (no id, type or data.object with an id).

    A BadSignature, so the webhook answers 400 for it as for a forgery: no retry can fix it."""


@dataclass(frozen=True)
class IntentState:
    """What Stripe says about one PaymentIntent, reduced to what the ledger needs."""

    intent_id: str
    status: str  # Stripe's own: succeeded, processing, requires_action, requires_payment_method, ...
    amount_minor: int
    currency: str  # upper-case ISO code
    metadata: Mapping[str, str] = field(default_factory=dict)
    client_secret: str | None = None
    charge_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class CardDeclined(Exception):
    """Stripe refused the charge at once; `intent_id` is the PaymentIntent left behind, if known."""

    message: str
    code: str | None = None
    intent_id: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True)
class RefundState:
    refund_id: str
    status: str  # succeeded | pending | requires_action | failed | canceled
    amount_minor: int
    currency: str
    charge_id: str | None
    intent_id: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DisputeState:
    dispute_id: str
    charge_id: str | None
    intent_id: str | None
    amount_minor: int
    currency: str
    status: str  # warning_needs_response, needs_response, under_review, won, lost, ...
    reason: str


@dataclass(frozen=True)
class PayoutState:
    """A Stripe payout: one line on the bank statement."""

    payout_id: str
    status: str  # pending, in_transit, paid, failed, canceled
    amount_minor: int
    currency: str  # upper-case ISO code
    arrival_date: int  # unix time
    created: int
    reconciled: bool  # Stripe has linked every balance transaction to it (reconciliation_status)
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class BalanceItem:
    """One balance transaction: what moved in the Stripe balance, its fee and what it came from."""

    txn_id: str
    type: str  # charge, payment, refund, adjustment, payout, ...
    source: str | None  # ch_/py_, re_, dp_/du_, po_ ...
    amount_minor: int  # signed gross
    fee_minor: int
    net_minor: int
    currency: str  # upper-case ISO code


def _id_of(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else value.get("id")


def _payout(obj: Any) -> PayoutState:
    p = _plain(obj)
    return PayoutState(
        payout_id=p["id"],
        status=p["status"],
        amount_minor=int(p["amount"]),
        currency=str(p["currency"]).upper(),
        arrival_date=int(p["arrival_date"]),
        created=int(p["created"]),
        reconciled=p.get("reconciliation_status", "completed") == "completed",
        failure_code=p.get("failure_code"),
        failure_message=p.get("failure_message"),
    )


def _refund(obj: Any) -> RefundState:
    r = _plain(obj)
    charge = r.get("charge")
    return RefundState(
        refund_id=r["id"],
        status=r.get("status") or "succeeded",
        amount_minor=int(r["amount"]),
        currency=str(r["currency"]).upper(),
        charge_id=charge if isinstance(charge, str) or charge is None else charge.get("id"),
        intent_id=r.get("payment_intent") if isinstance(r.get("payment_intent"), str) else None,
        metadata=dict(r.get("metadata") or {}),
    )


@dataclass(frozen=True)
class SavedMethod:
    processor_ref: str
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    bank_name: str | None = None
    routing_number: str | None = None
    customer: str | None = None  # the Stripe customer it is attached to, None for a fresh one


def _plain(obj: Any) -> Any:
    """StripeObjects are not dicts in this library version; work on plain data."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def _state(pi: Any) -> IntentState:
    pi = _plain(pi)
    latest = pi.get("latest_charge")
    # The double returns latest_charge expanded; Stripe returns an id unless asked to expand.
    charge_id = latest if isinstance(latest, str) or latest is None else latest.get("id")
    err = pi.get("last_payment_error") or {}
    status = pi["status"]
    if status == "requires_payment_method" and err.get("code") == AUTHENTICATION_REQUIRED:
        # NOTE: off-session, Stripe fails a charge that needs 3-D Secure with authentication_required
        # and leaves the PaymentIntent for the customer to confirm on-session: for us that is
        # "requires_action", not a decline to retry (https://docs.stripe.com/payments/save-and-reuse).
        status = "requires_action"
    return IntentState(
        intent_id=pi["id"],
        status=status,
        amount_minor=int(pi["amount"]),
        currency=str(pi["currency"]).upper(),
        metadata=dict(pi.get("metadata") or {}),
        client_secret=pi.get("client_secret"),
        charge_id=charge_id,
        failure_code=err.get("code"),
        failure_message=err.get("message"),
    )


class StripeGateway:
    """One Stripe account. Raises ConnectorError (retryable for network and 5xx/429 failures)."""

    kind = "stripe"

    def __init__(self, settings: StripeSettings) -> None:
        self.settings = settings
        self._client = stripe.StripeClient(
            str(settings.secret_key),
            base_addresses={"api": settings.api_base},
            max_network_retries=0,
            stripe_version=API_VERSION,
            http_client=stripe.RequestsClient(timeout=settings.timeout_seconds),
        )

    @property
    def supports_ach(self) -> bool:
        """True when the account takes US bank debits (`stripe.ach_enabled`: ACH Direct Debit is
        activated at Stripe); the portal offers bank accounts only then."""
        return bool(getattr(self.settings, "ach_enabled", False))

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.CardError as exc:
            err = exc.error
            intent = getattr(err, "payment_intent", None) if err else None
            # Stripe sends the PaymentIntent expanded (a StripeObject), the double sends none.
            if isinstance(intent, Mapping):
                intent_id = intent.get("id")
            elif isinstance(intent, str) or intent is None:
                intent_id = intent
            else:
                intent_id = getattr(intent, "id", None)
            if intent_id is None and err is not None and getattr(err, "charge", None):
                # The double reports only the charge; its PaymentIntent is one lookup away.
                try:
                    charge = self._client.v1.charges.retrieve(err.charge)
                    intent_id = _plain(charge).get("payment_intent")
                except stripe.StripeError:
                    intent_id = None
            raise CardDeclined(exc.user_message or str(exc), getattr(err, "code", None), intent_id,
                               getattr(err, "decline_code", None)) from exc
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ConnectorError(
                f"Stripe unreachable or busy: {exc.user_message or exc}", retryable=True
            ) from exc
        except stripe.AuthenticationError as exc:
            raise ConnectorError(
                f"Stripe rejected the API key: {exc.user_message or exc}", retryable=False, status=401
            ) from exc
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            raise ConnectorError(
                f"Stripe error {status}: {exc.user_message or exc}",
                retryable=status >= 500 or status == 0,
                status=status or None,
            ) from exc

    def ensure_customer(
        self, *, customer_id: str | None, name: str, email: str | None, client_token: str, key: str
    ) -> str:
        """The Stripe customer of a client: `customer_id` if set, else a new one. Returns its id."""
        if customer_id:
            return customer_id
        params: dict[str, Any] = {"name": name, "metadata": {"cashloop_client": client_token}}
        if email:
            params["email"] = email
        cus = self._call(self._client.v1.customers.create, params=params, options={"idempotency_key": key})
        return str(cus["id"])

    def create_setup_intent(
        self, customer_id: str, *, key: str, method_type: str = "card"
    ) -> tuple[str, str]:
        """A SetupIntent for a card the person is about to type, or (`method_type` "us_bank_account")
        a bank account Stripe.js collects with its mandate; returns (id, client_secret)."""
        if method_type not in ("card", "us_bank_account"):
            raise ValueError(f"unknown payment method type {method_type!r}")
        si = self._call(
            self._client.v1.setup_intents.create,
            params={"customer": customer_id, "payment_method_types": [method_type], "usage": "off_session"},
            options={"idempotency_key": key},
        )
        return str(si["id"]), str(si["client_secret"])

    def create_intent(
        self,
        *,
        amount_minor: int,
        currency: str,
        customer_id: str,
        payment_method: str,
        metadata: Mapping[str, str],
        key: str,
        off_session: bool = False,
        method_type: str = "card",
    ) -> IntentState:
        """Create and confirm a PaymentIntent for `payment_method` (`method_type` card or us_bank_account).

        Not idempotent at the double (it ignores Idempotency-Key); callers guard with their own
        claim on the payment row before calling. Raises CardDeclined (code authentication_required
        when an off-session charge needs the customer) or ConnectorError.
        """
        params: dict[str, Any] = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "customer": customer_id,
            "payment_method": payment_method,
            "payment_method_types": [method_type],
            "confirm": True,
            "metadata": dict(metadata),
        }
        if off_session:
            params["off_session"] = True
        pi = self._call(
            self._client.v1.payment_intents.create, params=params, options={"idempotency_key": key}
        )
        return _state(pi)

    def retrieve_intent(self, intent_id: str) -> IntentState:
        """The PaymentIntent as Stripe has it now (webhooks and returns re-read, never trust)."""
        return _state(self._call(self._client.v1.payment_intents.retrieve, intent_id))

    def cancel_intent(self, intent_id: str, *, key: str) -> IntentState:
        """Cancel a PaymentIntent that has not succeeded (e.g. one waiting for 3-D Secure). Raises
        ConnectorError (400 when it can no longer be cancelled, such as after it succeeded)."""
        pi = self._call(self._client.v1.payment_intents.cancel, intent_id, options={"idempotency_key": key})
        return _state(pi)

    def find_intent(self, *, payment_token: str, limit: int = 100) -> IntentState | None:
        """Look for a PaymentIntent carrying our payment token in its metadata (crash recovery)."""
        page = self._call(self._client.v1.payment_intents.list, params={"limit": limit})
        for obj in page.auto_paging_iter():
            pi = _plain(obj)
            if (pi.get("metadata") or {}).get("payment_token") == payment_token:
                return _state(pi)
        return None

    def succeeded_intents(self, since: datetime, until: datetime) -> Iterator[IntentState]:
        """PaymentIntents created in [since, until) that have succeeded (the tie-out's Stripe side)."""
        params = {"limit": 100, "created": {"gte": int(since.timestamp()), "lt": int(until.timestamp())}}
        page = self._call(self._client.v1.payment_intents.list, params=params)
        for obj in page.auto_paging_iter():
            pi = _plain(obj)
            if pi["status"] == "succeeded":
                yield _state(pi)

    def payment_method(self, pm_id: str) -> SavedMethod:
        pm = _plain(self._call(self._client.v1.payment_methods.retrieve, pm_id))
        card = pm.get("card") or {}
        bank = pm.get("us_bank_account") or {}
        return SavedMethod(
            processor_ref=pm["id"],
            type=pm.get("type") or "card",
            brand=card.get("brand"),
            last4=card.get("last4") or bank.get("last4"),
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
            bank_name=bank.get("bank_name"),
            routing_number=bank.get("routing_number"),
            customer=_id_of(pm.get("customer")),
        )

    def method_customer(self, pm_id: str) -> str | None:
        """The customer a PaymentMethod is attached to at Stripe, or None (a card just collected)."""
        pm = _plain(self._call(self._client.v1.payment_methods.retrieve, pm_id))
        return _id_of(pm.get("customer"))

    def attach_method(self, pm_id: str, customer_id: str) -> None:
        """Attach a method to a customer unless it already is (the double does not do it on setup)."""
        pm = _plain(self._call(self._client.v1.payment_methods.retrieve, pm_id))
        if not pm.get("customer"):
            self._call(self._client.v1.payment_methods.attach, pm_id, params={"customer": customer_id},
                       options={"idempotency_key": f"attach-{pm_id}-{customer_id}"})

    def detach_method(self, pm_id: str) -> bool:
        """Detach a removed method from its customer. Safe to repeat: a method that is no longer
        attached (or that Stripe no longer has) is left alone. Returns True when this call detached it."""
        try:
            pm = _plain(self._call(self._client.v1.payment_methods.retrieve, pm_id))
        except ConnectorError as exc:
            if exc.status == 404:
                return False
            raise
        if not pm.get("customer"):
            return False
        try:
            self._call(self._client.v1.payment_methods.detach, pm_id,
                       options={"idempotency_key": f"detach-{pm_id}"})
        except ConnectorError as exc:
            # Detached by someone else in between: Stripe refuses with 400, and the goal is met.
            if exc.status == 400 and not _plain(
                self._call(self._client.v1.payment_methods.retrieve, pm_id)
            ).get("customer"):
                return False
            raise
        return True

    def create_refund(self, *, intent_id: str, amount_minor: int, metadata: Mapping[str, str],
                      key: str) -> RefundState:
        """Refund `amount_minor` of a PaymentIntent. Idempotent at Stripe by `key`; raises ConnectorError
        (status 400 when Stripe refuses it, e.g. more than is left to refund)."""
        refund = self._call(
            self._client.v1.refunds.create,
            params={"payment_intent": intent_id, "amount": amount_minor, "metadata": dict(metadata)},
            options={"idempotency_key": key},
        )
        return _refund(refund)

    def list_refunds(
        self, *, intent_id: str | None = None, charge_id: str | None = None
    ) -> list[RefundState]:
        """Every refund of a PaymentIntent or a charge, as Stripe has them now."""
        params: dict[str, Any] = {"limit": 100}
        if charge_id:
            params["charge"] = charge_id
        else:
            params["payment_intent"] = intent_id
        page = self._call(self._client.v1.refunds.list, params=params)
        return [_refund(r) for r in page.auto_paging_iter()]

    def retrieve_refund(self, refund_id: str) -> RefundState:
        """A refund as Stripe has it now (a payout may hold one Cashloop was never told of)."""
        return _refund(self._call(self._client.v1.refunds.retrieve, refund_id))

    def charge_intent(self, charge_id: str) -> str | None:
        """The PaymentIntent a charge belongs to."""
        return _plain(self._call(self._client.v1.charges.retrieve, charge_id)).get("payment_intent")

    def retrieve_dispute(self, dispute_id: str) -> DisputeState:
        """A dispute as Stripe has it now (webhooks re-read it)."""
        d = _plain(self._call(self._client.v1.disputes.retrieve, dispute_id))
        charge = d.get("charge")
        intent = d.get("payment_intent")
        return DisputeState(
            dispute_id=d["id"],
            charge_id=charge if isinstance(charge, str) else (charge or {}).get("id"),
            intent_id=intent if isinstance(intent, str) or intent is None else intent.get("id"),
            amount_minor=int(d["amount"]),
            currency=str(d["currency"]).upper(),
            status=d["status"],
            reason=d.get("reason") or "",
        )

    def retrieve_payout(self, payout_id: str) -> PayoutState:
        """A payout as Stripe has it now (webhooks re-read it)."""
        return _payout(self._call(self._client.v1.payouts.retrieve, payout_id))

    def list_payouts(self, *, created_since: int, status: str | None = None) -> list[PayoutState]:
        """Payouts created at or after `created_since` (unix time), newest first, every page."""
        params: dict[str, Any] = {"limit": 100, "created": {"gte": created_since}}
        if status:
            params["status"] = status
        page = self._call(self._client.v1.payouts.list, params=params)
        return [_payout(p) for p in self._call(lambda: list(page.auto_paging_iter()))]

    def payout_transactions(self, payout_id: str, *, page_size: int = 100) -> list[BalanceItem]:
        """Every balance transaction paid out by `payout_id` (the payout's own one included)."""
        page = self._call(
            self._client.v1.balance_transactions.list, params={"payout": payout_id, "limit": page_size}
        )
        items = []
        for obj in self._call(lambda: list(page.auto_paging_iter())):
            t = _plain(obj)
            items.append(
                BalanceItem(
                    txn_id=t["id"],
                    type=t["type"],
                    source=_id_of(t.get("source")),
                    amount_minor=int(t["amount"]),
                    fee_minor=int(t["fee"]),
                    net_minor=int(t["net"]),
                    currency=str(t["currency"]).upper(),
                )
            )
        return items

    def parse_webhook(self, body: bytes, signature: str | None) -> dict[str, Any]:
        """Verify `Stripe-Signature` over the raw body; returns the event as a dict."""
        if not signature:
            raise BadSignature("missing Stripe-Signature header")
        try:
            event = stripe.Webhook.construct_event(body, signature, str(self.settings.webhook_secret))
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(str(exc)) from exc
        except ValueError as exc:
            raise BadSignature(f"body is not a JSON event: {exc}") from exc
        except Exception as exc:  # a JSON array, number or null: the library cannot build an Event
            raise BadEvent(f"body is not a Stripe event: {type(exc).__name__}") from exc
        data = event.to_dict() if hasattr(event, "to_dict") else event
        if not isinstance(data, dict):
            raise BadEvent("body is not a Stripe event")
        inner = data.get("data")
        obj = inner.get("object") if isinstance(inner, dict) else None
        named = isinstance(data.get("id"), str) and isinstance(data.get("type"), str)
        if not (named and isinstance(obj, dict) and isinstance(obj.get("id"), str)):
            raise BadEvent("body is not a Stripe event (id, type and data.object.id are required)")
        return data
