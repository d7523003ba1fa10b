"""The journal export: a CSV of balanced journal entries a finance person can import anywhere.

Each payment is one entry: a debit of the whole amount to the clearing account (money on its
way from the processor to the bank) and one credit per invoice to accounts receivable. Each
Stripe payout is one deposit entry: a debit of the payout to the bank, a debit of Stripe's fees
to the fee expense account, and the clearing account credited with the payments it holds (debited
with its refunds and disputes), so the clearing account empties as the money reaches the bank.
Amounts are written as exact decimals of the currency (no float, no thousands separator).
Idempotent: an entry whose key is already in the file is not written again. With format "iif"
the same entries are written as QuickBooks Desktop IIF (sync/accounting/iif.py).
"""

from __future__ import annotations

import csv
import fcntl
import io
from pathlib import Path

from app.core.money import Money
from sync.accounting import iif
from sync.base import JournalDeposit, JournalPayment, JournalReversal

COLUMNS = [
    "entry_key",
    "entry_date",
    "payment_reference",
    "processor_reference",
    "customer",
    "customer_id",
    "invoice_number",
    "account",
    "debit",
    "credit",
    "currency",
    "memo",
]
CLEARING_ACCOUNT = "Stripe clearing"
UNDEPOSITED_ACCOUNT = "Undeposited funds"  # checks, wires and cash the finance team recorded


def clearing_account(method: str) -> str:
    """Where the money sits until it reaches the bank: Stripe's balance, or the office's tray."""
    return CLEARING_ACCOUNT if method in ("card", "ach") else UNDEPOSITED_ACCOUNT
RECEIVABLE_ACCOUNT = "Accounts receivable"
SURCHARGE_ACCOUNT = "Card surcharge income"
BANK_ACCOUNT = "Bank"
FEE_ACCOUNT = "Stripe fees"
ADJUSTMENT_ACCOUNT = "Stripe adjustments to classify"  # money in a payout Cashloop did not book


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _safe(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet; prefix it so it stays text.
    return "'" + value if value[:1] in FORMULA_STARTS else value


def _unsafe(value: str) -> str:
    # IIF goes to QuickBooks, not a spreadsheet: there the quote would become part of the customer's
    # name (a new customer "'@Home Networks" instead of "@Home Networks").
    return value[1:] if value[:1] == "'" and value[1:2] in FORMULA_STARTS else value


class JournalSink:
    kind = "journal"

    def __init__(self, path: str | Path, *, format: str = "csv") -> None:
        if format not in ("csv", "iif"):
            raise ValueError(f"accounting.journal.format: expected \"csv\" or \"iif\", got {format!r}")
        self.path = Path(path)
        self.format = format

    def entry_lines(self, p: JournalPayment, key: str) -> list[list[str]]:
        """The CSV rows of one payment: debits equal credits to the minor unit."""

        def amount(minor: int) -> str:
            return str(Money(minor, p.currency).to_decimal())

        ref = p.payment_reference or p.payment_token  # what the receipt says, so a person can match them
        common = [
            key,
            p.received_on.isoformat(),
            ref,
            p.processor_ref or "",
            _safe(p.client_name),
            _safe(p.client_remote_id),
        ]
        rows = [
            [
                *common,
                "",
                clearing_account(p.method),
                amount(p.amount_minor),
                "",
                p.currency,
                f"{p.method} payment {ref}",
            ]
        ]
        owners = p.allocation_clients or ((p.client_name, p.client_remote_id),) * len(p.allocations)
        for (number, minor), (owner, owner_id) in zip(p.allocations, owners, strict=True):
            # Each invoice is credited to its own company's receivable (a parent may pay a child's).
            of = "" if owner_id == p.client_remote_id else f" of {owner}"
            rows.append(
                [
                    *common[:4],
                    _safe(owner),
                    _safe(owner_id),
                    _safe(number),
                    RECEIVABLE_ACCOUNT,
                    "",
                    amount(minor),
                    p.currency,
                    _safe(f"applied to invoice {number}{of}"),
                ]
            )
        if p.surcharge_minor:
            rows.append([*common, "", SURCHARGE_ACCOUNT, "", amount(p.surcharge_minor), p.currency,
                         "card surcharge"])
        return rows

    def reversal_lines(self, r: JournalReversal, key: str) -> list[list[str]]:
        """A refund or dispute reverses the payment's entry (debit receivable, credit clearing); a won
        dispute books it again. Debits equal credits to the minor unit."""

        def amount(minor: int) -> str:
            return str(Money(minor, r.currency).to_decimal())

        back = r.kind != "dispute_won"
        ref = r.payment_reference or r.payment_token
        common = [key, r.occurred_on.isoformat(), ref, r.processor_ref or "",
                  _safe(r.client_name), _safe(r.client_remote_id)]
        what = {"refund": f"refund {r.reference}", "dispute": f"dispute {r.reference}",
                "dispute_won": f"dispute {r.reference} won"}[r.kind]
        clearing = amount(r.amount_minor)
        debit, credit = ("", clearing) if back else (clearing, "")
        rows = [[*common, "", CLEARING_ACCOUNT, debit, credit, r.currency, f"{what} of {ref}"]]
        for number, minor in r.allocations:
            debit, credit = (amount(minor), "") if back else ("", amount(minor))
            rows.append([*common, _safe(number), RECEIVABLE_ACCOUNT, debit, credit, r.currency,
                         f"{what}: invoice {number}"])
        if r.surcharge_minor:
            debit, credit = (amount(r.surcharge_minor), "") if back else ("", amount(r.surcharge_minor))
            rows.append([*common, "", SURCHARGE_ACCOUNT, debit, credit, r.currency,
                         f"{what}: card surcharge"])
        return rows

    def push_reversal(self, reversal: JournalReversal, *, key: str) -> str:
        """Append the reversing entry unless `key` is already there; returns `key`."""
        if sum(a for _, a in reversal.allocations) + reversal.surcharge_minor != reversal.amount_minor:
            raise ValueError(f"{reversal.kind} {reversal.reference}: lines do not add up to the amount")
        return self._append(key, self.reversal_lines(reversal, key))

    def deposit_lines(self, d: JournalDeposit, key: str) -> list[list[str]]:
        """The rows of one payout: bank and fees debited, each item through the clearing account
        (payments credited, refunds and disputes debited); debits equal credits to the minor unit."""

        def sides(minor: int) -> tuple[str, str]:
            text = str(Money(abs(minor), d.currency).to_decimal())
            return (text, "") if minor >= 0 else ("", text)

        on = d.arrival_on.isoformat()
        rows = [[key, on, d.payout_id, d.payout_id, "", "", "", BANK_ACCOUNT, *sides(d.amount_minor),
                 d.currency, f"Stripe payout {d.payout_id}"]]
        if d.fee_minor:
            rows.append([key, on, d.payout_id, d.payout_id, "", "", "", FEE_ACCOUNT, *sides(d.fee_minor),
                         d.currency, f"Stripe fees in payout {d.payout_id}"])
        for ln in d.lines:
            account = ADJUSTMENT_ACCOUNT if ln.kind == "adjustment" else CLEARING_ACCOUNT
            ref = ln.payment_reference or ln.payment_token
            what = {"payment": f"payment {ref}", "refund": f"refund {ln.reference}",
                    "dispute": f"dispute {ln.reference}", "dispute_won": f"dispute {ln.reference} won",
                    "adjustment": f"not booked by Cashloop: {ln.processor_ref}"}[ln.kind]
            rows.append([key, on, ref or d.payout_id, ln.processor_ref, _safe(ln.client_name),
                         _safe(ln.client_remote_id), "", account, *sides(-ln.amount_minor), d.currency,
                         f"{what} (payout {d.payout_id})"])
        return rows

    def push_deposit(self, deposit: JournalDeposit, *, key: str) -> str:
        """Append the payout's deposit entry unless `key` is already there; returns `key`."""
        fees = sum(ln.fee_minor for ln in deposit.lines)
        gross = sum(ln.amount_minor for ln in deposit.lines)
        if fees != deposit.fee_minor or gross - fees != deposit.amount_minor:
            raise ValueError(f"payout {deposit.payout_id}: lines ({gross} less fees {fees}) do not add up "
                             f"to the payout ({deposit.amount_minor})")
        return self._append(key, self.deposit_lines(deposit, key))

    def push_payment(self, payment: JournalPayment, *, key: str) -> str:
        """Append the payment's entry unless `key` is already there; returns `key` as the reference."""
        if sum(a for _, a in payment.allocations) + payment.surcharge_minor != payment.amount_minor:
            # Unapplied money is not silently parked: the ledger must allocate every minor unit.
            raise ValueError(f"payment {payment.payment_token}: allocations do not add up to the amount")
        return self._append(key, self.entry_lines(payment, key))

    def _append(self, key: str, lines: list[list[str]]) -> str:
        if self.format == "iif":
            rows = [dict(zip(COLUMNS, map(_unsafe, row), strict=True)) for row in lines]
            return iif.append(self.path, key, rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8", newline="") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            existing = fh.read()
            if not existing:
                existing_keys: set[str] = set()
            else:
                existing_keys = {row[0] for row in csv.reader(io.StringIO(existing)) if row}
            if key in existing_keys:
                return key
            out = csv.writer(fh)
            if not existing:
                out.writerow(COLUMNS)
            out.writerows(lines)
            fh.flush()
        return key
