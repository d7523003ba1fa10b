"""What Cashloop writes in Xero, read back and written: payment bookings, bank transactions and
bank transfers.

A Cashloop payment is booked as ONE object: a plain Payment when it pays one invoice, else a
BatchPayment (one bank line in the clearing account paying several invoices, a Payment per
invoice inside it). Its Reference is the payment token (a later reversal books a replacement
whose Reference is "<token> after <reversal>", a won dispute "<token> won <dispute>"), which is
how a retry finds what an earlier attempt created. BatchPayment.Reference is NZ-only in Xero's
spec and Details is its non-NZ twin, so both carry the token and the lookup asks for either.
Bank transactions (surcharge income, Stripe fees) and the payout's bank transfer are found by
Reference too. A booking a reversal deletes first gets a history note naming its replacement,
so a reversal cut short between the delete and the replacement finds what it deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sync.accounting.xero_match import Target
from sync.accounting.xero_wire import amount, minor, parse_date, quoted
from sync.base import ConnectorError

Call = Callable[..., Any]  # (method, path, *, params=None, body=None, key=None) -> parsed JSON
Pages = Callable[[str, str, dict[str, str]], Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class Booking:
    kind: str  # "BatchPayment" or "Payment"
    remote_id: str
    reference: str
    on: date
    lines: tuple[tuple[str, int], ...]  # (InvoiceID, amount_minor)
    deleted: bool = False

    @property
    def ref(self) -> str:
        """What push_payment returns: the object type and id, e.g. BatchPayment:3c2f...."""
        return f"{self.kind}:{self.remote_id}"

    @property
    def path(self) -> str:
        return f"/{self.kind}s/{self.remote_id}"


def starts_with(field: str, prefix: str) -> str:
    """A null-safe `where` test: a record without the field must not fail the whole filter."""
    return f"{field}!=null AND {field}.StartsWith({quoted(prefix)})"


def belongs_to(reference: str, token: str) -> bool:
    return reference == token or reference.startswith(token + " ")


def find_bookings(pages: Pages, token: str, currency: str) -> list[Booking]:
    """The live (not deleted) bookings of payment `token`, batches and single payments."""
    return [b for b in token_bookings(pages, token, currency) if not b.deleted]


def token_bookings(pages: Pages, token: str, currency: str) -> list[Booking]:
    """Every booking of payment `token`, live and deleted (Xero lists deleted ones as DELETED)."""
    found: list[Booking] = []
    batch_filter = f"{starts_with('Reference', token)} OR {starts_with('Details', token)}"
    for batch in pages("/BatchPayments", "BatchPayments", {"where": batch_filter}):
        reference = str(batch.get("Reference") or batch.get("Details") or "")
        status = batch.get("Status", "AUTHORISED")
        if status not in ("AUTHORISED", "DELETED") or not belongs_to(reference, token):
            continue
        lines = tuple(
            (str(p["Invoice"]["InvoiceID"]), minor(p.get("Amount"), currency))
            for p in batch.get("Payments") or []
        )
        found.append(
            Booking(
                "BatchPayment",
                str(batch["BatchPaymentID"]),
                reference,
                parse_date(str(batch["Date"])),
                lines,
                deleted=status == "DELETED",
            )
        )
    for pay in pages("/Payments", "Payments", {"where": starts_with("Reference", token)}):
        reference = str(pay.get("Reference") or "")
        status = pay.get("Status", "AUTHORISED")
        if (
            pay.get("BatchPaymentID")
            or status not in ("AUTHORISED", "DELETED")
            or not belongs_to(reference, token)
        ):
            continue
        lines = ((str(pay["Invoice"]["InvoiceID"]), minor(pay.get("Amount"), currency)),)
        found.append(
            Booking(
                "Payment",
                str(pay["PaymentID"]),
                reference,
                parse_date(str(pay["Date"])),
                lines,
                deleted=status == "DELETED",
            )
        )
    return found


def add_note(call: Call, booking: Booking, details: str, *, key: str) -> None:
    """A history note on the booking (kept after it is deleted), shown in Xero's history."""
    call("PUT", booking.path + "/History", body={"HistoryRecords": [{"Details": details}]}, key=key)


def notes(call: Call, booking: Booking) -> list[str]:
    """The Details of every history record of the booking: Xero's own and our notes."""
    body = call("GET", booking.path + "/History") or {}
    return [str(r.get("Details") or "") for r in body.get("HistoryRecords") or []]


def create_booking(
    call: Call, *, account_code: str, targets: list[Target], currency: str, reference: str, on: date, key: str
) -> Booking:
    """One Payment (one invoice) or one BatchPayment (several), in the clearing account."""
    day = on.isoformat()
    if len(targets) == 1:
        t = targets[0]
        body = {
            "Payments": [
                {
                    "Invoice": {"InvoiceID": t.invoice_id},
                    "Account": {"Code": account_code},
                    "Date": day,
                    "Amount": amount(t.amount_minor, currency),
                    "Reference": reference,
                }
            ]
        }
        made = _first(call("PUT", "/Payments", body=body, key=key), "Payments")
        return Booking("Payment", str(made["PaymentID"]), reference, on, ((t.invoice_id, t.amount_minor),))
    body = {
        "BatchPayments": [
            {
                "Account": {"Code": account_code},
                "Reference": reference,
                "Details": reference,
                "Date": day,
                "Payments": [
                    {"Invoice": {"InvoiceID": t.invoice_id}, "Amount": amount(t.amount_minor, currency)}
                    for t in targets
                ],
            }
        ]
    }
    made = _first(call("PUT", "/BatchPayments", body=body, key=key), "BatchPayments")
    return Booking(
        "BatchPayment",
        str(made["BatchPaymentID"]),
        reference,
        on,
        tuple((t.invoice_id, t.amount_minor) for t in targets),
    )


def delete_booking(call: Call, booking: Booking, *, key: str) -> None:
    """Status DELETED: Xero takes the payments off their invoices (AmountDue goes back up)."""
    call("POST", booking.path, body={"Status": "DELETED"}, key=key)


def find_bank_transactions(pages: Pages, reference_prefix: str) -> list[dict[str, Any]]:
    """Live SPEND/RECEIVE transactions whose Reference starts with `reference_prefix`."""
    rows = pages(
        "/BankTransactions",
        "BankTransactions",
        {"where": f'{starts_with("Reference", reference_prefix)} AND Status=="AUTHORISED"'},
    )
    return [r for r in rows if r.get("Status", "AUTHORISED") == "AUTHORISED"]


def bank_transaction(
    call: Call,
    *,
    kind: str,
    bank_code: str,
    line_code: str,
    amount_minor: int,
    currency: str,
    reference: str,
    description: str,
    on: date,
    key: str,
    contact: str,
) -> str:
    """A one-line RECEIVE or SPEND in `bank_code` coded to `line_code`; returns BankTransaction:<id>."""
    if kind not in ("RECEIVE", "SPEND") or amount_minor <= 0:
        raise ValueError(
            f"a bank transaction is RECEIVE or SPEND of a positive amount, got {kind} {amount_minor}"
        )
    value = amount(amount_minor, currency)
    body = {
        "BankTransactions": [
            {
                "Type": kind,
                "Contact": {"Name": contact},
                "BankAccount": {"Code": bank_code},
                "Date": on.isoformat(),
                "Reference": reference,
                "CurrencyCode": currency,
                "LineAmountTypes": "NoTax",
                "LineItems": [
                    {
                        "Description": description,
                        "Quantity": Decimal(1),
                        "UnitAmount": value,
                        "LineAmount": value,
                        "AccountCode": line_code,
                    }
                ],
            }
        ]
    }
    made = _first(
        call("PUT", "/BankTransactions", params={"unitdp": "4"}, body=body, key=key), "BankTransactions"
    )
    return f"BankTransaction:{made['BankTransactionID']}"


def find_bank_transfers(pages: Pages, reference: str) -> list[dict[str, Any]]:
    """The live bank transfers whose Reference is exactly `reference` (deleted ones are left out)."""
    rows = pages("/BankTransfers", "BankTransfers", {"where": f"Reference=={quoted(reference)}"})
    return [r for r in rows if r.get("Reference") == reference and r.get("Status", "AUTHORISED") != "DELETED"]


def bank_transfer(
    call: Call,
    *,
    from_code: str,
    to_code: str,
    amount_minor: int,
    currency: str,
    reference: str,
    on: date,
    key: str,
) -> str:
    """Money from one bank account to another (both legs in one object); returns BankTransfer:<id>."""
    if amount_minor <= 0:
        raise ValueError(f"a bank transfer moves a positive amount, got {amount_minor}")
    body = {
        "BankTransfers": [
            {
                "FromBankAccount": {"Code": from_code},
                "ToBankAccount": {"Code": to_code},
                "Amount": amount(amount_minor, currency),
                "Date": on.isoformat(),
                "Reference": reference,
            }
        ]
    }
    made = _first(call("PUT", "/BankTransfers", body=body, key=key), "BankTransfers")
    return f"BankTransfer:{made['BankTransferID']}"


def _first(body: Any, root: str) -> dict[str, Any]:
    items = (body or {}).get(root) if isinstance(body, dict) else None
    if not items:
        raise ConnectorError(f"Xero answered PUT /{root} without {root}", retryable=True)
    item = items[0]
    problems = [e.get("Message") for e in item.get("ValidationErrors") or [] if isinstance(e, dict)]
    if problems:
        raise ConnectorError(
            f"Xero refused the {root[:-1]}: {'; '.join(map(str, problems))}", retryable=False
        )
    return item
