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
- A log of every `POST /v1/...` with its Idempotency-Key and API key (`requests`).
- Stripe.js for bank accounts, which localstripe's fake Stripe.js lacks: `collectBankAccountForSetup`
  / `confirmUsBankAccountSetup` and `collectBankAccountForPayment` / `confirmUsBankAccountPayment`,
  shaped as Stripe documents them. Instead of Financial Connections, a small in-page dialog offers
  Stripe's test bank accounts (routing 110000000, the accounts of ACH_OUTCOMES); the chosen one becomes
  a `us_bank_account` PaymentMethod on the intent (`requires_confirmation`, or
  `requires_payment_method` when the person cancels), and confirming records a mandate (`mandate`) and
  answers `succeeded` (SetupIntent) or `processing` (PaymentIntent). The JS calls private routes
  under `/_config/ext/js/`, checked with the publishable key and the intent's client secret.
- Fees and payouts: each charge's balance transaction carries Stripe's fee (`fees`: cards 2.9% + 30
  minor units, ACH 0.8% capped at 500, by default) in `fee` and `fee_details`; a refund's has none
  (Stripe keeps the charge's fee); a dispute withdraws the amount plus a 1500 dispute fee (given
  back, with the amount, when it is won). `GET /v1/balance_transactions` filters by `payout`,
  `type`, `source`, `currency` and `created`; `GET /v1/payouts` by `status`, `created` and
  `arrival_date`, newest first. `payout` pays out, in any currency, everything available and not
  paid out yet as one payout (amount = the sum of the nets, status paid, its own `payout` balance
  transaction, `payout.created` and `payout.paid` delivered like other events); with
  `status="failed"` the payout fails (`payout.failed`) and its funds stay for the next one.

Control endpoints live under `/_config/ext/` (localstripe does not authenticate `/_config/`).
The parent-side helper is `StripeExt`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CONFIG = {"idempotency": False, "offsession_auth_error": False}
# Seconds after which a processing bank debit settles by itself with its account's outcome, as in
# Stripe's test mode; 0 = only when a test calls `settle` (the tests' default; the demo sets it).
TIMING = {"ach_settle_after_seconds": 0}
# Stripe's standard US pricing: cards 2.9% + 30, ACH 0.8% capped at 5.00, 15.00 per dispute.
FEE_DEFAULTS = {"card_percent": "2.9", "card_fixed": "30", "ach_percent": "0.8", "ach_cap": "500",
                "dispute_fee": "1500"}
FEES = dict(FEE_DEFAULTS)
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


# The labels the fake bank dialog shows for each test account.
ACH_LABELS = {
    "000123456789": "Succeeds",
    "000111111113": "Returned: account closed",
    "000111111116": "Returned: no account",
    "000222222227": "Returned: insufficient funds",
    "000333333335": "Returned: debit not authorized",
}
TEST_ROUTING = "110000000"
MANDATES: dict[str, dict[str, Any]] = {}

BANK_JS = r"""
// tests/stripe_ext.py: Stripe.js bank-account calls (collect, then confirm), as Stripe documents them.
(function () {
  const ACCOUNTS = __ACCOUNTS__;
  const ROUTING = "__ROUTING__";
  const base = LOCALSTRIPE_BASE_API;

  function pickAccount() {
    return new Promise(resolve => {
      const box = document.createElement("div");
      box.id = "ls-bank-dialog";
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-modal", "true");
      box.setAttribute("aria-labelledby", "ls-bank-title");
      Object.assign(box.style, {position: "fixed", top: "20%", left: "50%", width: "340px",
        margin: "0 0 0 -170px", padding: "12px 20px", border: "3px solid #ccc", background: "#fff",
        color: "#000", zIndex: 10000});
      const title = document.createElement("h2");
      title.id = "ls-bank-title";
      title.textContent = "Test bank (routing " + ROUTING + ")";
      box.appendChild(title);
      ACCOUNTS.forEach((acct, i) => {
        const row = document.createElement("div");
        const radio = document.createElement("input");
        radio.type = "radio"; radio.name = "ls-bank-account"; radio.value = acct.number;
        radio.id = "ls-bank-" + acct.number; radio.checked = i === 0;
        const label = document.createElement("label");
        label.htmlFor = radio.id;
        label.textContent = acct.label + " (•••• " + acct.number.slice(-4) + ")";
        // Inline styles: the page's own stylesheet may make inputs full-width blocks.
        Object.assign(row.style, {display: "flex", alignItems: "center", gap: "8px", margin: "6px 0"});
        Object.assign(radio.style, {width: "auto", margin: "0", flex: "none"});
        row.appendChild(radio); row.appendChild(label); box.appendChild(row);
      });
      const link = document.createElement("button");
      link.type = "button"; link.id = "ls-bank-link"; link.textContent = "Link account";
      const cancel = document.createElement("button");
      cancel.type = "button"; cancel.id = "ls-bank-cancel"; cancel.textContent = "Cancel";
      Object.assign(link.style, {margin: "10px 8px 0 0"});
      Object.assign(cancel.style, {margin: "10px 0 0 0"});
      box.appendChild(link); box.appendChild(cancel);
      document.body.appendChild(box);
      link.addEventListener("click", () => {
        const chosen = box.querySelector("input[name=ls-bank-account]:checked");
        box.remove();
        resolve(chosen ? chosen.value : null);
      });
      cancel.addEventListener("click", () => { box.remove(); resolve(null); });
      link.focus();
    });
  }

  async function post(path, body) {
    const response = await fetch(base + path, {method: "POST", body: JSON.stringify(body)});
    const data = await response.json().catch(() => ({}));
    if (response.status !== 200 || data.error) {
      return {error: data.error || {message: "HTTP " + response.status}};
    }
    return {object: data};
  }

  function intentPath(clientSecret) {
    const m = /^((seti|pi)_\w+?)_secret_/.exec(clientSecret || "");
    if (!m) { return null; }
    return (m[2] === "seti" ? "setup_intents/" : "payment_intents/") + m[1];
  }

  function wrap(kind, result) {
    if (result.error) { return {error: result.error}; }
    const out = {};
    out[kind] = result.object;
    return out;
  }

  async function collect(apiKey, kind, options) {
    const opts = options || {};
    const params = opts.params || {};
    const path = intentPath(opts.clientSecret);
    if (!path) { return {error: {type: "validation_error", message: "Invalid clientSecret."}}; }
    if (params.payment_method_type !== "us_bank_account") {
      return {error: {type: "validation_error",
                      message: "params.payment_method_type must be us_bank_account."}};
    }
    const pmData = params.payment_method_data || {};
    const billing = pmData.billing_details || {};
    if (!billing.name) {
      return {error: {type: "validation_error",
                      message: "params.payment_method_data.billing_details.name is required."}};
    }
    const account = await pickAccount();
    return wrap(kind, await post("/_config/ext/js/" + path + "/collect_bank_account", {
      key: apiKey, client_secret: opts.clientSecret, account_number: account,
      routing_number: ROUTING, billing_details: billing,
      user_agent: navigator.userAgent,
    }));
  }

  async function confirm(apiKey, kind, clientSecret) {
    const path = intentPath(clientSecret);
    if (!path) { return {error: {type: "validation_error", message: "Invalid clientSecret."}}; }
    return wrap(kind, await post("/_config/ext/js/" + path + "/confirm_bank_account", {
      key: apiKey, client_secret: clientSecret, user_agent: navigator.userAgent,
    }));
  }

  const original = Stripe;
  Stripe = (apiKey, options) => {
    const stripe = original(apiKey, options);
    stripe.collectBankAccountForSetup = o => collect(apiKey, "setupIntent", o);
    stripe.collectBankAccountForPayment = o => collect(apiKey, "paymentIntent", o);
    stripe.confirmUsBankAccountSetup = s => confirm(apiKey, "setupIntent", s);
    stripe.confirmUsBankAccountPayment = s => confirm(apiKey, "paymentIntent", s);
    return stripe;
  };
})();
"""


def bank_js() -> str:
    accounts = [{"number": n, "label": ACH_LABELS[n]} for n in ACH_OUTCOMES]
    return BANK_JS.replace("__ACCOUNTS__", json.dumps(accounts)).replace("__ROUTING__", TEST_ROUTING)


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
            if TIMING["ach_settle_after_seconds"] > 0:
                asyncio.get_event_loop().call_later(
                    TIMING["ach_settle_after_seconds"], settle_later, self.payment_intent
                )

    r.Charge._initialize_charge = initialize_charge

    def settle_later(intent_id: str) -> None:
        pi = r.store.get("payment_intent:" + intent_id)
        if pi is not None and pi.latest_charge is not None and pi.latest_charge.status == "pending":
            settle_intent(pi, {})
            r.store.dump_to_disk()

    def settle(request: Any) -> Any:
        pi = r.PaymentIntent._api_retrieve(request.match_info["id"])
        return server.json_response(settle_intent(pi, dict(urllib.parse.parse_qsl(request.query_string))))

    def settle_intent(pi: Any, params: dict[str, str]) -> Any:
        charge = pi.latest_charge
        if charge is None or charge.status != "pending":
            raise UserError(400, "This PaymentIntent is not processing a bank debit.")
        # After a restart of the double (its state reloaded) the callbacks are the intent's own.
        on_success, on_failure = _PENDING_ACH.pop(charge.id, (pi._on_success, pi._report_async_failure))
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
        return pi._export()

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

    def pi_list(cls: Any, url: Any, created: Any = None, limit: Any = None, starting_after: Any = None,
                **kwargs: Any) -> Any:
        # Stripe's `created` range filter on GET /v1/payment_intents (gt, gte, lt, lte), which
        # localstripe's list refuses as an unexpected parameter.
        li = r.StripeObject._api_list_all.__func__(cls, url, limit=limit, starting_after=starting_after,
                                                   **kwargs)
        if created is None:
            return li
        ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
               "lte": lambda a, b: a <= b}
        if not isinstance(created, dict) or not created or not set(created) <= set(ops):
            raise UserError(400, "created: expected created[gt|gte|lt|lte]=<unix time>")
        try:
            bounds = {op: int(value) for op, value in created.items()}
        except (TypeError, ValueError):
            raise UserError(400, "created: expected integer unix times") from None
        li._list = [pi for pi in li._list if all(ops[op](pi.created, v) for op, v in bounds.items())]
        return li

    r.PaymentIntent._api_list_all = classmethod(pi_list)
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

    # Picklable under this module's name, so a double keeping its state in a file (the demo) can
    # save and reload disputes.
    Dispute.__module__, Dispute.__qualname__ = __name__, "Dispute"
    globals()["Dispute"] = Dispute

    def funds(d: Any, sign: int, what: str) -> None:
        # Stripe takes the amount and its dispute fee when the funds go, and gives both back on a win.
        fee = -sign * int(Decimal(FEES["dispute_fee"]))
        txn = balance_txn(amount=sign * d.amount, currency=d.currency, description=what, fee=fee,
                          fee_description="Dispute fee", reporting_category="dispute", type="adjustment",
                          source=d.id)
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

    # -- fees, balance transactions and payouts ----------------------------------------------
    def fee_of(amount: int, method: str) -> int:
        # Stripe rounds a percentage fee to the nearest minor unit.
        if method == "us_bank_account":
            share = Decimal(amount) * Decimal(FEES["ach_percent"]) / 100
            return min(int(share.quantize(Decimal(1), ROUND_HALF_UP)), int(Decimal(FEES["ach_cap"])))
        share = Decimal(amount) * Decimal(FEES["card_percent"]) / 100
        return int(share.quantize(Decimal(1), ROUND_HALF_UP)) + int(Decimal(FEES["card_fixed"]))

    def fee_details(fee: int, currency: str, description: str) -> list[dict[str, Any]]:
        if not fee:
            return []
        return [{"amount": fee, "application": None, "currency": currency, "description": description,
                 "type": "stripe_fee"}]

    def balance_txn(*, amount: int, currency: str, description: str | None, fee: int,
                    fee_description: str, reporting_category: str, type: str, source: str) -> Any:
        # localstripe's constructor accepts charges and refunds only; the others are built here.
        txn = r.BalanceTransaction.__new__(r.BalanceTransaction)
        r.StripeObject.__init__(txn)
        txn.amount, txn.currency, txn.description = amount, currency, description
        txn.available_on, txn.exchange_rate, txn.fee = txn.created, None, fee
        txn.fee_details = fee_details(fee, currency, fee_description)
        txn.reporting_category, txn.source, txn.type = reporting_category, source, type
        txn.status = "available"
        return txn

    orig_txn_init = r.BalanceTransaction.__init__

    def txn_init(self: Any, **data: Any) -> None:
        orig_txn_init(self, **data)
        if self.type == "charge":
            charge = r.Charge._api_retrieve(self.source)
            pm = r.store.get("payment_method:" + str(charge.payment_method))
            self.fee = fee_of(self.amount, pm.type if pm is not None else "card")
            self.fee_details = fee_details(self.fee, self.currency, "Stripe processing fees")
        # A refund's balance transaction has no fee: Stripe keeps the original charge's fee.

    r.BalanceTransaction.__init__ = txn_init

    def txn_list(cls: Any, url: str, payout: Any = None, type: Any = None, source: Any = None,
                 currency: Any = None, created: Any = None, limit: Any = None, starting_after: Any = None,
                 ending_before: Any = None) -> Any:
        li = r.List(url, limit=limit, starting_after=starting_after)
        found = [v for k, v in r.store.items() if k.startswith("balance_transaction:")]
        li._list = [
            t for t in sorted(found, key=lambda t: t.created, reverse=True)  # newest first, as Stripe
            if (payout is None or getattr(t, "_ext_payout", None) == payout)
            and (type is None or t.type == type)
            and (source is None or t.source == source)
            and (currency is None or t.currency == currency)
            and in_range(t.created, created)
        ]
        return li

    r.BalanceTransaction._api_list_all = classmethod(txn_list)

    def in_range(value: int, spec: Any) -> bool:
        if spec is None:
            return True
        if not isinstance(spec, dict):
            return value == r.try_convert_to_int(spec)
        bounds = {k: r.try_convert_to_int(v) for k, v in spec.items()}
        if any(k not in ("gt", "gte", "lt", "lte") or not isinstance(v, int) for k, v in bounds.items()):
            raise UserError(400, "Invalid range: use gt, gte, lt or lte with integers")
        checks = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
        return all(checks[k](v) for k, v in bounds.items())

    def payout_list(cls: Any, url: str, status: Any = None, created: Any = None, arrival_date: Any = None,
                    destination: Any = None, limit: Any = None, starting_after: Any = None,
                    ending_before: Any = None) -> Any:
        li = r.List(url, limit=limit, starting_after=starting_after)
        found = [v for k, v in r.store.items() if k.startswith("payout:")]
        li._list = [
            p for p in sorted(found, key=lambda p: p.created, reverse=True)
            if (status is None or p.status == status)
            and (destination is None or p.destination == destination)
            and in_range(p.created, created)
            and in_range(p.arrival_date, arrival_date)
        ]
        return li

    r.Payout._api_list_all = classmethod(payout_list)

    def new_payout(amount: int, currency: str, status: str, failure_code: str | None) -> Any:
        # localstripe's Payout takes eur only and has no balance transactions: built here instead.
        po = r.Payout.__new__(r.Payout)
        r.StripeObject.__init__(po)
        po.amount, po.currency, po.status = amount, currency, status
        po.arrival_date, po.automatic, po.balance_transaction = po.created, True, None
        po.description, po.destination = "STRIPE PAYOUT", "ba_" + r.random_id(24)
        po.failure_balance_transaction, po.failure_code, po.failure_message = None, None, None
        po.metadata, po.method, po.original_payout, po.reversed_by = {}, "standard", None, None
        po.reconciliation_status, po.source_type = "completed", "card"
        po.statement_descriptor, po.type = None, "bank_account"
        if status == "failed":
            po.failure_code = failure_code or "account_closed"
            po.failure_message = "The bank account has been closed."
        return po

    async def pay_out(request: Any) -> Any:
        # Pays out every available balance transaction of the currency not paid out yet, as one payout.
        data = await server.get_post_data(request) or {}
        currency = str(data.get("currency", "usd")).lower()
        status = data.get("status", "paid")
        if status not in ("paid", "failed") or not re.fullmatch(r"[a-z]{3}", currency):
            raise UserError(400, "status is paid or failed; currency a 3-letter ISO code")
        due = [
            t for k, t in list(r.store.items())
            if k.startswith("balance_transaction:") and t.currency == currency and t.type != "payout"
            and t.status == "available" and getattr(t, "_ext_payout", None) is None
        ]
        amount = sum(t.net for t in due)
        if amount <= 0:
            raise UserError(400, f"No available {currency} balance to pay out ({amount}).",
                            {"code": "balance_insufficient"})
        po = new_payout(amount, currency, status, data.get("failure_code"))
        if status == "paid":
            # A failed payout leaves its funds in the balance for the next one.
            for t in due:
                t._ext_payout = po.id
            own = balance_txn(amount=-amount, currency=currency, description="STRIPE PAYOUT", fee=0,
                              fee_description="", reporting_category="payout", type="payout", source=po.id)
            own._ext_payout = po.id
            po.balance_transaction = own.id
        schedule_webhook(r.Event("payout.created", po))
        schedule_webhook(r.Event(f"payout.{status}", po))
        return server.json_response(po._export())

    async def set_fees(request: Any) -> Any:
        data = await server.get_post_data(request) or {}
        for k in FEES:
            if k in data:
                FEES[k] = str(Decimal(str(data[k])))
        return server.json_response(dict(FEES))

    router.add_post("/_config/ext/payouts", pay_out)
    router.add_post("/_config/ext/fees", set_fees)

    # -- idempotency and the request log -------------------------------------------------
    @web.middleware
    async def idempotency(request: Any, handler: Any) -> Any:
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return await handler(request)
        key = request.headers.get("Idempotency-Key")
        body = await request.read()
        # The API key each request used (Authorization: Bearer sk_...), so a test can tell accounts apart.
        api_key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        REQUESTS.append({"path": request.path, "key": key, "api_key": api_key, "at": time.time()})
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
        for k in TIMING:
            if k in data:
                TIMING[k] = max(0, int(data[k]))
        return server.json_response({**CONFIG, **TIMING})

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
        MANDATES.clear()
        CONFIG.update(idempotency=False, offsession_auth_error=False)
        TIMING.update(ach_settle_after_seconds=0)
        FEES.update(FEE_DEFAULTS)
        return server.json_response({})

    async def redeliver(request: Any) -> Any:
        event = r.Event._api_retrieve(request.match_info["id"])
        schedule_webhook(event)  # the same event id again, as Stripe retries a delivery
        return server.json_response({"id": event.id})

    # -- Stripe.js bank accounts (see BANK_JS) ---------------------------------------------
    @web.middleware
    async def serve_bank_js(request: Any, handler: Any) -> Any:
        resp = await handler(request)
        if request.method == "GET" and request.path == "/js.stripe.com/v3/" and resp.status == 200:
            return web.Response(text=resp.text + bank_js(), content_type="application/javascript")
        return resp

    app.middlewares.append(serve_bank_js)

    async def js_intent(request: Any) -> tuple[Any, dict[str, Any]]:
        data = await server.get_post_data(request, remove_auth=False) or {}
        if not str(data.get("key", "")).startswith("pk_"):
            raise UserError(401, "Unauthorized")
        cls = r.SetupIntent if request.match_info["kind"] == "setup_intents" else r.PaymentIntent
        obj = cls._api_retrieve(request.match_info["id"])
        if data.get("client_secret") != obj.client_secret:
            raise UserError(401, "Unauthorized")
        types = getattr(obj, "payment_method_types", None)  # localstripe's PaymentIntents keep none
        if types is not None and "us_bank_account" not in types:
            raise UserError(
                400,
                "The payment method type provided: us_bank_account is invalid. This payment method is "
                "available to the intent only if it is listed in its payment_method_types.",
                {"code": "payment_intent_invalid_parameter"},
            )
        return obj, data

    async def collect_bank_account(request: Any) -> Any:
        obj, data = await js_intent(request)
        if obj.status not in ("requires_payment_method", "requires_confirmation"):
            raise UserError(400, f"This intent's status is {obj.status}; a bank account cannot be added.")
        if not data.get("account_number"):
            # The person closed the dialog: Stripe answers with the intent as it was, no error.
            obj.payment_method = None
            if isinstance(obj, r.SetupIntent):
                obj.status = "requires_payment_method"
            return server.json_response(obj._export())
        pm = r.PaymentMethod(
            type="us_bank_account",
            billing_details=data.get("billing_details"),
            us_bank_account={
                "account_number": data["account_number"],
                "routing_number": data.get("routing_number"),
                "account_holder_type": "company",
            },
        )
        obj.payment_method = pm.id
        if isinstance(obj, r.SetupIntent):
            obj.status = "requires_confirmation"
        return server.json_response(obj._export())

    async def confirm_bank_account(request: Any) -> Any:
        obj, data = await js_intent(request)
        if obj.status != "requires_confirmation":
            raise UserError(400, f"This intent's status is {obj.status}; it cannot be confirmed.")
        mandate = "mandate_" + r.random_id(24)
        MANDATES[mandate] = {
            "intent": obj.id,
            "payment_method": obj.payment_method,
            "customer_acceptance": {
                "type": "online",
                "accepted_at": int(time.time()),
                "online": {"ip_address": request.remote, "user_agent": data.get("user_agent")},
            },
        }
        obj.mandate = mandate
        if isinstance(obj, r.SetupIntent):
            obj.status = "succeeded"
        else:
            obj._confirm(on_failure_now=obj._report_failure)  # the debit goes to processing
        return server.json_response(obj._export())

    def mandates(request: Any) -> Any:
        return server.json_response(MANDATES)

    router.add_post("/_config/ext/js/{kind:setup_intents|payment_intents}/{id}/collect_bank_account",
                    collect_bank_account)
    router.add_post("/_config/ext/js/{kind:setup_intents|payment_intents}/{id}/confirm_bank_account",
                    confirm_bank_account)
    router.add_get("/_config/ext/mandates", mandates)

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

    def configure(
        self,
        *,
        idempotency: bool = False,
        offsession_auth_error: bool = False,
        ach_settle_after_seconds: int = 0,
    ) -> None:
        self._post(
            "/_config/ext/config", idempotency=idempotency, offsession_auth_error=offsession_auth_error,
            ach_settle_after_seconds=ach_settle_after_seconds,
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

    def mandates(self) -> dict[str, dict[str, Any]]:
        """The mandates the fake Stripe.js recorded, by id (who accepted what, and when)."""
        with urllib.request.urlopen(self.api_base + "/_config/ext/mandates", timeout=10) as resp:
            return dict(json.loads(resp.read()))

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

    def fees(self, **model: Any) -> dict[str, str]:
        """Change the fee model: card_percent, card_fixed, ach_percent, ach_cap, dispute_fee."""
        return dict(self._post("/_config/ext/fees", **model))

    def payout(self, currency: str = "usd", *, status: str = "paid", failure_code: str | None = None
               ) -> dict[str, Any]:
        """Pay out everything available in `currency` as one payout; returns the payout object."""
        fields: dict[str, Any] = {"currency": currency, "status": status}
        if failure_code:
            fields["failure_code"] = failure_code
        return dict(self._post("/_config/ext/payouts", **fields))
