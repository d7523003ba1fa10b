"""QuickBooks Online as the accounting sink: payments, refunds and disputes, Stripe payouts.

What lands in the books, per Cashloop event:
- A payment is one QBO Payment per customer (normally one) into the clearing account (Undeposited
  Funds by default), TotalAmt = what was applied to invoices, one Line per invoice with its
  allocated amount. The card surcharge is not on the Payment: it is booked at the payout.
- A payout is one Deposit into the bank account: a line per payment (linked to its Payment when
  the clearing account is Undeposited Funds, else drawn from the clearing account), a line per
  surcharge to the surcharge income account, a negative line per refund or dispute (positive for a
  won dispute) on the clearing account, and one negative line for Stripe's fees. It totals the
  payout to the cent, or nothing is sent.
- A refund or dispute is a JournalEntry: debit Accounts Receivable (per invoice, Entity = the
  customer) and the surcharge income, credit the clearing account by the amount that left. Then
  the original Payment is updated (sparse, with its SyncToken): its lines for those invoices shrink
  by the reversed amounts and a line linking the JournalEntry takes them up, so the Payment's
  TotalAmt (what the earlier Deposit took out of the clearing account) never changes, the
  invoices show the reopened balance, and the JournalEntry is settled. The payout's negative
  line on the clearing account then balances the JournalEntry's credit: nothing is counted twice.
  A won dispute books the mirror JournalEntry and re-applies the Payment to the invoices.
  (Editing the Payment's amount instead would break a Deposit that already took it, and a
  JournalEntry alone would leave the invoices looking paid.) A stale SyncToken is re-read and
  the update retried.

Every create carries a `requestid` derived from the outbox key and is preceded by a lookup for
what a lost response may have created (by customer and date, matched on the PrivateNote that
carries our payment token, payout id or reversal reference). A re-push gets a new key from the
core: after a bookkeeper deleted the first Payment, the lookup finds nothing and a new live one
is created; a requestid that QBO replays with a since-deleted Payment is refused, never mapped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from app.config import QuickBooksSettings
from app.core.clock import Clock
from sync.accounting.oauth import RefreshingTokens
from sync.accounting.qbo_lookup import QboInvoice, QboLookup, payment_note, token_of
from sync.accounting.qbo_reversal import ReversalBooker
from sync.accounting.qbo_wire import (
    REF_NUM_MAX,
    QboApi,
    decimal_of,
    is_not_found,
    literal,
    minor_of,
    request_id,
)
from sync.base import (
    ConnectorError,
    JournalDeposit,
    JournalPayment,
    JournalReversal,
    RemoteOpenInvoice,
    RemotePayment,
)
from sync.http import HttpClient


class QuickBooks:
    kind = "quickbooks"
    supports_tieout = True

    def __init__(self, settings: QuickBooksSettings, tokens: RefreshingTokens, http: HttpClient,
                 clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self.api = QboApi(settings, tokens, http)
        self.lookup = QboLookup(self.api, settings)
        self._reversals = ReversalBooker(self.api, self.lookup, settings)

    # -- payments --------------------------------------------------------------------------------

    def push_payment(self, payment: JournalPayment, *, key: str) -> str:
        """One QBO Payment per customer the allocations belong to; returns their ids joined by ","."""
        applied = sum(a for _, a in payment.allocations)
        if applied + payment.surcharge_minor != payment.amount_minor or not payment.allocations:
            raise ValueError(f"payment {payment.payment_token}: allocations and surcharge do not add up "
                             f"to the amount")
        currency = payment.currency
        by_customer: dict[str, list[tuple[QboInvoice, int]]] = {}
        taken: set[str] = set()
        for number, minor in payment.allocations:
            inv = self.lookup.invoice(number, minor, currency, payment.client_name, taken)
            taken.add(inv.id)
            by_customer.setdefault(inv.customer_id, []).append((inv, minor))
        clearing = self.lookup.account(self.settings.clearing_account, "clearing_account")
        ids = []
        for customer_id, lines in by_customer.items():
            existing = self.lookup.find_payment(customer_id, payment.received_on, payment.payment_token)
            if existing is not None:
                ids.append(str(existing["Id"]))
                continue
            body = {
                "CustomerRef": {"value": customer_id},
                "TotalAmt": decimal_of(sum(m for _, m in lines), currency),
                "TxnDate": payment.received_on.isoformat(),
                "PaymentRefNum": payment.payment_token[:REF_NUM_MAX],
                "PrivateNote": payment_note(payment.payment_token, payment.processor_ref, payment.method),
                "DepositToAccountRef": {"value": clearing.id},
                **self.lookup.currency_ref(currency),
                "Line": [{"Amount": decimal_of(m, currency),
                          "LinkedTxn": [{"TxnId": inv.id, "TxnType": "Invoice"}]} for inv, m in lines],
            }
            created = self.api.post("/payment", body, request_id=request_id(key, "payment", customer_id))
            ids.append(self._live(str(created["Payment"]["Id"]), payment.payment_token))
        return ",".join(ids)

    def _live(self, payment_id: str, token: str) -> str:
        # QBO replays a requestid's first response even when that Payment was deleted since: a
        # deleted id must never become our mapping.
        try:
            self.api.get(f"/payment/{payment_id}")
        except ConnectorError as exc:
            if is_not_found(exc):
                raise ConnectorError(f"QuickBooks answered payment {token} with Payment {payment_id}, "
                                     f"which was deleted: re-push it (a re-push uses a new key)",
                                     retryable=False) from exc
            raise
        return payment_id

    # -- reversals -------------------------------------------------------------------------------

    def push_reversal(self, reversal: JournalReversal, *, key: str) -> str:
        """A refund, dispute or won dispute: a JournalEntry plus the Payment re-applied (see above)."""
        return self._reversals.book(reversal, key=key)

    # -- payouts ---------------------------------------------------------------------------------

    def push_deposit(self, deposit: JournalDeposit, *, key: str) -> str:
        """One Deposit into the bank account whose total is the payout (see the module docstring)."""
        currency = deposit.currency
        if sum(line.fee_minor for line in deposit.lines) != deposit.fee_minor:
            raise ValueError(f"payout {deposit.payout_id}: the lines' fees do not add up to its fee_minor")
        marker = f"Stripe payout {deposit.payout_id}"
        for found in self.api.query("Deposit", f"TxnDate = {literal(deposit.arrival_on.isoformat())}"):
            if str(found.get("PrivateNote") or "").startswith(marker + " "):
                return str(found["Id"])
        bank = self.lookup.account(self.settings.bank_account, "bank_account")
        clearing = self.lookup.account(self.settings.clearing_account, "clearing_account")
        lines: list[tuple[int, dict[str, Any]]] = []

        def to_account(minor: int, account_id: str, description: str) -> None:
            lines.append((minor, {"Amount": decimal_of(minor, currency), "Description": description,
                                  "DetailType": "DepositLineDetail",
                                  "DepositLineDetail": {"AccountRef": {"value": account_id}}}))

        for line in deposit.lines:
            label = line.payment_token or line.processor_ref
            if line.kind == "payment":
                for pid, minor in self._deposited_payments(line.remote_payment_ref, label, currency,
                                                           line.amount_minor - line.surcharge_minor):
                    if clearing.undeposited_funds:
                        lines.append((minor, {"Amount": decimal_of(minor, currency), "LinkedTxn": [
                            {"TxnId": pid, "TxnType": "Payment", "TxnLineId": "0"}]}))
                    else:
                        to_account(minor, clearing.id, f"payment {label} (QuickBooks payment {pid})")
                if line.surcharge_minor:
                    surcharge = self.lookup.account(self.settings.surcharge_account, "surcharge_account")
                    to_account(line.surcharge_minor, surcharge.id, f"card surcharge on payment {label}")
            elif line.kind in ("refund", "dispute", "dispute_won"):
                what = {"refund": "refund", "dispute": "dispute", "dispute_won": "dispute won"}[line.kind]
                to_account(line.amount_minor, clearing.id,
                           f"{what} {line.reference or line.processor_ref} of payment {label}")
            else:  # a Stripe balance adjustment: Stripe's cost or credit, like its fees
                fees = self.lookup.account(self.settings.fee_account, "fee_account")
                to_account(line.amount_minor, fees.id, f"Stripe adjustment {line.processor_ref}")
        if deposit.fee_minor:
            fees = self.lookup.account(self.settings.fee_account, "fee_account")
            to_account(-deposit.fee_minor, fees.id, f"Stripe fees of payout {deposit.payout_id}")
        total = sum(m for m, _ in lines)
        if total != deposit.amount_minor:
            raise ValueError(f"payout {deposit.payout_id}: the deposit lines total "
                             f"{decimal_of(total, currency)} {currency}, the payout is "
                             f"{decimal_of(deposit.amount_minor, currency)} {currency}")
        body = {
            "TxnDate": deposit.arrival_on.isoformat(),
            "PrivateNote": f"{marker} (Cashloop)",
            "DepositToAccountRef": {"value": bank.id},
            **self.lookup.currency_ref(currency),
            "Line": [body for _, body in lines],
        }
        created = self.api.post("/deposit", body, request_id=request_id(key, "deposit"))
        return str(created["Deposit"]["Id"])

    def _deposited_payments(self, refs: str | None, label: str, currency: str,
                            expected_minor: int) -> list[tuple[str, int]]:
        """(Payment id, TotalAmt) of what push_payment returned, checked against the payout line."""
        if not refs:
            raise ConnectorError(f"waiting for payment {label} to be booked in QuickBooks", retryable=True)
        found = []
        for pid in refs.split(","):
            try:
                row = self.api.get(f"/payment/{pid}")["Payment"]
            except ConnectorError as exc:
                if is_not_found(exc):
                    raise ConnectorError(f"QuickBooks Payment {pid} of payment {label} was deleted: "
                                         f"re-push the payment first", retryable=False) from exc
                raise
            found.append((pid, minor_of(row.get("TotalAmt"), currency, "Payment.TotalAmt")))
        if sum(m for _, m in found) != expected_minor:
            raise ConnectorError(
                f"QuickBooks Payment(s) {refs} of payment {label} total "
                f"{decimal_of(sum(m for _, m in found), currency)} {currency}, the payout line "
                f"{decimal_of(expected_minor, currency)} {currency}: someone changed them", retryable=False)
        return found

    # -- tie-out reads ---------------------------------------------------------------------------

    def open_invoices(self) -> Iterator[RemoteOpenInvoice]:
        prefix = self.settings.number_prefix
        for row in self.api.query_pages("Invoice", "Balance > '0'"):
            currency = self.lookup.currency_of(row)
            number = str(row.get("DocNumber") or "")
            yield RemoteOpenInvoice(
                number=number.removeprefix(prefix) if prefix else number,
                customer_name=str((row.get("CustomerRef") or {}).get("name") or ""),
                currency=currency,
                total_minor=minor_of(row.get("TotalAmt", 0), currency, "Invoice.TotalAmt"),
                balance_minor=minor_of(row.get("Balance", 0), currency, "Invoice.Balance"))

    def payments_between(self, start: date, end: date) -> Iterator[RemotePayment]:
        where = f"TxnDate >= {literal(start.isoformat())} and TxnDate <= {literal(end.isoformat())}"
        for row in self.api.query_pages("Payment", where):
            token = token_of(row)
            if token is None:
                continue  # not ours: a cheque the bookkeeper entered
            currency = self.lookup.currency_of(row)
            yield RemotePayment(remote_id=str(row["Id"]), reference=token, currency=currency,
                                amount_minor=minor_of(row.get("TotalAmt", 0), currency, "Payment.TotalAmt"),
                                received_on=date.fromisoformat(str(row["TxnDate"])))
