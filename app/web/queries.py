"""Read-side SQL of the portal. Every function takes the client id of the session and filters by it.

Invoices a client sees are approved and open at the source (void and deleted ones are hidden);
"paid" is an open invoice whose balance (from the `invoice_balances` view) is down to zero.
Dates are compared with `today`, the MSP's local date, as ISO text (`due_on` is a local date).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from app.core.store import Store

PER_PAGE = 50
IN_FLIGHT = ("submitted", "requires_action", "processing")
StatusFilter = Literal["open", "overdue", "paid", "all"]

_INVOICE_COLUMNS = (
    "i.id, i.token, i.number, i.kind, i.issued_on, i.due_on, i.currency, i.subtotal_minor, i.tax_minor, "
    "i.total_minor, i.paid_elsewhere_minor, i.agreement, i.project, i.phase, i.ticket, i.description, "
    "b.paid_minor, b.reserved_minor, b.balance_minor"
)
_VISIBLE = "i.client_id = :client AND i.status = 'open' AND i.is_approved = 1"
_OWED = "b.balance_minor > 0 AND i.kind != 'credit_memo'"
_FROM = f"FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id WHERE {_VISIBLE}"
_SORTS = {
    "date": ("i.issued_on",),
    "due": ("i.due_on",),
    # Natural order for numbers sharing a prefix: INV-999 before INV-1000.
    "number": ("length(i.number)", "i.number"),
    "balance": ("b.balance_minor",),
}


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
    today: date = field(repr=False)

    @property
    def is_credit(self) -> bool:
        return self.kind == "credit_memo"

    @property
    def payable_minor(self) -> int:
        """What may still be charged: the balance less what payments in flight would take."""
        if self.is_credit:
            return 0
        return max(0, self.balance_minor - self.reserved_minor)

    @property
    def days_overdue(self) -> int:
        return max(0, (self.today - date.fromisoformat(self.due_on)).days)

    @property
    def is_partly_paid(self) -> bool:
        return 0 < self.balance_minor < self.total_minor

    @property
    def status(self) -> str:
        """credit, paid, processing, overdue, due_today, partly_paid or open."""
        if self.is_credit:
            return "credit"
        if self.balance_minor <= 0:
            return "paid"
        if self.reserved_minor > 0:
            return "processing"
        if self.days_overdue > 0:
            return "overdue"
        if self.due_on == self.today.isoformat():
            return "due_today"
        return "partly_paid" if self.is_partly_paid else "open"

    @property
    def status_label(self) -> str:
        status = self.status
        if status == "overdue":
            n = self.days_overdue
            label = f"Overdue {n} day{'s' if n != 1 else ''}"
            return label + (" · partly paid" if self.is_partly_paid else "")
        return {
            "credit": "Credit",
            "paid": "Paid",
            "processing": "Processing",
            "due_today": "Due today",
            "partly_paid": "Partly paid",
            "open": "Open",
        }[status]

    @property
    def reference(self) -> str:
        """The project (and phase), agreement or ticket the invoice belongs to."""
        if self.project:
            return f"{self.project} · {self.phase}" if self.phase else self.project
        return self.agreement or (f"Ticket {self.ticket}" if self.ticket else "")


@dataclass(frozen=True)
class InvoiceFilters:
    kind: str = ""
    status: StatusFilter = "open"
    q: str = ""
    sort: str = "due"
    direction: Literal["asc", "desc"] = "asc"
    page: int = 1


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    total_minor: int
    balance_minor: int
    overdue_minor: int = 0


@dataclass(frozen=True)
class InvoicePage:
    rows: list[InvoiceRow]
    count: int
    page: int
    pages: int
    totals: list[CurrencyTotal]


def _row(r: sqlite3.Row, today: date) -> InvoiceRow:
    # NOTE: iterating a sqlite3.Row yields values, so the keys are zipped in explicitly.
    return InvoiceRow(**dict(zip(r.keys(), tuple(r), strict=True)), today=today)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_invoices(store: Store, client_id: int, today: date, f: InvoiceFilters) -> InvoicePage:
    where: list[str] = []
    params: dict[str, object] = {"client": client_id, "today": today.isoformat()}
    if f.kind:
        where.append("i.kind = :kind")
        params["kind"] = f.kind
    if f.status in ("open", "overdue"):
        where.append(_OWED)
    if f.status == "overdue":
        where.append("i.due_on < :today")
    if f.status == "paid":
        where.append("b.balance_minor <= 0 AND i.kind != 'credit_memo'")
    if f.q:
        params["q"] = _like(f.q)
        columns = ("number", "description", "ticket", "project", "agreement")
        on_invoice = " OR ".join(f"i.{c} LIKE :q ESCAPE '\\'" for c in columns)
        on_lines = " OR ".join(f"l.{c} LIKE :q ESCAPE '\\'" for c in ("description", "ticket", "project"))
        where.append(
            f"({on_invoice} OR EXISTS (SELECT 1 FROM invoice_lines l "
            f"WHERE l.invoice_id = i.id AND ({on_lines})))"
        )
    cond = "".join(f" AND {w}" for w in where)
    totals = [
        CurrencyTotal(r["currency"], r["total_minor"], r["balance_minor"])
        for r in store.all(
            f"SELECT i.currency, SUM(i.total_minor) AS total_minor, "
            f"SUM(b.balance_minor) AS balance_minor {_FROM}{cond} "
            f"GROUP BY i.currency ORDER BY i.currency",
            params,
        )
    ]
    count = int(store.scalar(f"SELECT COUNT(*) {_FROM}{cond}", params) or 0)
    pages = max(1, -(-count // PER_PAGE))
    page = min(max(1, f.page), pages)
    direction = "DESC" if f.direction == "desc" else "ASC"
    order = ", ".join(f"{col} {direction}" for col in _SORTS.get(f.sort, _SORTS["due"]))
    params.update(limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
    rows = store.all(
        f"SELECT {_INVOICE_COLUMNS} {_FROM}{cond} ORDER BY {order}, i.id {direction} "
        f"LIMIT :limit OFFSET :offset",
        params,
    )
    return InvoicePage([_row(r, today) for r in rows], count, page, pages, totals)


def due_totals(store: Store, client_id: int, today: date) -> list[CurrencyTotal]:
    """What the client owes in each currency, and how much of it is past due."""
    rows = store.all(
        f"SELECT i.currency, SUM(i.total_minor) AS total_minor, SUM(b.balance_minor) AS balance_minor, "
        f"SUM(CASE WHEN i.due_on < :today THEN b.balance_minor ELSE 0 END) AS overdue_minor "
        f"{_FROM} AND {_OWED} GROUP BY i.currency ORDER BY i.currency",
        {"client": client_id, "today": today.isoformat()},
    )
    return [
        CurrencyTotal(r["currency"], r["total_minor"], r["balance_minor"], r["overdue_minor"]) for r in rows
    ]


def open_invoices(store: Store, client_id: int, today: date, *, limit: int | None = None) -> list[InvoiceRow]:
    """Owed invoices, most urgent (earliest due) first."""
    sql = f"SELECT {_INVOICE_COLUMNS} {_FROM} AND {_OWED} ORDER BY i.due_on, length(i.number), i.number"
    params: dict[str, object] = {"client": client_id}
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [_row(r, today) for r in store.all(sql, params)]


def find_invoice(store: Store, client_id: int, token: str, today: date) -> InvoiceRow | None:
    r = store.one(
        f"SELECT {_INVOICE_COLUMNS} {_FROM} AND i.token = :token", {"client": client_id, "token": token}
    )
    return None if r is None else _row(r, today)


def find_invoices(store: Store, client_id: int, tokens: list[str], today: date) -> list[InvoiceRow] | None:
    """The visible invoices named by `tokens`, in that order; None if any token is not this client's."""
    found: list[InvoiceRow] = []
    for token in dict.fromkeys(tokens):
        row = find_invoice(store, client_id, token, today)
        if row is None:
            return None
        found.append(row)
    return found


def invoice_lines(store: Store, invoice_id: int) -> list[sqlite3.Row]:
    return store.all("SELECT * FROM invoice_lines WHERE invoice_id = ? ORDER BY line_no", (invoice_id,))


def invoice_payments(store: Store, client_id: int, invoice_id: int) -> list[sqlite3.Row]:
    """Payments that count (or are about to count) toward the invoice, with the part applied to it."""
    return store.all(
        "SELECT p.token, p.method, p.status, p.created_at, p.succeeded_at, a.currency, "
        "SUM(a.amount_minor) AS amount_minor FROM allocations a JOIN payments p ON p.id = a.payment_id "
        f"WHERE a.invoice_id = ? AND p.client_id = ? AND p.status IN ('succeeded', {_in_flight()}) "
        "GROUP BY p.id ORDER BY p.created_at, p.id",
        (invoice_id, client_id),
    )


def _in_flight() -> str:
    return ", ".join(f"'{s}'" for s in IN_FLIGHT)


_PAYMENT_COLUMNS = (
    "p.id, p.token, p.method, p.amount_minor, p.currency, p.status, p.created_at, p.succeeded_at, "
    "p.failure_reason, (SELECT group_concat(number, ', ') FROM (SELECT DISTINCT i.number FROM allocations a "
    "JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = p.id ORDER BY i.number)) AS invoice_numbers"
)


def list_payments(store: Store, client_id: int, *, page: int = 1) -> tuple[list[sqlite3.Row], int, int]:
    """Payments of the client, newest first, without checkouts that never reached the processor
    (abandoned, or replaced by a newer checkout): nothing was charged, so nothing is shown."""
    where = ("FROM payments p WHERE p.client_id = ? AND p.status != 'pending' "
             "AND NOT (p.status = 'canceled' AND p.processor_ref IS NULL)")
    count = int(store.scalar(f"SELECT COUNT(*) {where}", (client_id,)) or 0)
    pages = max(1, -(-count // PER_PAGE))
    page = min(max(1, page), pages)
    rows = store.all(
        f"SELECT {_PAYMENT_COLUMNS} {where} ORDER BY p.created_at DESC, p.id DESC LIMIT ? OFFSET ?",
        (client_id, PER_PAGE, (page - 1) * PER_PAGE),
    )
    return rows, page, pages


def last_payment(store: Store, client_id: int) -> sqlite3.Row | None:
    return store.one(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments p WHERE p.client_id = ? "
        "AND p.status NOT IN ('pending', 'canceled') "
        "ORDER BY p.created_at DESC, p.id DESC LIMIT 1",
        (client_id,),
    )


def find_payment(store: Store, client_id: int, token: str) -> sqlite3.Row | None:
    return store.one(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments p WHERE p.client_id = ? AND p.token = ?", (client_id, token)
    )


def payment_lines(store: Store, client_id: int, payment_id: int) -> list[sqlite3.Row]:
    """What one payment applies to each invoice; `is_visible` says whether the invoice page exists."""
    return store.all(
        "SELECT i.token, i.number, a.currency, SUM(a.amount_minor) AS amount_minor, "
        "(i.status = 'open' AND i.is_approved = 1) AS is_visible "
        "FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "WHERE a.payment_id = ? AND i.client_id = ? GROUP BY i.id ORDER BY length(i.number), i.number",
        (payment_id, client_id),
    )


def client_tokens(store: Store, client_ids: list[int]) -> dict[int, str]:
    marks = ", ".join("?" * len(client_ids))
    return {
        r["id"]: r["token"]
        for r in store.all(f"SELECT id, token FROM clients WHERE id IN ({marks})", client_ids)
    }


def client_by_token(store: Store, token: str) -> int | None:
    return store.scalar("SELECT id FROM clients WHERE token = ?", (token,))
