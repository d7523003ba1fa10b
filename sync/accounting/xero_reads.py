"""What the tie-out report reads from Xero: open sales invoices, and Cashloop's payments in a period."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from app.config import XeroSettings
from sync.accounting.xero_books import Pages
from sync.accounting.xero_wire import minor, parse_date, where_date
from sync.base import RemoteOpenInvoice, RemotePayment


def open_invoices(pages: Pages, settings: XeroSettings) -> Iterator[RemoteOpenInvoice]:
    prefix = settings.number_prefix
    for inv in pages("/Invoices", "Invoices", {"Statuses": "AUTHORISED", "where": 'Type=="ACCREC"'}):
        if inv.get("Type", "ACCREC") != "ACCREC":
            continue
        currency = str(inv.get("CurrencyCode"))
        balance = minor(inv.get("AmountDue"), currency)
        if balance <= 0:
            continue
        number = str(inv.get("InvoiceNumber") or "")
        yield RemoteOpenInvoice(
            number=number[len(prefix) :] if prefix and number.startswith(prefix) else number,
            customer_name=str((inv.get("Contact") or {}).get("Name") or ""),
            currency=currency,
            total_minor=minor(inv.get("Total"), currency),
            balance_minor=balance,
        )


def payments_between(pages: Pages, settings: XeroSettings, start: date, end: date) -> Iterator[RemotePayment]:
    """Per Cashloop payment token: its live bookings dated start..end plus its surcharge income."""
    span = f"Date>={where_date(start)} AND Date<={where_date(end)}"
    found: dict[str, list[Any]] = {}  # token -> [remote_id, currency, amount_minor, first date]

    def add(reference: str, remote_id: str, currency: str, value: Any, day: date) -> None:
        token = reference.split(" ", 1)[0]
        if not token or not currency:
            return
        row = found.setdefault(token, [remote_id, currency, 0, day])
        row[2] += minor(value, currency)
        row[3] = min(row[3], day)

    for batch in pages("/BatchPayments", "BatchPayments", {"where": span}):
        if batch.get("Status", "AUTHORISED") != "AUTHORISED" or batch.get("Type", "RECBATCH") != "RECBATCH":
            continue
        pays = batch.get("Payments") or []
        currency = str(((pays[0].get("Invoice") or {}).get("CurrencyCode") if pays else "") or "")
        add(
            str(batch.get("Reference") or batch.get("Details") or ""),
            f"BatchPayment:{batch['BatchPaymentID']}",
            currency,
            batch.get("TotalAmount") or sum(p.get("Amount") or 0 for p in pays),
            parse_date(str(batch["Date"])),
        )
    for pay in pages("/Payments", "Payments", {"where": f'{span} AND Status=="AUTHORISED"'}):
        if pay.get("BatchPaymentID") or pay.get("PaymentType", "ACCRECPAYMENT") != "ACCRECPAYMENT":
            continue
        currency = str((pay.get("Invoice") or {}).get("CurrencyCode") or "")
        add(
            str(pay.get("Reference") or ""),
            f"Payment:{pay['PaymentID']}",
            currency,
            pay.get("Amount"),
            parse_date(str(pay["Date"])),
        )
    for txn in pages(
        "/BankTransactions",
        "BankTransactions",
        {"where": f'{span} AND Type=="RECEIVE" AND Status=="AUTHORISED"'},
    ):
        lines = txn.get("LineItems") or []
        if (
            (txn.get("BankAccount") or {}).get("Code") == settings.clearing_account
            and lines
            and all(ln.get("AccountCode") == settings.surcharge_account for ln in lines)
        ):
            add(
                str(txn.get("Reference") or ""),
                f"BankTransaction:{txn['BankTransactionID']}",
                str(txn.get("CurrencyCode") or ""),
                txn.get("Total"),
                parse_date(str(txn["Date"])),
            )
    for token, (remote_id, currency, amount_minor, day) in found.items():
        yield RemotePayment(
            remote_id=remote_id,
            reference=token,
            currency=currency,
            amount_minor=amount_minor,
            received_on=day,
        )


# ---- bookings ---------------------------------------------------------------------------------
