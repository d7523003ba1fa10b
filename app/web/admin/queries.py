"""Read-side SQL of the admin console (lists and details); the dashboard's figures are in
app/core/reports.py. Unlike the portal's queries these see every client.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from app.core import reports
from app.core.client_overrides import get_overrides
from app.core.payment_refs import parse_payment_reference
from app.core.store import Store
from app.web.admin import entity_scope

PER_PAGE = 50
_OWED = (
    "FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id WHERE i.status = 'open' "
    "AND i.is_approved = 1 AND i.kind != 'credit_memo' AND b.balance_minor > 0"
)  # what the client owes: the same invoices as open AR (app/core/reports.py)


def pages(count: int, page: int) -> tuple[int, int]:
    """(page clamped to the range, number of pages)."""
    total = max(1, -(-count // PER_PAGE))
    return min(max(1, page), total), total


def like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass
class ClientSummary:
    id: int
    name: str
    identifier: str | None
    balances: dict[str, int] = field(default_factory=dict)
    overdue: dict[str, int] = field(default_factory=dict)
    last_payment_at: str | None = None
    autopay: str = "not set up"


def autopay_state(store: Store, client_id: int, on: set[int] | None) -> str:
    """ "on", "off", "paused", "not allowed" or "not set up" (autopay not in this build yet)."""
    ov = get_overrides(store.db, client_id)
    if not ov.autopay_allowed:
        return "not allowed"
    if on is None:
        return "not set up"
    if client_id not in on:
        return "off"
    return "paused" if ov.is_paused else "on"


def list_clients(
    store: Store, today: date, *, q: str = "", overdue_only: bool = False, page: int = 1,
    entity_id: int | None = None,
) -> tuple[list[ClientSummary], int, int, int]:
    """(clients on the page, count, page, pages), by name; balances and overdue by currency."""
    where = ""
    params: list[Any] = []
    if entity_id is not None:  # the admin's entity filter
        where, params = "WHERE c.entity_id = ?", [entity_id]
    if q:
        where += (" AND " if where else "WHERE ") + (
            "(c.name LIKE ? ESCAPE '\\' OR c.identifier LIKE ? ESCAPE '\\')"
        )
        params += [like(q), like(q)]
    if overdue_only:
        where += (" AND " if where else "WHERE ") + (
            f"EXISTS (SELECT 1 {_OWED} AND i.client_id = c.id AND i.due_on < ?)"
        )
        params.append(today.isoformat())
    count = int(store.scalar(f"SELECT COUNT(*) FROM clients c {where}", params) or 0)
    page, total_pages = pages(count, page)
    rows = store.all(
        f"SELECT c.id, c.name, c.identifier, (SELECT MAX(p.succeeded_at) FROM payments p "
        f"WHERE p.client_id = c.id AND p.status = 'succeeded') AS last_payment_at "
        f"FROM clients c {where} ORDER BY c.name COLLATE NOCASE, c.id LIMIT ? OFFSET ?",
        [*params, PER_PAGE, (page - 1) * PER_PAGE],
    )
    out = {
        r["id"]: ClientSummary(r["id"], r["name"], r["identifier"], last_payment_at=r["last_payment_at"])
        for r in rows
    }
    _fill_balances(store, today, out)
    return list(out.values()), count, page, total_pages


def client_summary(store: Store, today: date, client_id: int) -> ClientSummary | None:
    r = store.one(
        "SELECT c.id, c.name, c.identifier, (SELECT MAX(p.succeeded_at) FROM payments p "
        "WHERE p.client_id = c.id AND p.status = 'succeeded') AS last_payment_at "
        "FROM clients c WHERE c.id = ?",
        (client_id,),
    )
    if r is None:
        return None
    out = {r["id"]: ClientSummary(r["id"], r["name"], r["identifier"], last_payment_at=r["last_payment_at"])}
    _fill_balances(store, today, out)
    return out[client_id]


def _fill_balances(store: Store, today: date, out: dict[int, ClientSummary]) -> None:
    if out:
        marks = ",".join("?" * len(out))
        for r in store.all(
            f"SELECT i.client_id, i.currency, SUM(b.balance_minor) AS balance, "
            f"SUM(CASE WHEN i.due_on < ? THEN b.balance_minor ELSE 0 END) AS overdue {_OWED} "
            f"AND i.client_id IN ({marks}) GROUP BY i.client_id, i.currency",
            [today.isoformat(), *out],
        ):
            out[r["client_id"]].balances[r["currency"]] = r["balance"]
            if r["overdue"]:
                out[r["client_id"]].overdue[r["currency"]] = r["overdue"]
        on = reports.autopay_clients(store.db)
        for summary in out.values():
            summary.autopay = autopay_state(store, summary.id, on)


def client(store: Store, client_id: int) -> sqlite3.Row | None:
    return store.one("SELECT * FROM clients WHERE id = ?", (client_id,))


def contacts(store: Store, client_id: int) -> list[sqlite3.Row]:
    """Contacts with their portal login (if the person set one up) and last sign-in."""
    return store.all(
        "SELECT ct.*, l.last_login_at, l.password_hash IS NOT NULL AS has_password FROM contacts ct "
        "LEFT JOIN logins l ON l.email = ct.email WHERE ct.client_id = ? "
        "ORDER BY ct.is_active DESC, ct.role, ct.last_name, ct.first_name",
        (client_id,),
    )


def invoice_status(row: sqlite3.Row, today: date) -> str:
    if row["status"] != "open":
        return row["status"]
    if row["kind"] == "credit_memo":
        return "credit"
    if not row["is_approved"]:
        return "not yet sent"
    if row["balance_minor"] <= 0:
        return "paid"
    if row["reserved_minor"] > 0:
        return "processing"
    days = (today - date.fromisoformat(row["due_on"])).days
    if days > 0:
        return f"overdue {days} day{'s' if days != 1 else ''}"
    return "partly paid" if row["balance_minor"] < row["total_minor"] else "open"


def client_invoices(store: Store, client_id: int, *, open_only: bool = False) -> list[sqlite3.Row]:
    """The client's invoices, newest due first; `open_only`: what may still be paid, oldest due first."""
    extra = " AND i.status = 'open' AND i.kind != 'credit_memo' AND b.balance_minor > 0" if open_only else ""
    order = "ASC" if open_only else "DESC"
    return store.all(
        "SELECT i.id, i.token, i.number, i.kind, i.status, i.is_approved, i.issued_on, i.due_on, i.currency, "
        "i.total_minor, b.paid_minor, b.reserved_minor, b.balance_minor FROM invoices i "
        f"JOIN invoice_balances b ON b.invoice_id = i.id WHERE i.client_id = ?{extra} "
        f"ORDER BY i.due_on {order}, length(i.number) {order}, i.number {order} LIMIT 500",
        (client_id,),
    )


_PAYMENT_COLUMNS = (
    "p.id, p.token, p.client_id, p.method, p.amount_minor, p.currency, p.status, p.created_at, "
    "p.succeeded_at, "
    "p.failure_reason, p.processor_ref, p.initiated_by, c.name AS client_name, m.reference, m.received_on, "
    "l.brand, l.last4, l.bank_name, "
    "(SELECT group_concat(number, ', ') FROM (SELECT DISTINCT i.number FROM allocations a "
    "JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = p.id ORDER BY i.number)) AS invoice_numbers"
)
_PAYMENT_FROM = (
    "FROM payments p JOIN clients c ON c.id = p.client_id LEFT JOIN manual_payments m ON m.payment_id = p.id "
    "LEFT JOIN payment_method_labels l ON l.payment_id = p.id"
)


@dataclass(frozen=True)
class PaymentFilters:
    status: str = ""
    method: str = ""
    client_id: int | None = None
    q: str = ""
    entity_id: int | None = None  # the admin's entity filter


def _payment_where(f: PaymentFilters) -> tuple[str, list[Any]]:
    where = ["p.status != 'pending'"]  # abandoned checkouts are noise here
    params: list[Any] = []
    if f.status:
        where.append("p.status = ?")
        params.append(f.status)
    if f.method:
        where.append("p.method = ?")
        params.append(f.method)
    if f.client_id is not None:
        where.append("p.client_id = ?")
        params.append(f.client_id)
    if f.entity_id is not None:
        where.append("c.entity_id = ?")
        params.append(f.entity_id)
    if f.q:
        # A client's name, a cheque or wire reference, the "PAY-000123" people quote, the token in
        # links and emails, or Stripe's PaymentIntent or charge id.
        where.append(
            "(c.name LIKE ? ESCAPE '\\' OR m.reference LIKE ? ESCAPE '\\' OR p.id = ? OR p.token = ? "
            "OR p.processor_ref = ? OR p.charge_ref = ?)"
        )
        params += [like(f.q), like(f.q), parse_payment_reference(f.q) or -1, f.q, f.q, f.q]
    return " WHERE " + " AND ".join(where), params


def list_payments(
    store: Store, f: PaymentFilters, *, page: int = 1, limit: int | None = PER_PAGE
) -> tuple[list[sqlite3.Row], int, int, int]:
    where, params = _payment_where(f)
    count = int(store.scalar(f"SELECT COUNT(*) {_PAYMENT_FROM}{where}", params) or 0)
    page, total_pages = pages(count, page)
    sql = f"SELECT {_PAYMENT_COLUMNS} {_PAYMENT_FROM}{where} ORDER BY p.created_at DESC, p.id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {(page - 1) * int(limit)}"
    return store.all(sql, params), count, page, total_pages


def payment(store: Store, payment_id: int) -> sqlite3.Row | None:
    return store.one(f"SELECT {_PAYMENT_COLUMNS}, m.note {_PAYMENT_FROM} WHERE p.id = ?", (payment_id,))


def payment_allocations(store: Store, payment_id: int) -> list[sqlite3.Row]:
    return store.all(
        "SELECT a.amount_minor, a.currency, a.kind, i.id AS invoice_id, i.number, b.balance_minor "
        "FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "JOIN invoice_balances b ON b.invoice_id = i.id "
        "WHERE a.payment_id = ? ORDER BY length(i.number), i.number",
        (payment_id,),
    )


def payment_outbox(store: Store, payment_id: int) -> list[sqlite3.Row]:
    """Outbox entries about this payment (receipt, resends, PSA write-backs, journal)."""
    return store.all(
        "SELECT id, kind, status, attempts, last_error, created_at, done_at, idem_key, "
        # A payment over several invoices has one write-back each: name the invoice of each.
        "    (SELECT i.number FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "     WHERE outbox.kind = 'psa_payment' "
        "     AND a.id = json_extract(outbox.payload_json, '$.allocation_id')) AS invoice_number FROM outbox "
        "WHERE (kind = 'journal_payment' AND json_extract(payload_json, '$.payment_id') = :id) "
        "OR (kind = 'psa_payment' AND json_extract(payload_json, '$.allocation_id') IN "
        "    (SELECT id FROM allocations WHERE payment_id = :id)) "
        "OR (kind = 'email' AND json_extract(payload_json, '$.context.payment_token') = "
        "    (SELECT token FROM payments WHERE id = :id)) ORDER BY id",
        {"id": payment_id},
    )


def payment_refunds(store: Store, payment_id: int) -> list[sqlite3.Row]:
    if not _has_table(store, "refunds"):
        return []
    return store.all("SELECT * FROM refunds WHERE payment_id = ? ORDER BY id", (payment_id,))


def _has_table(store: Store, name: str) -> bool:
    return store.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)) is not None


def reminders_sent(store: Store, client_id: int) -> list[sqlite3.Row] | None:
    """Reminder steps decided for the client's invoices (sent or skipped), newest first; None when
    this database has no reminders yet."""
    if not _has_table(store, "reminders_sent"):
        return None
    return store.all(
        "SELECT r.step, r.outcome, r.sent_on, r.balance_minor, i.number, i.currency FROM reminders_sent r "
        "JOIN invoices i ON i.id = r.invoice_id WHERE i.client_id = ? ORDER BY r.sent_on DESC, r.id DESC "
        "LIMIT 200",
        (client_id,),
    )


@dataclass(frozen=True)
class QueueItem:
    """One thing a person must decide: what it is, why, and what resolves it."""

    source: str  # exception, quarantine or sync
    id: int | str
    kind: str
    title: str
    cause: str
    action: str
    at: str | None
    detail: dict[str, Any]
    can_retry_outbox: int | None = None


# What each kind of exception means and the action that resolves it. Other areas add kinds by
# calling raise_exception(kind=...); a kind not listed here is shown with a generic action.
# Exceptions whose ref is a dead outbox entry that "Retry" runs again.
RETRYABLE_EXCEPTIONS = ("outbox_dead", "accounting_match")
EXCEPTION_KINDS: dict[str, tuple[str, str]] = {
    "amount_mismatch": (
        "Amount mismatch",
        "Compare the payment in Stripe with its invoices; refund or record the difference, then resolve.",
    ),
    "overpayment": (
        "Overpayment",
        "Refund the excess to the client or keep it as a credit in the PSA, then resolve.",
    ),
    "outbox_dead": (
        "Delivery failed",
        "Fix the cause shown (mail server, PSA credentials, journal file), then retry.",
    ),
    "email_refused": (
        "Email refused",
        "Correct the contact's email address in the PSA (it syncs back), then resolve.",
    ),
    "email_bounced": (
        "Email bounced",
        "Correct the contact's email address in the PSA (it syncs back), then resolve.",
    ),
    "payout_mismatch": (
        "Payout item to classify",
        "Find the named item in Stripe (a dashboard charge, an adjustment) and book it from the \"Stripe "
        "adjustments to classify\" account to where it belongs, then resolve.",
    ),
    "payout_failed": (
        "Payout failed",
        "Check the bank account in Stripe; if the payout was already booked, reverse that deposit, "
        "then resolve.",
    ),
    "tieout": (
        "Tie-out differences",
        "Open the Tie-out page: each difference names its cause. Fix each where it is, then resolve.",
    ),
    "accounting_match": (
        "Invoice not found in accounting",
        "Find the invoice in the accounting system (number, customer) and correct it there or in the "
        "PSA, then retry.",
    ),
    "accounting_connection": (
        "Accounting needs reconnecting",
        "Connect again on the Accounting page; the waiting entries then go through and this resolves itself.",
    ),
    "accounting_mismatch": (
        "Accounting mismatch",
        "Compare the invoice or payment in the accounting system with Cashloop's and "
        "correct the side that is wrong, then resolve.",
    ),
    "dispute": (
        "Dispute (chargeback)",
        "Answer the dispute in Stripe with the evidence before its deadline, then resolve.",
    ),
    "line_dispute": (
        "Client disputes an invoice line",
        "Talk to the client; credit the line in the PSA or explain it, then resolve.",
    ),
    "autopay_exhausted": (
        "Autopay failed after the last retry",
        "Ask the client to update their card or pay in the portal (or record their check), then resolve.",
    ),
    "refund_mismatch": (
        "Refund larger than the payment",
        "Compare the refund in Stripe with the payment's allocations and correct the books, then resolve.",
    ),
    "psa_reversal_by_hand": (
        "Reverse a payment in the PSA by hand",
        "Reduce the invoice's payments in the PSA as the summary says, then resolve.",
    ),
    "source_change_on_paid_invoice": (
        "PSA changed a paid invoice",
        "Check the change in the PSA; refund, credit or re-invoice as needed, then resolve.",
    ),
    "sync_auth": (
        "PSA refused Cashloop's credentials",
        "Fix the connector's keys in the config (or the API member in the PSA); the next poll with new "
        "settings resumes, or resolve this to try the same ones again.",
    ),
    "notice_undeliverable": (
        "No billing contact",
        "Add a billing contact with an email for this client in the PSA, then resolve.",
    ),
}


# What finance knows a quarantined record by (its invoice number, or a company's or contact's name),
# read from the vendor's record as stored: each PSA spells the keys its own way; Autotask's stored
# invoice nests the invoice under "invoice". A record that is not valid JSON has no label.
_LABEL_PATHS = (
    "$.invoiceNumber", "$.invoicenumber", "$.invoice_number", "$.invoice.invoiceNumber",
    "$.companyName", "$.company_name", "$.name",
)
_QUARANTINE_LABEL = (
    "CASE WHEN json_valid(q.raw_json) THEN COALESCE("
    + ", ".join(f"NULLIF(trim(json_extract(q.raw_json, '{path}')), '')" for path in _LABEL_PATHS)
    + ", NULLIF(trim(COALESCE(json_extract(q.raw_json, '$.firstName'), '') || ' ' || "
    "COALESCE(json_extract(q.raw_json, '$.lastName'), '')), '')) END"
)


# The company a quarantined invoice or contact names, as each PSA stores it (ConnectWise, Autotask's
# invoice and contact, HaloPSA, an export's rows), so the queue says whose record it is.
_COMPANY_PATHS = ("$.company.id", "$.invoice.companyID", "$.companyID", "$.client_id", "$.company_id")
_QUARANTINE_CLIENT = (
    "LEFT JOIN clients c ON c.source = q.source AND q.object != 'company' "
    # CASE, not AND: only CASE keeps json_extract away from a record that is not JSON.
    "AND c.remote_id = CASE WHEN json_valid(q.raw_json) THEN CAST(COALESCE("
    + ", ".join(f"json_extract(q.raw_json, '{path}')" for path in _COMPANY_PATHS)
    + ") AS TEXT) END"
)


def exceptions_queue(store: Store) -> list[QueueItem]:
    """Open exceptions, quarantined PSA records and connectors with a sync error, newest first."""
    items: list[QueueItem] = []
    for r in store.all(
        "SELECT * FROM exceptions WHERE resolved_at IS NULL ORDER BY created_at DESC, id DESC"
    ):
        title, action = EXCEPTION_KINDS.get(
            r["kind"], (r["kind"].replace("_", " ").capitalize(), "Look into it, then resolve with a note.")
        )
        retry = int(r["ref"]) if r["kind"] in RETRYABLE_EXCEPTIONS and r["ref"].isdigit() else None
        items.append(
            QueueItem(
                "exception",
                r["id"],
                r["kind"],
                title,
                r["summary"],
                action,
                r["created_at"],
                json.loads(r["detail_json"] or "{}"),
                retry,
            )
        )
    for r in store.all(
        f"SELECT q.*, {_QUARANTINE_LABEL} AS label, c.id AS client_id, c.name AS client_name "
        f"FROM quarantine q {_QUARANTINE_CLIENT} "
        "WHERE q.resolved_at IS NULL ORDER BY q.last_seen_at DESC, q.id DESC"
    ):
        label = f" ({r['label']})" if r["label"] not in (None, "", r["remote_id"]) else ""
        whose = f" of {r['client_name']}" if r["client_name"] else ""
        items.append(
            QueueItem(
                "quarantine",
                r["id"],
                "quarantine",
                f"Quarantined PSA {r['object']} {r['remote_id']}{label}{whose}",
                r["reason"],
                "Correct the record in the PSA; the next sync reads it again and releases it. "
                "Dismiss it if it needs nothing (it comes back only if the PSA changes it).",
                r["last_seen_at"],
                {"source": r["source"], "client_id": r["client_id"]},
            )
        )
    for r in store.all("SELECT * FROM sync_state WHERE last_error IS NOT NULL ORDER BY connector, object"):
        items.append(
            QueueItem(
                "sync",
                f"{r['connector']}:{r['object']}",
                "sync_error",
                f"Sync error: {r['connector']} {r['object']}",
                r["last_error"],
                "Check the connector settings and that the PSA is reachable; the next poll "
                "retries by itself and clears this when it succeeds.",
                r["last_run_at"],
                {},
            )
        )
    return items


OUTBOX_VIEWS = ("pending", "running", "dead", "retried", "done", "all")


def list_outbox(
    store: Store, view: str, *, page: int = 1, entity_id: int | None = None
) -> tuple[list[sqlite3.Row], int, int, int]:
    where = {
        "pending": "status = 'pending'",
        "running": "status = 'running'",
        "dead": "status = 'dead'",
        "done": "status = 'done'",
        "retried": "(attempts > 1 OR (attempts = 1 AND status = 'pending'))",
        "all": "1 = 1",
    }[view]
    of_entity, params = entity_scope.narrow(entity_scope.outbox_entity(), entity_id)
    where = f"{where} AND {of_entity}"
    count = int(store.scalar(f"SELECT COUNT(*) FROM outbox WHERE {where}", params) or 0)
    page, total_pages = pages(count, page)
    rows = store.all(
        f"SELECT id, kind, idem_key, status, attempts, next_attempt_at, last_error, created_at, done_at "
        f"FROM outbox WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
        (*params, PER_PAGE, (page - 1) * PER_PAGE),
    )
    return rows, count, page, total_pages


def list_emails(
    store: Store, *, status: str = "", q: str = "", page: int = 1, entity_id: int | None = None
) -> tuple[list[sqlite3.Row], int, int, int]:
    of_entity, params = entity_scope.narrow(entity_scope.email_entity(), entity_id)
    where = [of_entity]
    if status:
        where.append("status = ?")
        params.append(status)
    if q:
        where.append("(to_addr LIKE ? ESCAPE '\\' OR subject LIKE ? ESCAPE '\\')")
        params += [like(q), like(q)]
    cond = " AND ".join(where)
    count = int(store.scalar(f"SELECT COUNT(*) FROM email_log WHERE {cond}", params) or 0)
    page, total_pages = pages(count, page)
    rows = store.all(
        f"SELECT * FROM email_log WHERE {cond} ORDER BY at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, PER_PAGE, (page - 1) * PER_PAGE],
    )
    return rows, count, page, total_pages


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    target: str = ""
    since: str = ""  # local dates, ISO, inclusive
    until: str = ""
    entity_id: int | None = None  # the admin's entity filter


def _audit_where(f: AuditFilters, bounds: tuple[str | None, str | None]) -> tuple[str, list[Any]]:
    of_entity, params = entity_scope.narrow(entity_scope.audit_entity(), f.entity_id)
    where = [of_entity]
    if f.actor:
        where.append("actor LIKE ? ESCAPE '\\'")
        params.append(like(f.actor))
    if f.action:
        where.append("action LIKE ? ESCAPE '\\'")
        params.append(like(f.action).removeprefix("%"))  # an action filter matches from the start
    if f.target:
        where.append("target = ?")
        params.append(f.target)
    if bounds[0]:
        where.append("at >= ?")
        params.append(bounds[0])
    if bounds[1]:
        where.append("at < ?")
        params.append(bounds[1])
    return " AND ".join(where), params


def list_audit(
    store: Store,
    f: AuditFilters,
    bounds: tuple[str | None, str | None],
    *,
    page: int = 1,
    limit: int | None = PER_PAGE,
) -> tuple[list[sqlite3.Row], int, int, int]:
    cond, params = _audit_where(f, bounds)
    count = int(store.scalar(f"SELECT COUNT(*) FROM audit_log WHERE {cond}", params) or 0)
    page, total_pages = pages(count, page)
    sql = f"SELECT * FROM audit_log WHERE {cond} ORDER BY at DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {(page - 1) * int(limit)}"
    return store.all(sql, params), count, page, total_pages


def open_ar_rows(store: Store, entity_id: int | None = None) -> list[sqlite3.Row]:
    """Every invoice in open AR (see app/core/reports.py), oldest due first, for the AR export."""
    cond, params = ("AND c.entity_id = ? ", (entity_id,)) if entity_id is not None else ("", ())
    return store.all(
        "SELECT c.name AS client_name, c.remote_id AS client_remote_id, i.number, i.kind, i.issued_on, "
        "i.due_on, "
        "i.currency, i.total_minor, b.paid_minor, i.paid_elsewhere_minor, b.balance_minor "
        "FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id JOIN clients c ON c.id = i.client_id "
        "WHERE i.status = 'open' AND i.is_approved = 1 AND i.kind != 'credit_memo' AND b.balance_minor > 0 "
        f"{cond}ORDER BY i.due_on, c.name, i.number",
        params,
    )


def admins(store: Store) -> list[sqlite3.Row]:
    return store.all(
        "SELECT id, email, role, created_at, last_login_at, locked_until, "
        "totp_secret IS NOT NULL AS has_totp, "
        "(SELECT COUNT(*) FROM admin_recovery_codes r WHERE r.admin_id = a.id AND r.used_at IS NULL) "
        "AS codes_left FROM admin_users a ORDER BY email"
    )
