"""Apply one page of PSA records to the store: upsert by (source, remote_id), quarantine the rest.

A page is applied in one transaction together with its cursor, so a killed poll either kept the
whole page and its cursor or neither. A record that cannot be applied (unknown company, a change
to an invoice that already has payments) is set aside with its reason; the page goes on.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, is_dataclass
from typing import Any

from sqlite_utils import Database

from app.core.audit import raise_exception
from app.core.clock import Clock, to_db
from app.core.keys import public_token
from sync.base import Page, Rejected, RemoteCompany, RemoteContact, RemoteInvoice


class Skip(Exception):
    """This record is quarantined with the message as its reason."""


def _raw(record: Any) -> str:
    raw = getattr(record, "raw", None)
    if raw:
        return json.dumps(raw, default=str, sort_keys=True)
    return json.dumps(asdict(record) if is_dataclass(record) else str(record), default=str)


def quarantine(
    db: Database, clock: Clock, *, source: str, obj: str, remote_id: str, reason: str, raw_json: str | None
) -> None:
    now = to_db(clock.utc_now())
    db.execute(
        "INSERT INTO quarantine (source, object, remote_id, reason, raw_json, first_seen_at, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, object, remote_id) DO UPDATE SET "
        "reason = excluded.reason, raw_json = excluded.raw_json, last_seen_at = excluded.last_seen_at, "
        "resolved_at = NULL",
        (source, obj, remote_id, reason, raw_json, now, now),
    )


def _clear_quarantine(db: Database, clock: Clock, source: str, obj: str, remote_id: str) -> None:
    db.execute(
        "UPDATE quarantine SET resolved_at = ? WHERE source = ? AND object = ? AND remote_id = ? "
        "AND resolved_at IS NULL",
        (to_db(clock.utc_now()), source, obj, remote_id),
    )


def upsert_company(db: Database, clock: Clock, source: str, entity_id: int, c: RemoteCompany) -> str:
    now = to_db(clock.utc_now())
    existing = db.execute(
        "SELECT id FROM clients WHERE source = ? AND remote_id = ?", (source, c.remote_id)
    ).fetchone()
    updated = to_db(c.updated_at) if c.updated_at else None
    if existing:
        db.execute(
            "UPDATE clients SET name = ?, identifier = ?, raw_json = ?, source_updated_at = ?, "
            "synced_at = ? WHERE id = ?",
            (c.name, c.identifier, _raw(c), updated, now, existing["id"]),
        )
        result = "updated"
    else:
        db.execute(
            "INSERT INTO clients (entity_id, source, remote_id, name, identifier, token, raw_json, "
            "source_updated_at, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entity_id, source, c.remote_id, c.name, c.identifier, public_token(), _raw(c), updated, now),
        )
        result = "created"
    if c.parent_remote_id:
        db.execute(
            "UPDATE clients SET parent_id = (SELECT id FROM clients WHERE source = ? AND remote_id = ?) "
            "WHERE source = ? AND remote_id = ?",
            (source, c.parent_remote_id, source, c.remote_id),
        )
    if c.billing_contact_remote_id:
        # The company names its billing contact; that contact pays, whatever its own types say.
        db.execute(
            "UPDATE contacts SET role = 'billing' WHERE source = ? AND remote_id = ?",
            (source, c.billing_contact_remote_id),
        )
    return result


def upsert_contact(db: Database, clock: Clock, source: str, c: RemoteContact) -> tuple[str, bool]:
    """Returns (created|updated, whether this contact is a billing contact new to the portal)."""
    client = db.execute(
        "SELECT id, raw_json FROM clients WHERE source = ? AND remote_id = ?", (source, c.company_remote_id)
    ).fetchone()
    if client is None:
        raise Skip(f"contact's company {c.company_remote_id} is unknown")
    billing_id = None
    if client["raw_json"]:
        billing_id = str(((json.loads(client["raw_json"]) or {}).get("billingContact") or {}).get("id") or "")
    role = "billing" if c.is_billing or billing_id == c.remote_id else None
    email = c.email.strip() if c.email else None
    now = to_db(clock.utc_now())
    existing = db.execute(
        "SELECT id, role, email FROM contacts WHERE source = ? AND remote_id = ?", (source, c.remote_id)
    ).fetchone()
    if existing:
        # A role set in Cashloop (approver) is kept; the PSA only ever promotes to billing.
        new_role = role or (existing["role"] if existing["role"] != "billing" else "viewer")
        db.execute(
            "UPDATE contacts SET client_id = ?, email = ?, first_name = ?, last_name = ?, role = ?, "
            "is_active = ?, raw_json = ?, synced_at = ? WHERE id = ?",
            (
                client["id"],
                email,
                c.first_name,
                c.last_name,
                new_role,
                int(c.is_active),
                _raw(c),
                now,
                existing["id"],
            ),
        )
        became_billing = new_role == "billing" and existing["role"] != "billing"
        return "updated", became_billing and bool(email) and c.is_active
    db.execute(
        "INSERT INTO contacts (client_id, source, remote_id, email, first_name, last_name, role, is_active, "
        "raw_json, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            client["id"],
            source,
            c.remote_id,
            email,
            c.first_name,
            c.last_name,
            role or "viewer",
            int(c.is_active),
            _raw(c),
            now,
        ),
    )
    return "created", role == "billing" and bool(email) and c.is_active


def _our_written_back(db: Database, invoice_id: int) -> int:
    """What Cashloop itself paid on this invoice and already wrote back to the PSA."""
    row = db.execute(
        "SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a JOIN payments p ON p.id = a.payment_id "
        "JOIN external_refs r ON r.kind = 'psa_payment' AND r.local_id = a.id "
        "WHERE a.invoice_id = ? AND p.status = 'succeeded'",
        (invoice_id,),
    ).fetchone()
    return int(row[0])


def upsert_invoice(db: Database, clock: Clock, source: str, inv: RemoteInvoice) -> str:
    client = db.execute(
        "SELECT id FROM clients WHERE source = ? AND remote_id = ?", (source, inv.company_remote_id)
    ).fetchone()
    if client is None:
        raise Skip(f"invoice's company {inv.company_remote_id} is unknown")
    now = to_db(clock.utc_now())
    status = "void" if inv.is_void else "open"
    existing = db.execute(
        "SELECT * FROM invoices WHERE source = ? AND remote_id = ?", (source, inv.remote_id)
    ).fetchone()
    updated = to_db(inv.updated_at) if inv.updated_at else None
    if existing:
        ours = db.execute(
            "SELECT COALESCE(SUM(a.amount_minor), 0) "
            "FROM allocations a JOIN payments p ON p.id = a.payment_id "
            "WHERE a.invoice_id = ? "
            "AND p.status IN ('succeeded', 'submitted', 'requires_action', 'processing')",
            (existing["id"],),
        ).fetchone()[0]
        changes_money = (
            inv.total_minor != existing["total_minor"]
            or inv.currency != existing["currency"]
            or status != existing["status"]
        )
        if ours and changes_money:
            raise_exception(
                db,
                clock,
                kind="source_change_on_paid_invoice",
                ref=f"invoice:{existing['id']}:{updated}",
                summary=(
                    f"invoice {inv.number} changed at the source (total {existing['total_minor']} -> "
                    f"{inv.total_minor}, status {existing['status']} -> {status}) but already has "
                    f"payments through Cashloop; not applied"
                ),
                detail={"remote": json.loads(_raw(inv))},
            )
            return "held"
        paid_elsewhere = max(0, inv.paid_minor - _our_written_back(db, existing["id"]))
        db.execute(
            "UPDATE invoices SET client_id = ?, number = ?, kind = ?, status = ?, is_approved = ?, "
            "issued_on = ?, due_on = ?, currency = ?, subtotal_minor = ?, tax_minor = ?, total_minor = ?, "
            "paid_elsewhere_minor = ?, agreement = ?, project = ?, phase = ?, ticket = ?, description = ?, "
            "source_updated_at = ?, raw_json = ?, synced_at = ? WHERE id = ?",
            (
                client["id"],
                inv.number,
                inv.kind,
                status,
                int(inv.is_approved),
                inv.issued_on.isoformat(),
                inv.due_on.isoformat(),
                inv.currency,
                inv.subtotal_minor,
                inv.tax_minor,
                inv.total_minor,
                paid_elsewhere,
                inv.agreement,
                inv.project,
                inv.phase,
                inv.ticket,
                inv.description,
                updated,
                _raw(inv),
                now,
                existing["id"],
            ),
        )
        invoice_id = existing["id"]
        db.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice_id,))
        result = "updated"
    else:
        cur = db.execute(
            "INSERT INTO invoices (client_id, source, remote_id, number, kind, status, is_approved, "
            "issued_on, due_on, currency, subtotal_minor, tax_minor, total_minor, paid_elsewhere_minor, "
            "agreement, project, phase, ticket, description, token, source_updated_at, raw_json, synced_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                client["id"],
                source,
                inv.remote_id,
                inv.number,
                inv.kind,
                status,
                int(inv.is_approved),
                inv.issued_on.isoformat(),
                inv.due_on.isoformat(),
                inv.currency,
                inv.subtotal_minor,
                inv.tax_minor,
                inv.total_minor,
                max(0, inv.paid_minor),
                inv.agreement,
                inv.project,
                inv.phase,
                inv.ticket,
                inv.description,
                public_token(),
                updated,
                _raw(inv),
                now,
            ),
        )
        invoice_id = cur.lastrowid
        result = "created"
    db.conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, line_no, description, quantity, unit_price_minor, "
        "amount_minor, agreement, project, phase, ticket, service) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                invoice_id,
                n,
                ln.description,
                ln.quantity,
                ln.unit_price_minor,
                ln.amount_minor,
                ln.agreement,
                ln.project,
                ln.phase,
                ln.ticket,
                ln.service,
            )
            for n, ln in enumerate(inv.lines, start=1)
        ],
    )
    return result


def apply_page(
    db: Database,
    clock: Clock,
    *,
    source: str,
    obj: str,
    entity_id: int,
    page: Page,
    on_new_billing_contact: Any = None,
) -> Counter[str]:
    """Apply every item of `page` inside the caller's transaction; returns counts by outcome."""
    counts: Counter[str] = Counter()
    for item in page.items:
        if isinstance(item, Rejected):
            quarantine(
                db,
                clock,
                source=source,
                obj=item.object,
                remote_id=item.remote_id,
                reason=item.reason,
                raw_json=json.dumps(dict(item.raw), default=str),
            )
            counts["quarantined"] += 1
            continue
        try:
            with db.atomic():  # a savepoint: one record's failure leaves the others applied
                if isinstance(item, RemoteCompany):
                    counts[upsert_company(db, clock, source, entity_id, item)] += 1
                elif isinstance(item, RemoteContact):
                    outcome, is_new_billing = upsert_contact(db, clock, source, item)
                    counts[outcome] += 1
                    if is_new_billing and on_new_billing_contact is not None:
                        on_new_billing_contact(db, item)
                elif isinstance(item, RemoteInvoice):
                    counts[upsert_invoice(db, clock, source, item)] += 1
                else:
                    raise Skip(f"unexpected record type {type(item).__name__}")
                _clear_quarantine(db, clock, source, obj, getattr(item, "remote_id", ""))
        except Skip as exc:
            quarantine(
                db,
                clock,
                source=source,
                obj=obj,
                remote_id=str(getattr(item, "remote_id", "?")),
                reason=str(exc),
                raw_json=_raw(item),
            )
            counts["quarantined"] += 1
    return counts
