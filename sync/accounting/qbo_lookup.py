"""Finding things in QuickBooks Online: accounts by name, the home currency, and PSA invoices.

A PSA invoice is the QBO Invoice whose DocNumber is `number_prefix + number`. When there is none
and `invoice_match = "number_then_customer"`, it is the one open invoice of the Customer whose
DisplayName is the client's name with a Balance equal to the allocated amount. Zero or several
candidates raise MatchError naming what was looked for and what was found: nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.config import QuickBooksSettings
from sync.accounting.qbo_wire import QboApi, decimal_of, is_not_found, literal, minor_of
from sync.base import ConnectorError, MatchError

_TOKEN_IN_NOTE = re.compile(r"^Cashloop payment (\S+)")


def payment_note(token: str, processor_ref: str | None, method: str) -> str:
    """The PrivateNote of our Payments: the full token (PaymentRefNum holds only 21 characters)."""
    return f"Cashloop payment {token} ({method}{', ' + processor_ref if processor_ref else ''})"


def token_of(obj: dict[str, Any]) -> str | None:
    found = _TOKEN_IN_NOTE.match(str(obj.get("PrivateNote") or ""))
    return found.group(1) if found else None


@dataclass(frozen=True)
class QboInvoice:
    id: str
    number: str  # DocNumber as QBO holds it (with the prefix)
    customer_id: str
    customer_name: str
    currency: str
    balance_minor: int


@dataclass(frozen=True)
class QboAccount:
    id: str
    name: str
    undeposited_funds: bool  # only payments held here can be linked from a Deposit


class QboLookup:
    """Lookups for one connector instance; accounts and the home currency are cached."""

    def __init__(self, api: QboApi, settings: QuickBooksSettings) -> None:
        self._api = api
        self._settings = settings
        self._accounts: dict[str, QboAccount] = {}
        self._home: tuple[str, bool] | None = None

    # -- company ---------------------------------------------------------------------------------

    def home_currency(self) -> str:
        return self._preferences()[0]

    def currency_ref(self, currency: str) -> dict[str, Any]:
        """{"CurrencyRef": ...} for a foreign currency, {} for the home one; refuses a foreign
        currency in a company without multicurrency (QBO would refuse it less clearly)."""
        home, multi = self._preferences()
        if currency == home:
            return {}
        if not multi:
            raise ConnectorError(f"QuickBooks company currency is {home} and multicurrency is off: "
                                 f"cannot book {currency}", retryable=False)
        return {"CurrencyRef": {"value": currency}}

    def currency_of(self, obj: dict[str, Any]) -> str:
        return str((obj.get("CurrencyRef") or {}).get("value") or self.home_currency())

    def _preferences(self) -> tuple[str, bool]:
        if self._home is None:
            prefs = (self._api.get("/preferences").get("Preferences") or {}).get("CurrencyPrefs") or {}
            home = str((prefs.get("HomeCurrency") or {}).get("value") or "")
            if not home:
                raise ConnectorError("QuickBooks preferences carry no home currency", retryable=True)
            self._home = (home, bool(prefs.get("MultiCurrencyEnabled")))
        return self._home

    def account(self, name: str, setting: str) -> QboAccount:
        if name not in self._accounts:
            rows = [r for r in self._api.query("Account", f"Name = {literal(name)}")
                    if r.get("Active", True) is not False]
            if len(rows) != 1:
                found = "no" if not rows else f"{len(rows)}"
                raise ConnectorError(f"QuickBooks has {found} active account named {name!r} "
                                     f"(setting accounting.quickbooks.{setting})", retryable=False)
            row = rows[0]
            self._accounts[name] = QboAccount(str(row["Id"]), name,
                                              row.get("AccountSubType") == "UndepositedFunds")
        return self._accounts[name]

    # -- invoices --------------------------------------------------------------------------------

    def invoice(self, number: str, amount_minor: int, currency: str, client_name: str,
                taken: set[str]) -> QboInvoice:
        """The QBO invoice for PSA invoice `number` (see the module docstring). `taken` holds the ids
        already matched in this push, so one QBO invoice never stands for two PSA invoices."""
        doc = self._settings.number_prefix + number
        rows = self._api.query("Invoice", f"DocNumber = {literal(doc)}")
        if len(rows) > 1:
            raise MatchError(f"invoice {doc}: QuickBooks has {len(rows)} invoices with that number "
                             f"(ids {', '.join(str(r.get('Id')) for r in rows)}); make the number unique")
        if rows:
            found = self._invoice(rows[0])
        elif self._settings.invoice_match == "number_then_customer":
            found = self._by_customer(doc, amount_minor, currency, client_name, taken)
        else:
            raise MatchError(f"invoice {doc}: QuickBooks has no invoice with that number "
                             f"(invoice_match = number)")
        if found.currency != currency:
            raise MatchError(f"invoice {doc}: QuickBooks invoice {found.id} is in {found.currency}, "
                             f"the payment in {currency}")
        if found.id in taken:
            raise MatchError(f"invoice {doc}: QuickBooks invoice {found.id} already stands for another "
                             f"invoice of this payment")
        return found

    def _by_customer(self, doc: str, amount_minor: int, currency: str, client_name: str,
                     taken: set[str]) -> QboInvoice:
        customer_id = self.customer(client_name, doc)
        open_rows = [self._invoice(r) for r in self._api.query(
            "Invoice", f"CustomerRef = {literal(customer_id)} and Balance > '0'")]
        fits = [i for i in open_rows if i.balance_minor == amount_minor and i.currency == currency
                and i.id not in taken]
        if len(fits) == 1:
            return fits[0]
        amount = f"{decimal_of(amount_minor, currency)} {currency}"
        if not fits:
            balances = ", ".join(f"{i.number or i.id}: {decimal_of(i.balance_minor, i.currency)} "
                                 f"{i.currency}" for i in open_rows) or "none"
            raise MatchError(f"invoice {doc}: no invoice with that number, and customer {client_name!r} "
                             f"has no open invoice of {amount} (open: {balances})")
        raise MatchError(f"invoice {doc}: no invoice with that number, and customer {client_name!r} has "
                         f"{len(fits)} open invoices of {amount} "
                         f"({', '.join(i.number or i.id for i in fits)}); cannot tell which")

    def customer(self, client_name: str, doc: str) -> str:
        """The id of the one Customer whose DisplayName is `client_name` (for the fallback match)."""
        customers = self._api.query("Customer", f"DisplayName = {literal(client_name)}")
        if len(customers) != 1:
            what = "no customer" if not customers else f"{len(customers)} customers"
            raise MatchError(f"invoice {doc}: no invoice with that number, and QuickBooks has {what} "
                             f"named {client_name!r}")
        return str(customers[0]["Id"])

    def receivable_account(self) -> str:
        if "" not in self._accounts:  # "" cannot be an account name: the A/R slot of the cache
            rows = [r for r in self._api.query("Account", "AccountType = 'Accounts Receivable'")
                    if r.get("Active", True) is not False]
            if len(rows) != 1:
                raise ConnectorError(f"QuickBooks has {len(rows)} active Accounts Receivable accounts; "
                                     f"refunds need exactly one", retryable=False)
            self._accounts[""] = QboAccount(str(rows[0]["Id"]), str(rows[0].get("Name") or ""), False)
        return self._accounts[""].id

    # -- payments --------------------------------------------------------------------------------

    def find_payment(self, customer_id: str, txn_date: date, token: str) -> dict[str, Any] | None:
        """The live Payment for our `token` of that customer and date (deleted ones are not listed)."""
        where = f"CustomerRef = {literal(customer_id)} and TxnDate = {literal(txn_date.isoformat())}"
        return next((p for p in self._api.query("Payment", where) if token_of(p) == token), None)

    def payment_applied_to(self, invoice_row: dict[str, Any], token: str) -> dict[str, Any] | None:
        """Our Payment for `token` among those the invoice lists in its LinkedTxn."""
        for link in invoice_row.get("LinkedTxn") or []:
            if link.get("TxnType") != "Payment":
                continue
            try:
                row = self._api.get(f"/payment/{link['TxnId']}")["Payment"]
            except ConnectorError as exc:
                if is_not_found(exc):
                    continue
                raise
            if token_of(row) == token:
                return row
        return None

    def _invoice(self, row: dict[str, Any]) -> QboInvoice:
        currency = self.currency_of(row)
        customer = row.get("CustomerRef") or {}
        return QboInvoice(id=str(row["Id"]), number=str(row.get("DocNumber") or ""),
                          customer_id=str(customer.get("value") or ""),
                          customer_name=str(customer.get("name") or ""), currency=currency,
                          balance_minor=minor_of(row.get("Balance", 0), currency, "Invoice.Balance"))
