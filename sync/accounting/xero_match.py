"""Finding the Xero invoice a PSA invoice number stands for. Never a guess: none or several is a
MatchError that names the invoice and what was found, and a person decides.

By number: the sales invoice (ACCREC) whose InvoiceNumber is `number_prefix + number`, AUTHORISED
(approved and not yet paid in full). With `invoice_match = "number_then_customer"`, an invoice
the books numbered differently is found as the contact named like the client, and that contact's
one AUTHORISED invoice whose AmountDue equals the amount being applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.config import XeroSettings
from app.core.money import Money
from sync.accounting.xero_wire import minor, quoted
from sync.base import MatchError

Pages = Callable[[str, str, dict[str, str]], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class Target:
    invoice_id: str
    number: str  # as Xero numbers it
    amount_minor: int  # what is applied to it


def _money(value_minor: int, currency: str) -> str:
    return f"{Money(value_minor, currency).to_decimal()} {currency}"


class InvoiceMatcher:
    def __init__(self, settings: XeroSettings, pages: Pages) -> None:
        self._settings = settings
        self._pages = pages  # (path, root key, params) -> records, every page

    def xero_number(self, psa_number: str) -> str:
        return f"{self._settings.number_prefix}{psa_number}"

    def match(
        self, allocations: tuple[tuple[str, int], ...], *, currency: str, client_name: str, what: str
    ) -> list[Target]:
        """One Target per allocation, in order; `what` names the payment in error messages."""
        numbers = [self.xero_number(n) for n, _ in allocations]
        found = self._invoices({"InvoiceNumbers": ",".join(dict.fromkeys(numbers)), "Statuses": "AUTHORISED"})
        targets: list[Target] = []
        for (psa_number, amount_minor), number in zip(allocations, numbers, strict=True):
            same = [i for i in found if i.get("InvoiceNumber") == number]
            if len(same) > 1:
                ids = ", ".join(str(i.get("InvoiceID")) for i in same)
                raise MatchError(
                    f"{what}: invoice {psa_number} matches {len(same)} AUTHORISED Xero "
                    f"invoices numbered {number} ({ids}); a person must pick one"
                )
            if same:
                invoice = same[0]
            elif self._settings.invoice_match == "number_then_customer":
                invoice = self._by_customer(
                    psa_number,
                    amount_minor,
                    currency,
                    client_name,
                    what,
                    taken={t.invoice_id for t in targets},
                )
            else:
                raise MatchError(
                    f"{what}: no AUTHORISED Xero invoice numbered {number} for invoice "
                    f"{psa_number}{self._elsewhere(number)}"
                )
            targets.append(self._target(invoice, psa_number, amount_minor, currency, what))
        return targets

    def _target(
        self, invoice: dict[str, Any], psa_number: str, amount_minor: int, currency: str, what: str
    ) -> Target:
        number = str(invoice.get("InvoiceNumber") or "")
        theirs = str(invoice.get("CurrencyCode") or "")
        if theirs != currency:
            raise MatchError(
                f"{what}: Xero invoice {number} for invoice {psa_number} is in {theirs}, "
                f"the payment in {currency}"
            )
        due = minor(invoice.get("AmountDue"), currency)
        if amount_minor > due:
            raise MatchError(
                f"{what}: Xero invoice {number} has {_money(due, currency)} due; invoice "
                f"{psa_number} is applied {_money(amount_minor, currency)}"
            )
        return Target(invoice_id=str(invoice["InvoiceID"]), number=number, amount_minor=amount_minor)

    def _by_customer(
        self,
        psa_number: str,
        amount_minor: int,
        currency: str,
        client_name: str,
        what: str,
        *,
        taken: set[str],
    ) -> dict[str, Any]:
        number = self.xero_number(psa_number)
        contacts = list(self._pages("/Contacts", "Contacts", {"where": f"Name=={quoted(client_name)}"}))
        if len(contacts) != 1:
            found = "no contact" if not contacts else f"{len(contacts)} contacts"
            raise MatchError(
                f"{what}: no Xero invoice numbered {number} for invoice {psa_number}, and "
                f"{found} named {client_name!r} to look under"
            )
        contact_id = str(contacts[0]["ContactID"])
        open_ones = self._invoices({"ContactIDs": contact_id, "Statuses": "AUTHORISED"})
        fits = [
            i
            for i in open_ones
            if str(i.get("InvoiceID")) not in taken
            and i.get("CurrencyCode") == currency
            and minor(i.get("AmountDue"), currency) == amount_minor
        ]
        if len(fits) != 1:
            listed = ", ".join(f"{i.get('InvoiceNumber')} ({i.get('AmountDue')} due)" for i in open_ones)
            raise MatchError(
                f"{what}: no Xero invoice numbered {number} for invoice {psa_number}; "
                f"{client_name!r} has {len(fits)} AUTHORISED invoices of "
                f"{_money(amount_minor, currency)} due (open: {listed or 'none'})"
            )
        return fits[0]

    def _elsewhere(self, number: str) -> str:
        """What Xero does have under that number (paid, voided, draft), for the message."""
        others = self._invoices({"InvoiceNumbers": number})
        if not others:
            return " (Xero has no invoice with that number at all)"
        statuses = ", ".join(sorted({str(i.get("Status")) for i in others}))
        return f" (Xero has it as {statuses})"

    def _invoices(self, params: dict[str, str]) -> list[dict[str, Any]]:
        rows = self._pages("/Invoices", "Invoices", {**params, "where": 'Type=="ACCREC"'})
        return [i for i in rows if i.get("Type", "ACCREC") == "ACCREC"]
