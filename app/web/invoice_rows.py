"""One invoice as the portal shows it, and the SQL that computes it for one client at a time.

Balances are summed from the client's own allocations (`paid` below) rather than from the
`invoice_balances` view: the view groups every invoice in the database, so joining it made each
page aggregate all clients' ledgers. The figures are the same: allocations count once their
payment succeeded; `reserved_minor` is what payments still in flight would take.
Status is decided in SQL (so it can be filtered and sorted) in this order: credit, paid,
processing, in dispute, awaiting approval, overdue, due today, partly paid, not yet due.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import date

IN_FLIGHT = ("submitted", "requires_action", "processing")
_IN_FLIGHT_SQL = ", ".join(f"'{s}'" for s in IN_FLIGHT)

STATUS_LABELS = {
    "credit": "Credit",
    "paid": "Paid",
    "processing": "Payment pending",
    "in_dispute": "In dispute",
    "awaiting_approval": "Awaiting approval",
    "overdue": "Overdue",
    "due_today": "Due today",
    "partly_paid": "Partly paid",
    "not_yet_due": "Not yet due",
}
# Most urgent first: the order of "sort by status".
STATUS_RANK = (
    "overdue",
    "due_today",
    "awaiting_approval",
    "in_dispute",
    "processing",
    "partly_paid",
    "not_yet_due",
    "paid",
    "credit",
)

COLUMNS = (
    "id, token, number, kind, issued_on, due_on, currency, subtotal_minor, tax_minor, total_minor, "
    "paid_elsewhere_minor, agreement, project, phase, ticket, description, paid_minor, reserved_minor, "
    "balance_minor, in_dispute, awaits_approval, status_key, reference"
)


def approval_sql(thresholds: dict[str, int]) -> str:
    """SQL truth value: the invoice needs an approver and has none at its current total.

    `thresholds` maps currency -> minor units (app.core.approvals.thresholds_by_currency); the
    values are ints and the keys checked ISO codes, so they are inlined safely.
    """
    if not thresholds:
        return "0"
    cases = " ".join(
        f"WHEN '{c}' THEN {int(v)}" for c, v in thresholds.items() if c.isalpha() and len(c) == 3
    )
    return (
        f"(i.kind != 'credit_memo' AND i.total_minor > (CASE i.currency {cases} END) AND NOT EXISTS ("
        "SELECT 1 FROM invoice_approvals ap WHERE ap.invoice_id = i.id "
        "AND (ap.approved_total_minor IS NULL OR ap.approved_total_minor = i.total_minor)))"
    )


def client_invoices_cte(thresholds: dict[str, int]) -> str:
    """`WITH ... inv AS (...)`: the visible invoices of client `:client` with balance and status.

    Parameters: `:client` (client id) and `:today` (the MSP's local date, ISO).
    """
    return f"""WITH paid AS (
    SELECT a.invoice_id,
           SUM(CASE WHEN p.status = 'succeeded' THEN a.amount_minor ELSE 0 END) AS paid_minor,
           SUM(CASE WHEN p.status IN ({_IN_FLIGHT_SQL}) THEN a.amount_minor ELSE 0 END) AS reserved_minor
    FROM invoices ci JOIN allocations a ON a.invoice_id = ci.id JOIN payments p ON p.id = a.payment_id
    WHERE ci.client_id = :client
    GROUP BY a.invoice_id
), disputed AS (
    SELECT DISTINCT invoice_id FROM open_line_disputes WHERE client_id = :client
), base AS (
    SELECT i.id, i.token, i.number, i.kind, i.issued_on, i.due_on, i.currency, i.subtotal_minor,
           i.tax_minor, i.total_minor, i.paid_elsewhere_minor, i.agreement, i.project, i.phase, i.ticket,
           i.description,
           COALESCE(paid.paid_minor, 0) AS paid_minor,
           COALESCE(paid.reserved_minor, 0) AS reserved_minor,
           i.total_minor - i.paid_elsewhere_minor - COALESCE(paid.paid_minor, 0) AS balance_minor,
           i.id IN disputed AS in_dispute,
           {approval_sql(thresholds)} AS awaits_approval,
           COALESCE(CASE WHEN i.project IS NOT NULL AND i.phase IS NOT NULL THEN i.project || ' · ' || i.phase
                         ELSE i.project END,
                    i.agreement,
                    CASE WHEN i.ticket IS NOT NULL THEN 'Ticket ' || i.ticket END,
                    i.description, '') AS reference
    FROM invoices i LEFT JOIN paid ON paid.invoice_id = i.id
    WHERE i.client_id = :client AND i.status = 'open' AND i.is_approved = 1
), inv AS (
    SELECT base.*,
           CASE
             WHEN kind = 'credit_memo' THEN 'credit'
             WHEN balance_minor <= 0 THEN 'paid'
             WHEN reserved_minor > 0 THEN 'processing'
             WHEN in_dispute THEN 'in_dispute'
             WHEN awaits_approval THEN 'awaiting_approval'
             WHEN due_on < :today THEN 'overdue'
             WHEN due_on = :today THEN 'due_today'
             WHEN balance_minor < total_minor THEN 'partly_paid'
             ELSE 'not_yet_due'
           END AS status_key
    FROM base
)
"""


@dataclass(frozen=True)
class InvoiceRow:
    id: int
    token: str
    number: str
    kind: str
    issued_on: str
    due_on: str
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    paid_elsewhere_minor: int
    agreement: str | None
    project: str | None
    phase: str | None
    ticket: str | None
    description: str | None
    paid_minor: int
    reserved_minor: int
    balance_minor: int
    in_dispute: bool
    awaits_approval: bool
    status_key: str
    reference: str
    today: date = field(repr=False)

    @property
    def is_credit(self) -> bool:
        return self.kind == "credit_memo"

    @property
    def credit_minor(self) -> int:
        """What a credit memo still offers (positive), 0 for an invoice or a used-up credit."""
        return max(0, -self.balance_minor) if self.is_credit else 0

    @property
    def payable_minor(self) -> int:
        """What may be charged now: the balance less payments in flight; 0 while awaiting approval."""
        if self.is_credit or self.awaits_approval:
            return 0
        return max(0, self.balance_minor - self.reserved_minor)

    @property
    def owed_minor(self) -> int:
        return 0 if self.is_credit else max(0, self.balance_minor)

    @property
    def days_overdue(self) -> int:
        return max(0, (self.today - date.fromisoformat(self.due_on)).days)

    @property
    def is_partly_paid(self) -> bool:
        return not self.is_credit and 0 < self.balance_minor < self.total_minor

    @property
    def status(self) -> str:
        return self.status_key

    @property
    def status_label(self) -> str:
        label = STATUS_LABELS.get(self.status_key, self.status_key)
        if self.status_key == "overdue":
            n = self.days_overdue
            label = f"Overdue {n} day{'s' if n != 1 else ''}"
            # A no-break space keeps the dot on the first line when a narrow column wraps the badge.
            return label + ("\u00a0· partly paid" if self.is_partly_paid else "")
        return label


def row_from_sql(r: sqlite3.Row, today: date) -> InvoiceRow:
    values = dict(zip(r.keys(), tuple(r), strict=True))
    values["in_dispute"] = bool(values["in_dispute"])
    values["awaits_approval"] = bool(values["awaits_approval"])
    return InvoiceRow(**values, today=today)
