"""The journal export: a CSV of balanced journal entries a finance person can import anywhere.

Each payment is one entry: a debit of the whole amount to the clearing account (money on its
way from the processor to the bank) and one credit per invoice to accounts receivable. Amounts
are written as exact decimals of the currency (no float, no thousands separator). Idempotent:
an entry whose key is already in the file is not written again.
"""

from __future__ import annotations

import csv
import fcntl
import io
from pathlib import Path

from app.core.money import Money
from sync.base import JournalPayment, JournalReversal

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


def _safe(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet; prefix it so it stays text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class JournalSink:
    kind = "journal"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def entry_lines(self, p: JournalPayment, key: str) -> list[list[str]]:
        """The CSV rows of one payment: debits equal credits to the minor unit."""

        def amount(minor: int) -> str:
            return str(Money(minor, p.currency).to_decimal())

        common = [
            key,
            p.received_on.isoformat(),
            p.payment_token,
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
                f"{p.method} payment {p.payment_token}",
            ]
        ]
        for number, minor in p.allocations:
            rows.append(
                [
                    *common,
                    _safe(number),
                    RECEIVABLE_ACCOUNT,
                    "",
                    amount(minor),
                    p.currency,
                    f"applied to invoice {number}",
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
        common = [key, r.occurred_on.isoformat(), r.payment_token, r.processor_ref or "",
                  _safe(r.client_name), _safe(r.client_remote_id)]
        what = {"refund": f"refund {r.reference}", "dispute": f"dispute {r.reference}",
                "dispute_won": f"dispute {r.reference} won"}[r.kind]
        clearing = amount(r.amount_minor)
        debit, credit = ("", clearing) if back else (clearing, "")
        rows = [[*common, "", CLEARING_ACCOUNT, debit, credit, r.currency, f"{what} of {r.payment_token}"]]
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

    def push_payment(self, payment: JournalPayment, *, key: str) -> str:
        """Append the payment's entry unless `key` is already there; returns `key` as the reference."""
        if sum(a for _, a in payment.allocations) + payment.surcharge_minor != payment.amount_minor:
            # Unapplied money is not silently parked: the ledger must allocate every minor unit.
            raise ValueError(f"payment {payment.payment_token}: allocations do not add up to the amount")
        return self._append(key, self.entry_lines(payment, key))

    def _append(self, key: str, lines: list[list[str]]) -> str:
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
