"""Refunds, disputes and won disputes in QuickBooks Online (the design is in quickbooks.py).

A reversal finds the Payment it reverses through its invoices (an Invoice lists the Payments
applied to it in LinkedTxn), books one JournalEntry, then re-applies each affected Payment with
a sparse update: the invoices' lines change by the reversed amounts and a line linking the
JournalEntry keeps TotalAmt as it was. Both steps are safe to repeat: the JournalEntry is looked
up by its PrivateNote before it is created, and a Payment that already links it is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.config import QuickBooksSettings
from sync.accounting.qbo_lookup import QboLookup, token_of
from sync.accounting.qbo_wire import QboApi, decimal_of, is_stale_object, literal, minor_of, request_id
from sync.base import ConnectorError, JournalReversal, MatchError

STALE_RETRIES = 3
_WHAT = {"refund": "refund", "dispute": "dispute", "dispute_won": "dispute won"}


@dataclass
class _Target:
    """One QBO Payment of the reversed payment, and what is reversed on each of its invoices."""

    payment_id: str
    customer_id: str
    invoices: list[tuple[str, str, int]] = field(default_factory=list)  # (id, DocNumber, minor)

    @property
    def minor(self) -> int:
        return sum(m for _, _, m in self.invoices)


class ReversalBooker:
    def __init__(self, api: QboApi, lookup: QboLookup, settings: QuickBooksSettings) -> None:
        self._api = api
        self._lookup = lookup
        self._settings = settings

    def book(self, r: JournalReversal, *, key: str) -> str:
        """Returns the JournalEntry id."""
        if sum(a for _, a in r.allocations) + r.surcharge_minor != r.amount_minor:
            raise ValueError(f"{r.kind} {r.reference}: allocations and surcharge do not add up to the amount")
        targets = self._targets(r)
        entry_id = self._existing_entry(r)
        if entry_id is None:
            for target in targets:
                self._check_applied(r, target)
            entry_id = self._create_entry(r, key, targets)
        for target in targets:
            if target.invoices:
                self._reapply(target, entry_id, back=r.kind != "dispute_won", currency=r.currency, key=key)
        return entry_id

    # -- what is reversed ------------------------------------------------------------------------

    def _targets(self, r: JournalReversal) -> list[_Target]:
        targets: dict[str, _Target] = {}
        missing: list[tuple[str, int]] = []
        for number, minor in r.allocations:
            doc = self._settings.number_prefix + number
            rows = self._api.query("Invoice", f"DocNumber = {literal(doc)}")
            if len(rows) > 1:
                raise MatchError(f"invoice {doc}: QuickBooks has {len(rows)} invoices with that number")
            if not rows:
                missing.append((doc, minor))
                continue
            # A fully reversed invoice no longer lists the Payment: then look among the customer's.
            customer_id = str((rows[0].get("CustomerRef") or {}).get("value") or "")
            payment = self._lookup.payment_applied_to(rows[0], r.payment_token) or \
                self._customer_payment(customer_id, r)
            if payment is None:
                raise MatchError(f"invoice {doc}: no QuickBooks Payment of payment {r.payment_token} is "
                                 f"applied to it, so its {_WHAT[r.kind]} cannot be booked against it")
            self._target(targets, payment).invoices.append((str(rows[0]["Id"]), doc, minor))
        if missing:
            self._by_customer(r, missing, targets)
        return list(targets.values())

    def _target(self, targets: dict[str, _Target], payment: dict[str, Any]) -> _Target:
        pid = str(payment["Id"])
        if pid not in targets:
            targets[pid] = _Target(pid, str((payment.get("CustomerRef") or {}).get("value") or ""))
        return targets[pid]

    def _by_customer(self, r: JournalReversal, missing: list[tuple[str, int]],
                     targets: dict[str, _Target]) -> None:
        """Invoices not found by number (matched by customer when they were paid): the Payment's one
        invoice line that no numbered invoice accounts for."""
        doc = missing[0][0]
        if self._settings.invoice_match != "number_then_customer":
            raise MatchError(f"invoice {doc}: QuickBooks has no invoice with that number "
                             f"(invoice_match = number)")
        payment = self._customer_payment(self._lookup.customer(r.client_name, doc), r)
        if payment is None:
            raise MatchError(f"invoice {doc}: no invoice with that number, and customer {r.client_name!r} "
                             f"has no QuickBooks Payment of payment {r.payment_token}")
        target = self._target(targets, payment)
        claimed = {inv_id for t in targets.values() for inv_id, _, _ in t.invoices}
        free = [str(link["TxnId"]) for line in payment.get("Line") or []
                for link in line.get("LinkedTxn") or []
                if link.get("TxnType") == "Invoice" and str(link.get("TxnId")) not in claimed]
        if len(missing) != 1 or len(free) != 1:
            raise MatchError(f"invoice {doc}: no invoice with that number, and QuickBooks Payment "
                             f"{target.payment_id} applies to {len(free)} other invoice(s): "
                             f"cannot tell which")
        target.invoices.append((free[0], doc, missing[0][1]))

    def _customer_payment(self, customer_id: str, r: JournalReversal) -> dict[str, Any] | None:
        where = f"CustomerRef = {literal(customer_id)} and TxnDate <= {literal(r.occurred_on.isoformat())}"
        return next((p for p in self._api.query("Payment", where) if token_of(p) == r.payment_token), None)

    def _check_applied(self, r: JournalReversal, target: _Target) -> None:
        """Before anything is booked: the Payment must have applied at least what is reversed."""
        if r.kind == "dispute_won":
            return
        row = self._api.get(f"/payment/{target.payment_id}")["Payment"]
        for invoice_id, doc, minor in target.invoices:
            applied = sum(minor_of(line.get("Amount", 0), r.currency, "Payment.Line.Amount")
                          for line in row.get("Line") or []
                          if {"TxnId": invoice_id, "TxnType": "Invoice"} in [
                              {"TxnId": str(lt.get("TxnId")), "TxnType": lt.get("TxnType")}
                              for lt in line.get("LinkedTxn") or []])
            if applied < minor:
                raise MatchError(f"invoice {doc}: QuickBooks Payment {target.payment_id} applies only "
                                 f"{decimal_of(applied, r.currency)} {r.currency} to it, less than the "
                                 f"{decimal_of(minor, r.currency)} {r.currency} to reverse")

    # -- the JournalEntry ------------------------------------------------------------------------

    def _existing_entry(self, r: JournalReversal) -> str | None:
        """The JournalEntry an earlier attempt created (its answer may have been lost)."""
        for found in self._api.query("JournalEntry", f"TxnDate = {literal(r.occurred_on.isoformat())}"):
            if str(found.get("PrivateNote") or "").startswith(_marker(r)):
                return str(found["Id"])
        return None

    def _create_entry(self, r: JournalReversal, key: str, targets: list[_Target]) -> str:
        back = r.kind != "dispute_won"
        ar_side, clearing_side = ("Debit", "Credit") if back else ("Credit", "Debit")
        what = f"{_WHAT[r.kind]} {r.reference}"
        receivable = self._lookup.receivable_account()

        def line(minor: int, side: str, account_id: str, description: str,
                 customer_id: str | None = None) -> dict[str, Any]:
            detail: dict[str, Any] = {"PostingType": side, "AccountRef": {"value": account_id}}
            if customer_id:
                detail["Entity"] = {"Type": "Customer", "EntityRef": {"value": customer_id}}
            return {"Amount": decimal_of(minor, r.currency), "Description": description,
                    "DetailType": "JournalEntryLineDetail", "JournalEntryLineDetail": detail}

        lines = [line(minor, ar_side, receivable, f"{what}: invoice {doc}", t.customer_id)
                 for t in targets for _, doc, minor in t.invoices]
        if r.surcharge_minor:
            surcharge = self._lookup.account(self._settings.surcharge_account, "surcharge_account")
            lines.append(line(r.surcharge_minor, ar_side, surcharge.id, f"{what}: card surcharge"))
        clearing = self._lookup.account(self._settings.clearing_account, "clearing_account")
        lines.append(line(r.amount_minor, clearing_side, clearing.id, f"{what} of payment {r.payment_token}"))
        body = {
            "TxnDate": r.occurred_on.isoformat(),
            "PrivateNote": f"{_marker(r)}of payment {r.payment_token}"
                           f"{' (' + r.processor_ref + ')' if r.processor_ref else ''}",
            **self._lookup.currency_ref(r.currency),
            "Line": lines,
        }
        created = self._api.post("/journalentry", body, request_id=request_id(key, "journalentry"))
        return str(created["JournalEntry"]["Id"])

    # -- the Payment re-applied ------------------------------------------------------------------

    def _reapply(self, target: _Target, entry_id: str, *, back: bool, currency: str, key: str) -> None:
        """Sparse update of the Payment's lines with its current SyncToken; a stale one re-reads."""
        for attempt in range(1, STALE_RETRIES + 1):
            row = self._api.get(f"/payment/{target.payment_id}")["Payment"]
            lines = [{"Amount": minor_of(line.get("Amount", 0), currency, "Payment.Line.Amount"),
                      "LinkedTxn": [{"TxnId": str(lt["TxnId"]), "TxnType": str(lt["TxnType"])}
                                    for lt in line.get("LinkedTxn") or []]}
                     for line in row.get("Line") or []]
            entry_link = {"TxnId": entry_id, "TxnType": "JournalEntry"}
            if any(entry_link in ln["LinkedTxn"] for ln in lines):
                return  # done by an earlier attempt whose answer was lost
            for invoice_id, doc, minor in target.invoices:
                link = {"TxnId": invoice_id, "TxnType": "Invoice"}
                line = next((ln for ln in lines if link in ln["LinkedTxn"]), None)
                if back and (line is None or line["Amount"] < minor):
                    applied = decimal_of(line["Amount"] if line else 0, currency)
                    raise MatchError(f"invoice {doc}: QuickBooks Payment {target.payment_id} applies only "
                                     f"{applied} {currency} to it, less than the "
                                     f"{decimal_of(minor, currency)} {currency} to reverse")
                if line is None:
                    lines.append({"Amount": minor, "LinkedTxn": [link]})
                else:
                    line["Amount"] += -minor if back else minor
            lines = [ln for ln in lines if ln["Amount"]]
            lines.append({"Amount": target.minor, "LinkedTxn": [entry_link]})
            body = {"Id": target.payment_id, "SyncToken": str(row["SyncToken"]), "sparse": True,
                    "Line": [{"Amount": decimal_of(ln["Amount"], currency), "LinkedTxn": ln["LinkedTxn"]}
                             for ln in lines]}
            try:
                self._api.post("/payment", body, request_id=request_id(
                    key, "reapply", target.payment_id, str(row["SyncToken"])))
                return
            except ConnectorError as exc:
                if not is_stale_object(exc) or attempt == STALE_RETRIES:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises


def _marker(r: JournalReversal) -> str:
    return f"Cashloop {r.kind} {r.reference} "
