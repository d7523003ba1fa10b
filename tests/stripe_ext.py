"""A test-only extension of localstripe where it falls short of Stripe (see README, "Stripe double").

Loaded into the localstripe child process by `StripeDouble(extensions=("tests.stripe_ext",))`,
it adds what ../shared/specs/stripe-openapi-subset.json describes and localstripe lacks:

- `us_bank_account` PaymentMethods and SetupIntents (ACH). A PaymentIntent on one goes to
  `processing` (event `payment_intent.processing`) and stays there until the test settles it
  (`settle`): `succeeded`, or `requires_payment_method` with the bank's return code on the
  charge (`insufficient_funds`, `account_closed`, ...), as Stripe does days later.
- `charge.refunded` events on every refund, and Stripe's refusal of a refund larger than what
  is left (`amount_too_large`, `charge_already_refunded`) or of a disputed charge (`charge_disputed`).
- Disputes: `GET /v1/disputes/{id}`, `GET /v1/disputes`, `POST /v1/disputes/{id}/close`; a
  test opens one (`dispute`) and decides it (`close_dispute`), with the `charge.dispute.created`,
  `.funds_withdrawn`, `.closed` and `.funds_reinstated` events.
- Off-session 3-D Secure the way Stripe answers it (`offsession_auth_error`): a 402 card error
  with code `authentication_required` and the PaymentIntent left in `requires_payment_method`,
  instead of localstripe's silent `requires_action`. The customer completes it on-session
  (localstripe's Stripe.js modal) exactly as before.
- `decline_next`: the next N charges of a PaymentMethod decline (`card_declined`, decline code
  `insufficient_funds`), so "declined today, paid on the retry" uses one card like in life.
- Idempotency-Key (`idempotency`): same key and parameters replay the first response (header
  `Idempotent-Replayed: true`); the same key with other parameters is a 400 `idempotency_error`.
  Off by default, so tests prove Cashloop's own guard against double charges, not this one.
- A log of every `POST /v1/...` with its Idempotency-Key (`requests`).

Control endpoints live under `/_config/ext/` (localstripe does not authenticate `/_config/`).
The parent-side helper is `StripeExt`.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

CONFIG = {"idempotency": False, "offsession_auth_error": False}
REQUESTS: list[dict[str, Any]] = []
_IDEMPOTENT: dict[str, dict[str, Any]] = {}
_PENDING_ACH: dict[str, tuple[Any, Any]] = {}
_DECLINE_NEXT: dict[str, int] = {}
_FORCED_DECLINES: set[str] = set()

# Stripe's test bank accounts (routing 110000000) and what the bank answers for each.
ACH_OUTCOMES = {
    "000123456789": None,
    "000111111113": ("account_closed", "The customer's bank account has been closed."),
    "000111111116": ("no_account", "The customer's bank account could not be located."),
    "000222222227": (
        "insufficient_funds",
        "The customer's account has insufficient funds to cover this payment.",
    ),
    "000333333335": (
        "debit_not_authorized",
        "The customer notified their bank that this payment was unauthorized.",
    ),
}


# ------------------------------------------------------------------------------- child side


def install(app: Any) -> None:
    """Patch localstripe's resources and add routes; call before the app starts serving."""
    from aiohttp import web
    from localstripe import resources as r
    from localstripe import server
    from localstripe.errors import UserError
    from localstripe.webhooks import schedule_webhook

    def card_error(message: str, **contents: Any) -> UserError:
        err = UserError(402, message, contents)
        err.body["error"]["type"] = "card_error"
        return err

    # -- us_bank_account payment methods -------------------------------------------------
    orig_pm_init = r.PaymentMethod.__init__

    def pm_init(
        self: Any,
        type: Any = None,
        billing_details: Any = None,
        card: Any = None,
        sepa_debit: Any = None,
        metadata: Any = None,
        us_bank_account: Any = None,
        **kwargs: Any,
    ) -> None:
        if type != "us_bank_account":
            if us_bank_account is not None:
                raise UserError(400, "Received unknown parameter: us_bank_account")
            orig_pm_init(
                self,
                type=type,
                billing_details=billing_details,
                card=card,
                sepa_debit=sepa_debit,
                metadata=metadata,
                **kwargs,
            )
            return
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs))
        bank = us_bank_account if isinstance(us_bank_account, dict) else {}
        number, routing = str(bank.get("account_number", "")), str(bank.get("routing_number", ""))
        if not (4 <= len(number) <= 17 and number.isdigit()):
            raise UserError(400, "Invalid account number", {"param": "us_bank_account[account_number]"})
        if not (len(routing) == 9 and routing.isdigit()):
            raise UserError(
                400, "Routing number must have 9 digits", {"param": "us_bank_account[routing_number]"}
            )
        if not isinstance(billing_details, dict) or not billing_details.get("name"):
            raise UserError(
                400, "Missing required param: billing_details[name].", {"param": "billing_details[name]"}
            )
        r.StripeObject.__init__(self)
        self._bank_account_number = number
        self.type = "us_bank_account"
        self.billing_details = billing_details
        self.us_bank_account = {
            "account_holder_type": bank.get("account_holder_type", "company"),
            "account_type": bank.get("account_type", "checking"),
            "bank_name": "STRIPE TEST BANK",
            "financial_connections_account": None,
            "fingerprint": r.fingerprint(routing + number),
            "last4": number[-4:],
            "networks": {"preferred": "ach", "supported": ["ach"]},
            "routing_number": routing,
            "status_details": {},
        }
        self.customer = None
        self.metadata = metadata or {}

    r.PaymentMethod.__init__ = pm_init

    orig_pm_list = r.PaymentMethod._api_list_all.__func__

    def pm_list(
        cls: Any,
        url: str,
        customer: Any = None,
        type: Any = None,
        limit: Any = None,
        starting_after: Any = None,
    ) -> Any:
        if type != "us_bank_account":
            return orig_pm_list(
                cls, url, customer=customer, type=type, limit=limit, starting_after=starting_after
            )
        li = orig_pm_list(
            cls, url, customer=customer, type="card", limit=limit, starting_after=starting_after
        )
        li._list = [
            pm
            for pm in r.store.values()
            if isinstance(pm, r.PaymentMethod) and pm.customer == customer and pm.type == type
        ]
        return li

    r.PaymentMethod._api_list_all = classmethod(pm_list)

    orig_si_init = r.SetupIntent.__init__

    def si_init(
        self: Any,
        customer: Any = None,
        usage: Any = None,
        payment_method_types: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        types = payment_method_types
        wants_bank = isinstance(types, list) and "us_bank_account" in types
        checked = types
        if wants_bank:
            checked = [t for t in types if t != "us_bank_account"] or ["card"]
        orig_si_init(
            self, customer=customer, usage=usage, payment_method_types=checked, metadata=metadata, **kwargs
        )
        if wants_bank:
            self.payment_method_types = types

    r.SetupIntent.__init__ = si_init

    # -- decline the next N charges of a method ----------------------------------------
    orig_declined = r.PaymentMethod._charging_is_declined

    def charging_declined(self: Any) -> bool:
        left = _DECLINE_NEXT.get(self.id, 0)
        if left:
            _DECLINE_NEXT[self.id] = left - 1
            _FORCED_DECLINES.add(self.id)
            return True
        return bool(orig_declined(self))

    r.PaymentMethod._charging_is_declined = charging_declined

    orig_auth_failure = r.Charge._set_auth_failure

    def set_auth_failure(self: Any) -> None:
        orig_auth_failure(self)
        if self.payment_method in _FORCED_DECLINES:
            _FORCED_DECLINES.discard(self.payment_method)
            self.failure_message = "Your card has insufficient funds."
            self._decline_code = "insufficient_funds"

    r.Charge._set_auth_failure = set_auth_failure

    def raise_failure(self: Any) -> None:
        raise card_error(
            self.failure_message,
            code=self.failure_code,
            charge=self.id,
            decline_code=getattr(self, "_decline_code", None),
        )

    r.Charge._raise_failure = raise_failure

    # -- ACH: processing until settled ---------------------------------------------------
    orig_init_charge = r.Charge._initialize_charge

    def initialize_charge(
        self: Any, on_success: Any = None, on_failure_now: Any = None, on_failure_later: Any = None
    ) -> None:
        pm = r.store.get("payment_method:" + str(self.payment_method))
        if pm is None or pm.type != "us_bank_account":
            orig_init_charge(self, on_success, on_failure_now, on_failure_later)
            return
        self.status = "pending"
        _PENDING_ACH[self.id] = (on_success, on_failure_later)
        if self.payment_intent:
            schedule_webhook(
                r.Event("payment_intent.processing", r.PaymentIntent._api_retrieve(self.payment_intent))
            )

    r.Charge._initialize_charge = initialize_charge

    def settle(request: Any) -> Any:
        pi = r.PaymentIntent._api_retrieve(request.match_info["id"])
        charge = pi.latest_charge
        if charge is None or charge.id not in _PENDING_ACH:
            raise UserError(400, "This PaymentIntent is not processing a bank debit.")
        on_success, on_failure = _PENDING_ACH.pop(charge.id)
        params = dict(urllib.parse.parse_qsl(request.query_string))
        pm = r.store["payment_method:" + charge.payment_method]
        outcome = ACH_OUTCOMES.get(pm._bank_account_number)
        if params.get("outcome") == "succeeded":
            outcome = None
        elif params.get("outcome") == "failed":
            outcome = outcome or ACH_OUTCOMES["000222222227"]
            if params.get("failure_code"):
                outcome = (
                    params["failure_code"],
                    params.get("failure_message", "The bank returned the payment."),
                )
        if outcome is None:
            txn = r.BalanceTransaction(
                amount=charge.amount,
                currency=charge.currency,
                description=None,
                exchange_rate=1.0,
                reporting_category="charge",
                source=charge.id,
                type="charge",
            )
            charge.balance_transaction = txn.id
            charge.status = "succeeded"
            if on_success:
                on_success()  # payment_intent.succeeded and charge.succeeded
        else:
            charge.status = "failed"
            charge.failure_code, charge.failure_message = outcome
            if on_failure:
                on_failure()
            schedule_webhook(r.Event("charge.failed", charge))
        return server.json_response(pi._export())

    # -- charge.succeeded for cards too -------------------------------------------------
    orig_on_success = r.PaymentIntent._on_success

    def on_success(self: Any) -> None:
        orig_on_success(self)
        if self.latest_charge is not None:
            schedule_webhook(r.Event("charge.succeeded", self.latest_charge))

    r.PaymentIntent._on_success = on_success

    # -- authentication_required off-session ---------------------------------------------
    orig_pi_create = r.PaymentIntent._api_create.__func__

    def pi_create(cls: Any, confirm: Any = None, off_session: Any = None, **data: Any) -> Any:
        obj = orig_pi_create(cls, confirm=confirm, off_session=off_session, **data)
        if (
            CONFIG["offsession_auth_error"]
            and r.try_convert_to_bool(off_session) is True
            and obj.status == "requires_action"
        ):
            obj._ext_next_action, obj.next_action = obj.next_action, None
            obj._ext_auth_required = True
            schedule_webhook(r.Event("payment_intent.payment_failed", obj))
            pm = r.store.get("payment_method:" + str(obj.payment_method))
            raise card_error(
                "This payment requires authentication.",
                code="authentication_required",
                decline_code="authentication_required",
                payment_intent=obj._export(),
                payment_method=pm._export() if pm else None,
            )
        return obj

    r.PaymentIntent._api_create = classmethod(pi_create)
    orig_status = r.PaymentIntent.status.fget
    orig_last_error = r.PaymentIntent.last_payment_error.fget

    def status(self: Any) -> str:
        return "requires_payment_method" if getattr(self, "_ext_auth_required", False) else orig_status(self)

    def last_payment_error(self: Any) -> Any:
        if getattr(self, "_ext_auth_required", False):
            pm = r.store.get("payment_method:" + str(self.payment_method))
            return {
                "type": "card_error",
                "code": "authentication_required",
                "decline_code": "authentication_required",
                "message": "This payment requires authentication.",
                "payment_method": pm._export() if pm else None,
            }
        return orig_last_error(self)

    r.PaymentIntent.status = property(status)
    r.PaymentIntent.last_payment_error = property(last_payment_error)
    @web.middleware
    async def back_on_session(request: Any, handler: Any) -> Any:
        # The customer is back on-session: Stripe.js confirms with the method and runs 3-D Secure.
        # (localstripe bound its _authenticate route at import, so it is resumed here, before it.)
        match = re.fullmatch(r"/v1/payment_intents/(pi_\w+)/_authenticate", request.path)
        if request.method == "POST" and match:
            obj = r.store.get("payment_intent:" + match.group(1))
            data = await server.get_post_data(request) or {}
            if getattr(obj, "_ext_auth_required", False) and data.get("client_secret") == obj.client_secret:
                obj._ext_auth_required = False
                obj.next_action = obj._ext_next_action
        return await handler(request)

    app.middlewares.append(back_on_session)

    # -- refunds: Stripe's limits and charge.refunded ------------------------------------
    orig_refund_init = r.Refund.__init__

    def refund_init(
        self: Any,
        charge: Any = None,
        payment_intent: Any = None,
        amount: Any = None,
        metadata: Any = None,
        **kwargs: Any,
    ) -> None:
        ch = None
        if charge is not None and isinstance(charge, str):
            ch = r.Charge._api_retrieve(charge)
        elif isinstance(payment_intent, str):
            pi = r.PaymentIntent._api_retrieve(payment_intent)
            ch = pi.latest_charge
        if ch is not None and ch.status == "succeeded":
            left = ch.amount - ch.amount_refunded
            wanted = r.try_convert_to_int(amount)
            if any(isinstance(d, Dispute) and d.charge == ch.id for d in r.store.values()):
                raise UserError(
                    400,
                    f"Charge {ch.id} has been charged back; cannot issue a refund.",
                    {"code": "charge_disputed"},
                )
            if left <= 0:
                raise UserError(
                    400, f"Charge {ch.id} has already been refunded.", {"code": "charge_already_refunded"}
                )
            if isinstance(wanted, int) and wanted > left:
                raise UserError(
                    400,
                    f"Refund amount ({wanted}) is greater than unrefunded amount on charge ({left})",
                    {"code": "amount_too_large", "param": "amount"},
                )
        orig_refund_init(
            self, charge=charge, payment_intent=payment_intent, amount=amount, metadata=metadata, **kwargs
        )
        if ch is not None:
            schedule_webhook(r.Event("charge.refunded", ch))

    r.Refund.__init__ = refund_init
    r.Charge.disputed = property(
        lambda self: any(isinstance(d, Dispute) and d.charge == self.id for d in r.store.values())
    )

    # -- disputes ---------------------------------------------------------------------------
    class Dispute(r.StripeObject):
        object = "dispute"
        _id_prefix = "dp_"

        def __init__(self, charge: Any, amount: int, reason: str, inquiry: bool) -> None:
            super().__init__()
            self.amount = amount
            self.charge = charge.id
            self.payment_intent = charge.payment_intent
            self.currency = charge.currency
            self.reason = reason
            self.status = "warning_needs_response" if inquiry else "needs_response"
            self.balance_transactions: list[Any] = []
            self.evidence = {"customer_name": None, "uncategorized_text": None}
            self.evidence_details = {
                "due_by": self.created + 7 * 86400,
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            }
            self.is_charge_refundable = False
            self.metadata: dict[str, str] = {}
            self.payment_method_details = {
                "type": "card",
                "card": {"brand": "visa", "network_reason_code": "10.4"},
            }

        @classmethod
        def _api_list_all(
            cls,
            url: str,
            charge: Any = None,
            payment_intent: Any = None,
            limit: Any = None,
            starting_after: Any = None,
        ) -> Any:
            li = super()._api_list_all(url, limit=limit, starting_after=starting_after)
            li._list = [
                d
                for d in li._list
                if (charge is None or d.charge == charge)
                and (payment_intent is None or d.payment_intent == payment_intent)
            ]
            return li

    def funds(d: Any, sign: int, what: str) -> None:
        # localstripe's BalanceTransaction knows only charges and refunds: a plain record will do.
        txn = {"id": "txn_" + r.random_id(14), "object": "balance_transaction", "amount": sign * d.amount,
               "currency": d.currency, "description": what, "fee": 0, "net": sign * d.amount,
               "reporting_category": "dispute", "type": "adjustment", "source": d.id, "status": "available"}
        d.balance_transactions = [*d.balance_transactions, txn]

    async def open_dispute(request: Any) -> Any:
        ch = r.Charge._api_retrieve(request.match_info["id"])
        data = await server.get_post_data(request) or {}
        amount = r.try_convert_to_int(data.get("amount", ch.amount))
        inquiry = r.try_convert_to_bool(data.get("inquiry", False)) is True
        d = Dispute(ch, amount, data.get("reason", "fraudulent"), inquiry)
        schedule_webhook(r.Event("charge.dispute.created", d))
        if not inquiry:
            funds(d, -1, "Chargeback withdrawal")
            schedule_webhook(r.Event("charge.dispute.funds_withdrawn", d))
        return server.json_response(d._export())

    async def decide(request: Any) -> Any:
        d = Dispute._api_retrieve(request.match_info["id"])
        data = await server.get_post_data(request) or {}
        status = data.get("status", "lost")
        if status not in ("won", "lost", "under_review", "warning_closed"):
            raise UserError(400, "Bad request")
        d.status = status
        if status == "under_review":
            schedule_webhook(r.Event("charge.dispute.updated", d))
            return server.json_response(d._export())
        schedule_webhook(r.Event("charge.dispute.closed", d))
        if status == "won":
            funds(d, 1, "Chargeback reversal")
            schedule_webhook(r.Event("charge.dispute.funds_reinstated", d))
        return server.json_response(d._export())

    def close(**data: Any) -> Any:
        d = Dispute._api_retrieve(data["id"])
        if d.status not in ("needs_response", "warning_needs_response", "under_review"):
            raise UserError(400, "This dispute is already closed.")
        d.status = "lost"  # closing a dispute accepts it
        schedule_webhook(r.Event("charge.dispute.closed", d))
        return d

    router = app.router
    router.add_get("/v1/disputes/{id}", server.api_retrieve(Dispute, "/v1/disputes/{id}"))
    router.add_get("/v1/disputes", server.api_list_all(Dispute, "/v1/disputes"))
    router.add_post("/v1/disputes/{id}/close", server.api_extra(close, "/v1/disputes/{id}/close"))

    # -- idempotency and the request log -------------------------------------------------
    @web.middleware
    async def idempotency(request: Any, handler: Any) -> Any:
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return await handler(request)
        key = request.headers.get("Idempotency-Key")
        body = await request.read()
        REQUESTS.append({"path": request.path, "key": key, "at": time.time()})
        if not key or not CONFIG["idempotency"]:
            return await _respond(handler, request)
        fingerprint = [request.path, sorted(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))]
        seen = _IDEMPOTENT.get(key)
        if seen is not None:
            if seen["fingerprint"] != fingerprint:
                return server.json_response(
                    {
                        "error": {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                        }
                    },
                    status=400,
                )
            replay = web.Response(body=seen["body"], status=seen["status"], content_type="application/json")
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        resp = await _respond(handler, request)
        _IDEMPOTENT[key] = {"fingerprint": fingerprint, "status": resp.status, "body": resp.body}
        return resp

    async def _respond(handler: Any, request: Any) -> Any:
        try:
            return await handler(request)
        except UserError as e:
            return e.to_response()

    app.middlewares.insert(2, idempotency)  # inside auth, outside the handler's store save

    # -- control ----------------------------------------------------------------------------
    async def configure(request: Any) -> Any:
        data = await server.get_post_data(request) or {}
        for k in CONFIG:
            if k in data:
                CONFIG[k] = r.try_convert_to_bool(data[k]) is True
        return server.json_response(dict(CONFIG))

    async def decline_next(request: Any) -> Any:
        data = await server.get_post_data(request) or {}
        _DECLINE_NEXT[request.match_info["id"]] = int(data.get("count", 1))
        return server.json_response({"declines_left": _DECLINE_NEXT[request.match_info["id"]]})

    def requests_log(request: Any) -> Any:
        return server.json_response(REQUESTS)

    async def reset(request: Any) -> Any:
        REQUESTS.clear()
        _IDEMPOTENT.clear()
        _PENDING_ACH.clear()
        _DECLINE_NEXT.clear()
        CONFIG.update(idempotency=False, offsession_auth_error=False)
        return server.json_response({})

    async def redeliver(request: Any) -> Any:
        event = r.Event._api_retrieve(request.match_info["id"])
        schedule_webhook(event)  # the same event id again, as Stripe retries a delivery
        return server.json_response({"id": event.id})

    router.add_post("/_config/ext/config", configure)
    router.add_post("/_config/ext/reset", reset)
    router.add_get("/_config/ext/requests", requests_log)
    router.add_post("/_config/ext/payment_intents/{id}/settle", settle)
    router.add_post("/_config/ext/payment_methods/{id}/decline_next", decline_next)
    router.add_post("/_config/ext/charges/{id}/dispute", open_dispute)
    router.add_post("/_config/ext/disputes/{id}/decide", decide)
    router.add_post("/_config/ext/events/{id}/redeliver", redeliver)


# ------------------------------------------------------------------------------- parent side


class StripeExt:
    """Drive the extension of a running double: `StripeExt(double.api_base)`."""

    def __init__(self, api_base: str) -> None:
        self.api_base = api_base

    def _post(self, path: str, **fields: Any) -> Any:
        data = urllib.parse.urlencode(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in fields.items()}
        ).encode()
        req = urllib.request.Request(self.api_base + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            raise AssertionError(f"POST {path} -> {exc.code}: {body}") from exc

    def configure(self, *, idempotency: bool = False, offsession_auth_error: bool = False) -> None:
        self._post(
            "/_config/ext/config", idempotency=idempotency, offsession_auth_error=offsession_auth_error
        )

    def reset(self) -> None:
        self._post("/_config/ext/reset")

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.api_base + "/_config/ext/requests", timeout=10) as resp:
            return list(json.loads(resp.read()))

    def settle(
        self, intent_id: str, outcome: str = "succeeded", failure_code: str | None = None
    ) -> dict[str, Any]:
        """Finish a processing bank debit: "succeeded", or "failed" (a return, with its code)."""
        query = {"outcome": outcome, **({"failure_code": failure_code} if failure_code else {})}
        return dict(
            self._post(f"/_config/ext/payment_intents/{intent_id}/settle?{urllib.parse.urlencode(query)}")
        )

    def decline_next(self, payment_method: str, count: int = 1) -> None:
        self._post(f"/_config/ext/payment_methods/{payment_method}/decline_next", count=count)

    def dispute(
        self, charge_id: str, *, amount: int | None = None, reason: str = "fraudulent", inquiry: bool = False
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"reason": reason, "inquiry": inquiry}
        if amount is not None:
            fields["amount"] = amount
        return dict(self._post(f"/_config/ext/charges/{charge_id}/dispute", **fields))

    def decide_dispute(self, dispute_id: str, status: str) -> dict[str, Any]:
        return dict(self._post(f"/_config/ext/disputes/{dispute_id}/decide", status=status))

    def redeliver(self, event_id: str) -> None:
        self._post(f"/_config/ext/events/{event_id}/redeliver")
