"""Read-side SQL of the portal. Every function takes the client id of the session and filters by it.

Invoices a client sees are approved and open at the source (void and deleted ones are hidden);
"paid" is an invoice whose balance is down to zero. Balances and statuses come from
app.web.invoice_rows (summed over the client's own allocations). Dates are compared with
`today`, the MSP's local date, as ISO text (`due_on` is a local date).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date

from app.config import Config
from app.core import approvals
from app.core.store import Store
from app.web.invoice_list import CurrencyTotal
from app.web.invoice_rows import COLUMNS, IN_FLIGHT, InvoiceRow, client_invoices_cte, row_from_sql

PER_PAGE = 50
_OWED = "kind != 'credit_memo' AND balance_minor > 0"

__all__ = ["CurrencyTotal", "InvoiceRow"]


def thresholds(store: Store, config: Config, client_id: int) -> dict[str, int]:
    """The client's approval threshold per currency it is invoiced in (minor units)."""
    currencies = {r[0] for r in store.all("SELECT DISTINCT currency FROM invoices WHERE client_id = ?",
                                          (client_id,))}
    return approvals.thresholds_by_currency(
        store.db, client_id=client_id, currencies=currencies, default=config.portal.approval_threshold
    )


def _select(thresholds_: dict[str, int], where: str, tail: str = "") -> str:
    return f"{client_invoices_cte(thresholds_)} SELECT {COLUMNS} FROM inv WHERE {where} {tail}"


@dataclass(frozen=True)
class CreditTotal:
    currency: str
    credit_minor: int
    count: int


@dataclass(frozen=True)
class DueTotal:
    """What the client owes in one currency, as home shows it.

    `open_minor` is every open invoice's balance less payments still in flight (a bank payment
    clearing: `processing_minor`, shown apart so nobody pays twice), whatever its due date; it
    splits into `overdue_minor` (due before today), `due_today_minor` and `not_yet_due_minor`.
    `payable_minor` is the same less invoices waiting for an approver (`awaiting_approval_minor`),
    `payable_by_kind` that by invoice kind ("Pay all open invoices" takes the kinds paid online:
    app.web.payment_rules.pay_all_kinds). Credits are not netted (see `credit_totals`)."""

    currency: str
    open_minor: int
    overdue_minor: int
    due_today_minor: int
    processing_minor: int
    payable_minor: int
    payable_by_kind: tuple[tuple[str, int], ...] = ()

    @property
    def not_yet_due_minor(self) -> int:
        return self.open_minor - self.overdue_minor - self.due_today_minor

    @property
    def awaiting_approval_minor(self) -> int:
        return self.open_minor - self.payable_minor


def due_totals(
    store: Store, client_id: int, today: date, th: dict[str, int] | None = None
) -> list[DueTotal]:
    """What the client owes in each currency (credits not netted), apart from what is being paid."""
    left = "MAX(0, balance_minor - reserved_minor)"
    # One pass, by currency and kind: the currency's figures are the sums of its kinds' rows.
    rows = store.all(
        f"{client_invoices_cte(th or {})} SELECT currency, kind, "
        f"SUM({left}) AS open_minor, "
        f"SUM(CASE WHEN due_on < :today THEN {left} ELSE 0 END) AS overdue_minor, "
        f"SUM(CASE WHEN due_on = :today THEN {left} ELSE 0 END) AS due_today_minor, "
        f"SUM(MIN(balance_minor, reserved_minor)) AS processing_minor, "
        f"SUM(CASE WHEN awaits_approval THEN 0 ELSE {left} END) AS payable_minor "
        f"FROM inv WHERE {_OWED} GROUP BY currency, kind ORDER BY currency, kind",
        {"client": client_id, "today": today.isoformat()},
    )
    sums = ("open_minor", "overdue_minor", "due_today_minor", "processing_minor", "payable_minor")
    totals: dict[str, list[int]] = {}
    by_kind: dict[str, list[tuple[str, int]]] = {}
    for r in rows:
        figures = totals.setdefault(r["currency"], [0] * len(sums))
        for n, name in enumerate(sums):
            figures[n] += r[name]
        by_kind.setdefault(r["currency"], []).append((r["kind"], r["payable_minor"]))
    return [DueTotal(currency, *figures, tuple(by_kind[currency])) for currency, figures in totals.items()]


def credit_totals(store: Store, client_id: int, today: date) -> list[CreditTotal]:
    """Credit memos not yet used up, per currency (positive amounts of credit available)."""
    rows = store.all(
        f"{client_invoices_cte({})} SELECT currency, -SUM(balance_minor) AS credit_minor, COUNT(*) AS n "
        f"FROM inv WHERE kind = 'credit_memo' AND balance_minor < 0 GROUP BY currency ORDER BY currency",
        {"client": client_id, "today": today.isoformat()},
    )
    return [CreditTotal(r["currency"], r["credit_minor"], r["n"]) for r in rows]


def open_invoices(
    store: Store, client_id: int, today: date, *, limit: int | None = None, th: dict[str, int] | None = None
) -> list[InvoiceRow]:
    """Owed invoices, most urgent (earliest due) first."""
    params: dict[str, object] = {"client": client_id, "today": today.isoformat()}
    tail = "ORDER BY due_on, length(number), number"
    if limit is not None:
        tail += " LIMIT :limit"
        params["limit"] = limit
    return [row_from_sql(r, today) for r in store.all(_select(th or {}, _OWED, tail), params)]


def find_invoice(
    store: Store, client_id: int, token: str, today: date, th: dict[str, int] | None = None
) -> InvoiceRow | None:
    r = store.one(_select(th or {}, "token = :token"),
                  {"client": client_id, "token": token, "today": today.isoformat()})
    return None if r is None else row_from_sql(r, today)


def find_invoices(
    store: Store, client_id: int, tokens: list[str], today: date, th: dict[str, int] | None = None
) -> list[InvoiceRow] | None:
    """The visible invoices named by `tokens`, in that order; None if any token is not this client's."""
    wanted = list(dict.fromkeys(tokens))
    if not wanted:
        return []
    params: dict[str, object] = {"client": client_id, "today": today.isoformat()}
    params.update({f"t{n}": t for n, t in enumerate(wanted)})
    marks = ", ".join(f":t{n}" for n in range(len(wanted)))
    rows = store.all(_select(th or {}, f"token IN ({marks})"), params)
    found = {r["token"]: row_from_sql(r, today) for r in rows}
    if len(found) != len(wanted):
        return None
    return [found[t] for t in wanted]


def invoice_lines(store: Store, invoice_id: int) -> list[sqlite3.Row]:
    return store.all("SELECT * FROM invoice_lines WHERE invoice_id = ? ORDER BY line_no", (invoice_id,))


def invoice_payments(store: Store, client_id: int, invoice_id: int) -> list[sqlite3.Row]:
    """Payments that count (or are about to count) toward the invoice, with the part applied to it."""
    return store.all(
        "SELECT p.id, p.token, p.method, p.status, p.created_at, p.succeeded_at, a.currency, ml.brand, "
        "ml.last4, ml.bank_name, SUM(a.amount_minor) AS amount_minor FROM allocations a "
        "JOIN payments p ON p.id = a.payment_id LEFT JOIN payment_method_labels ml ON ml.payment_id = p.id "
        f"WHERE a.invoice_id = ? AND p.client_id = ? AND p.status IN ('succeeded', {_in_flight()}) "
        "GROUP BY p.id ORDER BY p.created_at, p.id",
        (invoice_id, client_id),
    )


def _in_flight() -> str:
    return ", ".join(f"'{s}'" for s in IN_FLIGHT)


_PAYMENT_COLUMNS = (
    "p.id, p.token, p.method, p.amount_minor, p.currency, p.status, p.created_at, p.succeeded_at, "
    "p.updated_at, p.failure_reason, p.initiated_by, ml.brand, ml.last4, ml.bank_name, "
    "(SELECT group_concat(number, ', ') FROM (SELECT DISTINCT i.number FROM allocations a "
    "JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = p.id ORDER BY i.number)) AS invoice_numbers"
)
_PAYMENTS = "FROM payments p LEFT JOIN payment_method_labels ml ON ml.payment_id = p.id"
# Checkouts that never reached the processor (abandoned, or replaced by a newer checkout) charged
# nothing, so they are not shown.
_SHOWN = "p.status != 'pending' AND NOT (p.status = 'canceled' AND p.processor_ref IS NULL)"


def list_payments(store: Store, client_id: int, *, page: int = 1) -> tuple[list[sqlite3.Row], int, int]:
    """Payments of the client that reached the processor, newest first, a page at a time."""
    count = int(store.scalar(f"SELECT COUNT(*) FROM payments p WHERE p.client_id = ? AND {_SHOWN}",
                             (client_id,)) or 0)
    pages = max(1, -(-count // PER_PAGE))
    page = min(max(1, page), pages)
    rows = store.all(
        f"SELECT {_PAYMENT_COLUMNS} {_PAYMENTS} WHERE p.client_id = ? AND {_SHOWN} "
        "ORDER BY p.created_at DESC, p.id DESC LIMIT ? OFFSET ?",
        (client_id, PER_PAGE, (page - 1) * PER_PAGE),
    )
    return rows, page, pages


def last_payment(store: Store, client_id: int) -> sqlite3.Row | None:
    return store.one(
        f"SELECT {_PAYMENT_COLUMNS} {_PAYMENTS} WHERE p.client_id = ? "
        "AND p.status NOT IN ('pending', 'canceled') "
        "ORDER BY p.created_at DESC, p.id DESC LIMIT 1",
        (client_id,),
    )


def find_payment(store: Store, client_id: int, token: str) -> sqlite3.Row | None:
    return store.one(
        f"SELECT {_PAYMENT_COLUMNS} {_PAYMENTS} WHERE p.client_id = ? AND p.token = ?", (client_id, token)
    )


def receipt_sent(store: Store, payment_id: int) -> bool:
    """True once the outbox delivered the payment's receipt email (not merely queued it)."""
    from app.core.keys import derive_key

    return store.scalar(
        "SELECT status = 'done' FROM outbox WHERE idem_key = ?", (derive_key("receipt", payment=payment_id),)
    ) == 1


def payment_lines(store: Store, client_id: int, payment_id: int) -> list[sqlite3.Row]:
    """What one payment of client `client_id` applies to each invoice, with the invoice's company
    (a parent's payment may cover its children's invoices); `is_visible`: the invoice page exists."""
    return store.all(
        "SELECT i.token, i.number, a.currency, SUM(a.amount_minor) AS amount_minor, "
        "(i.status = 'open' AND i.is_approved = 1) AS is_visible, c.name AS client_name "
        "FROM allocations a JOIN invoices i ON i.id = a.invoice_id JOIN clients c ON c.id = i.client_id "
        "JOIN payments p ON p.id = a.payment_id "
        "WHERE a.payment_id = ? AND p.client_id = ? GROUP BY i.id "
        "ORDER BY i.client_id != p.client_id, c.name COLLATE NOCASE, length(i.number), i.number",
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
