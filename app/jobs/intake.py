"""Apply one page of PSA records to the store: upsert by (source, remote_id), quarantine the rest.

A page is applied in one transaction together with its cursor, so a killed poll either kept the
whole page and its cursor or neither. A record that cannot be applied (unknown company, a number
already taken, an amount no invoice has) is set aside in quarantine with its reason; the page goes
on. A record whose source digest matches the stored one writes nothing, so a re-read is free.

Invoices that already carry payments through Cashloop are never rewritten silently: a change to
what was owed (total, lines, dates, status: a void, a credit memo's edit, a deletion) opens one
`source_change_on_paid_invoice` exception and leaves the invoice and its payments as they are.
Payments recorded at the PSA (ours written back, a cheque) only move `paid_elsewhere_minor`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sqlite_utils import Database

from app.core import client_tree, entities
from app.core.audit import raise_exception
from app.core.clock import Clock, to_db
from app.core.emails import money_text
from app.core.keys import ordered_tokens, public_token
from sync import jsonio
from sync.base import Page, Rejected, RemoteCompany, RemoteContact, RemoteInvoice

# Payments that hold money against an invoice: the source may not change what they paid for.
_HOLDING = "('succeeded', 'submitted', 'requires_action', 'processing')"
# 10^15 minor units is ten trillion dollars: no invoice is that large, and SQLite's INTEGER (and
# every sum over it) stays far from overflowing.
MAX_MINOR = 10**15
HELD_KIND = "source_change_on_paid_invoice"


class Skip(Exception):
    """This record is quarantined with the message as its reason."""


# The reason a record waits for its company; poll_psa reads such records again once it is here.
UNKNOWN_COMPANY = {"invoice": "invoice's company {} is unknown", "contact": "contact's company {} is unknown"}
# The reasons an invoice waits for its number; poll_psa reads it again once no other invoice has it.
NUMBER_TAKEN = "invoice number {} is already used by invoice {} at the source"
# ...or once the other invoice, which gave the number up at the source, is stored as it is there.
NUMBER_KEPT = "invoice number {} is still on invoice {}, whose change at the source is not applied"
NUMBER_WAITS = (NUMBER_TAKEN, NUMBER_KEPT)


def _raw(record: Any, *, cut: bool = False) -> str:
    """The record as stored. Raises Skip for one nested too deep to store, unless `cut` (quarantine
    keeps what it can of it)."""
    raw = getattr(record, "raw", None)
    if not raw:
        as_dict = getattr(record, "_asdict", None)
        raw = as_dict() if as_dict else str(record)
    if cut:
        return jsonio.dumps_cut(raw)
    try:
        # The vendor's own key order (stable from one response to the next): sorting the keys of a
        # 100,000-invoice backfill costs more than everything else the digest needs.
        return jsonio.dumps(raw)
    except jsonio.TooDeep as exc:
        raise Skip(f"{exc}: the record cannot be stored") from None


def _rejected_raw(raw: Any) -> str:
    try:
        return json.dumps(dict(raw), default=str, sort_keys=True)
    except RecursionError:  # nested past what the json module reaches: kept cut short
        return jsonio.dumps_cut(dict(raw))


def _storable(text: str) -> str:
    # SQLite takes UTF-8 only: a lone surrogate in an id or a reason is kept as its escape.
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def _text_problem(record: Any) -> str | None:
    """The field of `record` whose text SQLite refuses (a lone surrogate), and where in it."""
    fields = [(name, value) for name, value in record._asdict().items() if name != "raw"]
    for n, line in enumerate(getattr(record, "lines", ()), start=1):
        fields.extend((f"line {n} {name}", value) for name, value in line._asdict().items())
    for name, value in fields:
        if not isinstance(value, str):
            continue
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            at = f"at character {exc.start + 1}"
            if 0xDC80 <= code <= 0xDCFF:  # a byte the body had that is not UTF-8 (surrogateescape)
                return f"{name} is not valid UTF-8 text (byte 0x{code - 0xDC00:02X} {at})"
            return f"{name} is not valid Unicode text (unpaired surrogate \\u{code:04x} {at})"
    return None


# Bump when a connector's mapping starts making something else of the same vendor record, so that
# the next poll rewrites what an older release stored (a digest match would otherwise skip it).
DIGEST_VERSION = 2  # 2: records stored as compact JSON (sync.jsonio), no longer as sent
_DIGEST_PREFIX = f"{DIGEST_VERSION}\x00".encode()


def source_digest(raw_json: str, record: Any) -> str:
    """Digest of the vendor record and of what the mapping made of it (settings change mappings)."""
    mapped = _invoice_signature(record) if isinstance(record, RemoteInvoice) else _mapped(record)
    # The digest of that text, hashed in parts (no copy of the record's text).
    h = hashlib.blake2b(_DIGEST_PREFIX, digest_size=16)
    h.update(raw_json.encode())
    h.update(f"\x00{mapped}".encode())
    return h.hexdigest()


def _invoice_signature(inv: RemoteInvoice) -> str:
    # What the settings can change in the mapping of one record (status mapping, default currency,
    # kinds), and the money: the rest follows from the raw record and DIGEST_VERSION.
    line_minor = sum([ln.amount_minor for ln in inv.lines])
    line_tax = sum([ln.tax_minor for ln in inv.lines])
    return (
        f"{inv.number}|{inv.company_remote_id}|{inv.kind}|{inv.currency}|{inv.issued_on}|{inv.due_on}|"
        f"{inv.subtotal_minor}|{inv.tax_minor}|{inv.total_minor}|{inv.paid_minor}|{inv.is_void}|"
        f"{inv.is_approved}|{len(inv.lines)}|{line_minor}|{line_tax}|{inv.agreement}|{inv.project}|"
        f"{inv.phase}|{inv.ticket}"
    )


def _mapped(record: Any) -> str:
    # The mapped fields but `raw`.
    return repr([value for name, value in record._asdict().items() if name != "raw"])


def _billing_contact_id(company_json: str | None) -> str | None:
    """The id of the company's `billingContact` (ConnectWise), whatever shape the record came in."""
    company = json.loads(company_json) if company_json else None
    ref = company.get("billingContact") if isinstance(company, dict) else None
    value = ref.get("id") if isinstance(ref, dict) else None
    return str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None


def quarantine(
    db: Database, clock: Clock, *, source: str, obj: str, remote_id: str, reason: str, raw_json: str | None
) -> None:
    now = to_db(clock.utc_now())
    if not remote_id.strip():
        # Records with no id are told apart by what they hold, so that two of them are two rows.
        remote_id = "(no id) " + hashlib.sha256((raw_json or "").encode()).hexdigest()[:12]
    db.execute(
        "INSERT INTO quarantine (source, object, remote_id, reason, raw_json, first_seen_at, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, object, remote_id) DO UPDATE SET "
        "reason = excluded.reason, raw_json = excluded.raw_json, last_seen_at = excluded.last_seen_at, "
        "resolved_at = NULL "
        # Re-reading the same bad record writes nothing; a dismissed one comes back only if it changed.
        "WHERE quarantine.reason IS NOT excluded.reason OR quarantine.raw_json IS NOT excluded.raw_json",
        (source, obj, _storable(remote_id), _storable(reason), raw_json, now, now),
    )


def _clear_quarantine(db: Database, clock: Clock, source: str, obj: str, remote_ids: list[str]) -> None:
    if (
        not remote_ids
        or not db.execute(
            "SELECT 1 FROM quarantine WHERE source = ? AND object = ? AND resolved_at IS NULL LIMIT 1",
            (source, obj),
        ).fetchone()
    ):
        return
    now = to_db(clock.utc_now())
    for chunk in _chunks(remote_ids, 500):
        db.execute(
            f"UPDATE quarantine SET resolved_at = ? WHERE source = ? AND object = ? AND resolved_at IS NULL "
            f"AND remote_id IN ({','.join('?' * len(chunk))})",
            (now, source, obj, *chunk),
        )


def upsert_company(db: Database, clock: Clock, source: str, entity_id: int, c: RemoteCompany) -> str:
    raw_json = _raw(c)
    digest = source_digest(raw_json, c)
    existing = db.execute(
        "SELECT id, source_hash, entity_id, entity_pinned FROM clients WHERE source = ? AND remote_id = ?",
        (source, c.remote_id),
    ).fetchone()
    if existing and existing["source_hash"] == digest:
        return "unchanged"
    try:
        entity_id = entities.assign_on_intake(db, clock, source, c, default_id=entity_id, existing=existing)
    except entities.EntityError as exc:
        raise Skip(str(exc)) from None
    now = to_db(clock.utc_now())
    updated = to_db(c.updated_at) if c.updated_at else None
    if existing:
        db.execute(
            "UPDATE clients SET name = ?, identifier = ?, raw_json = ?, source_updated_at = ?, "
            "source_hash = ?, synced_at = ?, entity_id = ? WHERE id = ?",
            (c.name, c.identifier, raw_json, updated, digest, now, entity_id, existing["id"]),
        )
        result = "updated"
    else:
        db.execute(
            "INSERT INTO clients (entity_id, source, remote_id, name, identifier, token, raw_json, "
            "source_updated_at, source_hash, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entity_id,
                source,
                c.remote_id,
                c.name,
                c.identifier,
                public_token(),
                raw_json,
                updated,
                digest,
                now,
            ),
        )
        result = "created"
    # Also links children synced before this company; a parent set in the admin is kept.
    client_tree.link_from_psa(db, clock, source, c.remote_id, c.parent_remote_id)
    if c.billing_contact_remote_id:
        # The company names its billing contact; that contact pays, whatever its own types say.
        db.execute(
            "UPDATE contacts SET role = 'billing' WHERE source = ? AND remote_id = ? AND role != 'billing'",
            (source, c.billing_contact_remote_id),
        )
    return result


def upsert_contact(db: Database, clock: Clock, source: str, c: RemoteContact) -> tuple[str, bool]:
    """Returns (created|updated|unchanged, whether this contact is a billing contact new to the portal)."""
    raw_json = _raw(c)
    digest = source_digest(raw_json, c)
    existing = db.execute(
        "SELECT id, role, email, source_hash FROM contacts WHERE source = ? AND remote_id = ?",
        (source, c.remote_id),
    ).fetchone()
    if existing and existing["source_hash"] == digest:
        return "unchanged", False
    client = db.execute(
        "SELECT id, raw_json FROM clients WHERE source = ? AND remote_id = ?", (source, c.company_remote_id)
    ).fetchone()
    if client is None:
        raise Skip(UNKNOWN_COMPANY["contact"].format(c.company_remote_id))
    role = "billing" if c.is_billing or _billing_contact_id(client["raw_json"]) == c.remote_id else None
    email = c.email.strip() if c.email else None
    now = to_db(clock.utc_now())
    if existing:
        # A role set in Cashloop (approver) is kept; the PSA only ever promotes to billing.
        new_role = role or (existing["role"] if existing["role"] != "billing" else "viewer")
        db.execute(
            "UPDATE contacts SET client_id = ?, email = ?, first_name = ?, last_name = ?, role = ?, "
            "is_active = ?, raw_json = ?, source_hash = ?, synced_at = ? WHERE id = ?",
            (
                client["id"],
                email,
                c.first_name,
                c.last_name,
                new_role,
                int(c.is_active),
                raw_json,
                digest,
                now,
                existing["id"],
            ),
        )
        became_billing = new_role == "billing" and existing["role"] != "billing"
        return "updated", became_billing and bool(email) and c.is_active
    db.execute(
        "INSERT INTO contacts (client_id, source, remote_id, email, first_name, last_name, role, is_active, "
        "raw_json, source_hash, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            client["id"],
            source,
            c.remote_id,
            email,
            c.first_name,
            c.last_name,
            role or "viewer",
            int(c.is_active),
            raw_json,
            digest,
            now,
        ),
    )
    return "created", role == "billing" and bool(email) and c.is_active


def _paid_elsewhere(db: Database, invoice_id: int, inv: RemoteInvoice) -> int:
    """What the source says was paid, less what Cashloop paid and wrote back through the PSA's API."""
    reported = _our_written_back(db, invoice_id)
    elsewhere = max(0, inv.paid_minor - reported)
    succeeded = int(
        db.execute(
            "SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a "
            "JOIN payments p ON p.id = a.payment_id WHERE a.invoice_id = ? AND p.status = 'succeeded'",
            (invoice_id,),
        ).fetchone()[0]
    )
    if succeeded > reported:
        # Some of our payments were never reported through the API (Autotask cannot take them; a
        # write-back may still be queued): a "paid" at the PSA may be ours, marked by hand, so it
        # never counts past what our payments left owing.
        elsewhere = min(elsewhere, max(0, inv.total_minor - succeeded))
    return elsewhere


def _our_written_back(db: Database, invoice_id: int) -> int:
    """What Cashloop itself paid on this invoice and already wrote back to the PSA."""
    row = db.execute(
        "SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a JOIN payments p ON p.id = a.payment_id "
        "JOIN external_refs r ON r.kind = 'psa_payment' AND r.local_id = a.id "
        "WHERE a.invoice_id = ? AND p.status = 'succeeded'",
        (invoice_id,),
    ).fetchone()
    return int(row[0])


def _ours(db: Database, invoice_id: int) -> int:
    """Money Cashloop holds against the invoice: succeeded payments and those still in flight."""
    return int(
        db.execute(
            f"SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a "
            f"JOIN payments p ON p.id = a.payment_id WHERE a.invoice_id = ? AND p.status IN {_HOLDING}",
            (invoice_id,),
        ).fetchone()[0]
    )


def _check_amounts(inv: RemoteInvoice) -> None:
    top = MAX_MINOR
    if (
        -top < inv.total_minor < top
        and -top < inv.subtotal_minor < top
        and -top < inv.tax_minor < top
        and -top < inv.paid_minor < top
        and all([-top < ln.amount_minor < top and -top < ln.tax_minor < top for ln in inv.lines])
        and all([-top < ln.unit_price_minor < top for ln in inv.lines])
    ):
        return
    amounts = {
        "total": inv.total_minor,
        "subtotal": inv.subtotal_minor,
        "tax": inv.tax_minor,
        "paid": inv.paid_minor,
    }
    for n, ln in enumerate(inv.lines, start=1):
        amounts.update(
            {f"line {n} amount": ln.amount_minor, f"line {n} tax": ln.tax_minor,
             f"line {n} unit price": ln.unit_price_minor}
        )
    for name, value in amounts.items():
        if abs(value) >= MAX_MINOR:
            raise Skip(f"{name} {value} minor units of {inv.currency} is beyond any real invoice")


def _terms(inv: RemoteInvoice, status: str, client_id: int) -> tuple[Any, ...]:
    """Who owes what by this invoice: the part a source may not change once Cashloop took money
    (a payment made by one client never silently lands on another's invoice)."""
    lines = tuple(
        (ln.description, ln.quantity, ln.unit_price_minor, ln.amount_minor, ln.tax_minor) for ln in inv.lines
    )
    return (
        client_id,
        inv.number,
        inv.currency,
        inv.issued_on.isoformat(),
        inv.due_on.isoformat(),
        inv.subtotal_minor,
        inv.tax_minor,
        inv.total_minor,
        status,
        int(inv.is_approved),
        lines,
    )


def _stored_terms(db: Database, row: sqlite3.Row) -> tuple[Any, ...]:
    lines = tuple(
        tuple(r)
        for r in db.execute(
            "SELECT description, quantity, unit_price_minor, amount_minor, tax_minor FROM invoice_lines "
            "WHERE invoice_id = ? ORDER BY line_no",
            (row["id"],),
        )
    )
    return (
        row["client_id"],
        row["number"],
        row["currency"],
        row["issued_on"],
        row["due_on"],
        row["subtotal_minor"],
        row["tax_minor"],
        row["total_minor"],
        row["status"],
        row["is_approved"],
        lines,
    )


def _company_remote_id(db: Database, client_id: int) -> str:
    row = db.execute("SELECT remote_id FROM clients WHERE id = ?", (client_id,)).fetchone()
    return row["remote_id"] if row else str(client_id)


# The names of _terms' parts, in its order, as an exception's summary names what changed.
_TERM_NAMES = (
    "company", "number", "currency", "issue date", "due date", "subtotal", "tax", "total", "status",
    "approval", "lines",
)
_MONEY_TERMS = frozenset({"subtotal", "tax", "total"})


def _change_summary(
    db: Database, row: sqlite3.Row, inv: RemoteInvoice, new: tuple[Any, ...], old: tuple[Any, ...]
) -> str:
    """What the source changed about an invoice that has payments, in words finance reads:
    only the parts that changed, amounts as money in each side's currency."""
    parts = []
    for name, before, after in zip(_TERM_NAMES, old, new, strict=True):
        if before == after:
            continue
        if name in _MONEY_TERMS:
            before, after = money_text(before, row["currency"]), money_text(after, inv.currency)
        elif name == "company":
            before, after = _company_remote_id(db, before), inv.company_remote_id
        elif name == "approval":
            before, after = ("approved" if v else "not approved" for v in (before, after))
        elif name == "lines":
            parts.append(f"lines ({len(before)} before, {len(after)} now)")
            continue
        parts.append(f"{name} {before} -> {after}")
    return f"changed at the source ({', '.join(parts)})"


def _hold(db: Database, clock: Clock, row: sqlite3.Row, *, ref: str, summary: str, remote: Any) -> str:
    raise_exception(
        db,
        clock,
        kind=HELD_KIND,
        ref=f"invoice:{row['id']}:{ref}",
        summary=f"invoice {row['number']} {summary} but already has payments through Cashloop; not applied",
        detail={"invoice_id": row["id"], "remote": remote},
    )
    return "held"


class InvoiceLookups:
    """What one page of invoices needs from the store, read in a few queries instead of per record."""

    def __init__(
        self,
        db: Database,
        source: str,
        invoices: list[RemoteInvoice],
        *,
        now: str,
        swappers: Iterable[str] = (),
    ) -> None:
        self.now = now
        # The number each invoice of the page carries now. A number held by one of `swappers` that
        # carries another now counts as free (see _apply_swaps).
        self.page_numbers = {i.remote_id: i.number for i in invoices}
        self.swappers = frozenset(swappers)
        self._tokens: list[str] = []
        self._page_size = max(1, len(invoices))
        # With a list here, invoice lines wait in it to be inserted in one statement a page (see
        # flush_lines); None inserts each invoice's lines at once (a record in its own savepoint).
        self.pending_lines: list[tuple[Any, ...]] | None = None
        self.clients: dict[str, int] = {}
        self.existing: dict[str, sqlite3.Row] = {}
        self.numbers: dict[str, str] = {}  # invoice number -> the remote id that holds it
        self.created: set[str] = set()  # created in this page (a vendor may list a record twice)
        companies = sorted({i.company_remote_id for i in invoices})
        for chunk in _chunks(companies, 500):
            self.clients.update(
                (r[0], r[1])
                for r in db.execute(
                    f"SELECT remote_id, id FROM clients WHERE source = ? "
                    f"AND remote_id IN ({','.join('?' * len(chunk))})",
                    (source, *chunk),
                )
            )
        ids = [i.remote_id for i in invoices]
        for chunk in _chunks(ids, 500):
            for r in db.execute(
                f"SELECT * FROM invoices WHERE source = ? AND remote_id IN ({','.join('?' * len(chunk))})",
                (source, *chunk),
            ):
                self.existing[r["remote_id"]] = r
        numbers = sorted({i.number for i in invoices})
        for chunk in _chunks(numbers, 500):
            self.numbers.update(
                (r[0], r[1])
                for r in db.execute(
                    f"SELECT number, remote_id FROM invoices WHERE source = ? AND status != 'deleted' "
                    f"AND number IN ({','.join('?' * len(chunk))})",
                    (source, *chunk),
                )
            )


    def flush_lines(self, db: Database) -> None:
        if self.pending_lines:
            _insert_lines(db, self.pending_lines)
            self.pending_lines = []

    def token(self) -> str:
        """A public token for a new invoice (made a page at a time: see ordered_tokens)."""
        if not self._tokens:
            self._tokens = ordered_tokens(self._page_size)
        return self._tokens.pop()

    def holder(self, inv: RemoteInvoice) -> str | None:
        """The other invoice that holds `inv`'s number, if any."""
        taken = self.numbers.get(inv.number)
        return taken if taken is not None and taken != inv.remote_id else None

    def takes_a_leaving_number(self, inv: RemoteInvoice) -> bool:
        """Whether `inv`'s number is held by an invoice of this page that gives it up."""
        holder = self.holder(inv)
        return holder is not None and self.page_numbers.get(holder, inv.number) != inv.number


def upsert_invoice(
    db: Database, clock: Clock, source: str, inv: RemoteInvoice, lookups: InvoiceLookups | None = None
) -> str:
    """Insert or update one invoice and its lines; returns created|updated|unchanged|held. Raises Skip."""
    lookups = lookups or InvoiceLookups(db, source, [inv], now=to_db(clock.utc_now()))
    raw_json = _raw(inv)
    digest = source_digest(raw_json, inv)
    existing = lookups.existing.get(inv.remote_id)
    if existing is None and inv.remote_id in lookups.created:
        existing = db.execute(
            "SELECT * FROM invoices WHERE source = ? AND remote_id = ?", (source, inv.remote_id)
        ).fetchone()
    status = "void" if inv.is_void else "open"
    if existing is not None and existing["source_hash"] == digest and existing["status"] != "deleted":
        return _refresh_paid_elsewhere(db, existing, inv)
    _check_amounts(inv)
    client_id = lookups.clients.get(inv.company_remote_id)
    if client_id is None:
        raise Skip(UNKNOWN_COMPANY["invoice"].format(inv.company_remote_id))
    if existing is not None and _ours(db, existing["id"]) and (
        (terms := _terms(inv, status, client_id)) != (stored := _stored_terms(db, existing))
    ):
        # Decided before the number: a held change is not applied, so it takes no number from anyone.
        summary = _change_summary(db, existing, inv, terms, stored)
        return _hold(db, clock, existing, ref=digest, summary=summary, remote=json.loads(raw_json))
    taken = lookups.holder(inv)
    if taken is not None and not (taken in lookups.swappers and lookups.takes_a_leaving_number(inv)):
        template = NUMBER_KEPT if lookups.takes_a_leaving_number(inv) else NUMBER_TAKEN
        raise Skip(template.format(inv.number, taken))
    now = lookups.now
    updated = to_db(inv.updated_at) if inv.updated_at else None
    values = (
        client_id,
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
    )
    refs = (inv.agreement, inv.project, inv.phase, inv.ticket, inv.description)
    if existing is not None:
        paid_elsewhere = _paid_elsewhere(db, existing["id"], inv)
        db.execute(
            "UPDATE invoices SET client_id = ?, number = ?, kind = ?, status = ?, is_approved = ?, "
            "issued_on = ?, due_on = ?, currency = ?, subtotal_minor = ?, tax_minor = ?, total_minor = ?, "
            "paid_elsewhere_minor = ?, agreement = ?, project = ?, phase = ?, ticket = ?, description = ?, "
            "source_updated_at = ?, raw_json = ?, source_hash = ?, deleted_at = NULL, synced_at = ? "
            "WHERE id = ?",
            (*values, paid_elsewhere, *refs, updated, raw_json, digest, now, existing["id"]),
        )
        invoice_id = existing["id"]
        db.execute("DELETE FROM invoice_lines WHERE invoice_id = ?", (invoice_id,))
        if lookups.numbers.get(existing["number"]) == inv.remote_id:
            del lookups.numbers[existing["number"]]
        result = "updated"
    else:
        # The connection's own execute: inside the page's transaction, sqlite-utils' wrapper (its
        # tracer and implicit-commit checks) has nothing to do, 100,000 times in a backfill.
        cur = db.conn.execute(
            "INSERT INTO invoices (client_id, number, kind, status, is_approved, issued_on, due_on, "
            "currency, subtotal_minor, tax_minor, total_minor, paid_elsewhere_minor, agreement, project, "
            "phase, ticket, "
            "description, source, remote_id, token, source_updated_at, raw_json, source_hash, synced_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *values,
                max(0, inv.paid_minor),
                *refs,
                source,
                inv.remote_id,
                lookups.token(),
                updated,
                raw_json,
                digest,
                now,
            ),
        )
        invoice_id = cur.lastrowid
        lookups.created.add(inv.remote_id)
        result = "created"
    lookups.numbers[inv.number] = inv.remote_id
    lines = [
        (
            invoice_id,
            n,
            ln.description,
            ln.quantity,
            ln.unit_price_minor,
            ln.amount_minor,
            ln.tax_minor,
            ln.agreement,
            ln.project,
            ln.phase,
            ln.ticket,
            ln.service,
        )
        for n, ln in enumerate(inv.lines, start=1)
    ]
    if lookups.pending_lines is None:
        _insert_lines(db, lines)
    else:
        lookups.pending_lines += lines
    return result


def _insert_lines(db: Database, rows: list[tuple[Any, ...]]) -> None:
    db.conn.executemany(
        "INSERT INTO invoice_lines (invoice_id, line_no, description, quantity, unit_price_minor, "
        "amount_minor, tax_minor, agreement, project, phase, ticket, service) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _refresh_paid_elsewhere(db: Database, existing: sqlite3.Row, inv: RemoteInvoice) -> str:
    # The source record is as stored, but our own write-back may have been recorded since: the
    # share paid elsewhere is what the source says was paid less what Cashloop wrote back.
    if not existing["paid_elsewhere_minor"] and not inv.paid_minor:
        return "unchanged"
    paid_elsewhere = _paid_elsewhere(db, existing["id"], inv)
    if paid_elsewhere == existing["paid_elsewhere_minor"]:
        return "unchanged"
    db.execute("UPDATE invoices SET paid_elsewhere_minor = ? WHERE id = ?", (paid_elsewhere, existing["id"]))
    return "updated"


def mark_deleted(db: Database, clock: Clock, *, source: str, remote_ids: Iterable[str]) -> Counter[str]:
    """Close invoices the source no longer has: 'deleted' (hidden from the portal) if Cashloop holds no
    money against them, otherwise one exception for a person. Idempotent."""
    counts: Counter[str] = Counter()
    now = to_db(clock.utc_now())
    for chunk in _chunks(list(remote_ids), 500):
        rows = db.execute(
            f"SELECT * FROM invoices WHERE source = ? AND status != 'deleted' "
            f"AND remote_id IN ({','.join('?' * len(chunk))})",
            (source, *chunk),
        ).fetchall()
        for row in rows:
            if _ours(db, row["id"]):
                counts[
                    _hold(
                        db,
                        clock,
                        row,
                        ref="deleted",
                        summary="was deleted at the source",
                        remote={"remote_id": row["remote_id"]},
                    )
                ] += 1
                continue
            db.execute(
                "UPDATE invoices SET status = 'deleted', deleted_at = ?, synced_at = ? WHERE id = ?",
                (now, now, row["id"]),
            )
            counts["deleted"] += 1
    return counts


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
    """Apply every item of `page` inside the caller's transaction; returns counts by outcome
    (created, updated, unchanged, held, quarantined). Idempotent: applying a page twice writes once."""
    args = (db, clock, source, obj, entity_id, page, on_new_billing_contact)
    try:
        # Fast path: one savepoint for the page. A record that is refused (Skip) is refused before
        # anything of it is written, so only a failure of SQLite itself can leave half a record...
        with db.atomic():
            return _apply(*args, per_record=False)
    except _STORE_ERRORS:
        # ...and then the page is applied again record by record, each in its own savepoint, so the
        # one record SQLite refuses is quarantined and the rest of the page goes on.
        return _apply(*args, per_record=True)


# What SQLite (or its integer and text binding) may refuse about one record.
_STORE_ERRORS = (OverflowError, UnicodeEncodeError, sqlite3.IntegrityError, sqlite3.DataError)
_REFUSED: tuple[type[Exception], ...] = (Skip,)
_REFUSED_OR_STORE: tuple[type[Exception], ...] = (Skip, *_STORE_ERRORS)


def _apply(
    db: Database,
    clock: Clock,
    source: str,
    obj: str,
    entity_id: int,
    page: Page,
    on_new_billing_contact: Any,
    *,
    per_record: bool,
) -> Counter[str]:
    counts: Counter[str] = Counter()
    items = [_plain_number(i) for i in _last_listings(page.items)]
    invoices = [i for i in items if isinstance(i, RemoteInvoice)]
    if per_record:  # an invoice whose keys SQLite refuses is looked up (and quarantined) on its own
        invoices = [i for i in invoices if _text_problem(i) is None]
    now = to_db(clock.utc_now())
    lookups = InvoiceLookups(db, source, invoices, now=now) if invoices else None
    if lookups is not None and not per_record:
        lookups.pending_lines = []
    # Invoices taking a number that another invoice of this page gives up (two invoices that swap
    # numbers) go last, once the numbers they take are free.
    swaps = {i.remote_id for i in invoices if lookups and lookups.takes_a_leaving_number(i)}
    applied: list[str] = []
    one = functools.partial(_apply_one, db, clock, source, obj, entity_id, on_new_billing_contact,
                            per_record=per_record)
    for item in items:
        if getattr(item, "remote_id", None) not in swaps:
            one(item, lookups, counts, applied)
    if lookups is not None:
        lookups.flush_lines(db)
    if swaps:
        _apply_swaps(db, source, [i for i in items if getattr(i, "remote_id", None) in swaps], one,
                     counts, applied, now=now)
    _clear_quarantine(db, clock, source, obj, applied)
    return counts


def _apply_swaps(
    db: Database, source: str, items: list[RemoteInvoice], one: Any, counts: Counter[str], applied: list[str],
    *, now: str,
) -> None:
    """Apply `items`, each taking a number another invoice of the page was to give up.

    Should one of those keep its number after all (its change held, its record refused), a
    number would be on two invoices: then the swaps are undone, that invoice and those waiting
    for its number (and for theirs) are set aside, and the rest tried again. Those set aside are
    applied last, each number checked as usual.
    """
    stored = InvoiceLookups(db, source, items, now=now)
    holder_of = {row["number"]: rid for rid, row in stored.existing.items()}
    trying, aside = list(items), []
    while trying:
        swap_counts: Counter[str] = Counter()
        swap_applied: list[str] = []
        try:
            with db.atomic():
                lookups = InvoiceLookups(db, source, items, now=now, swappers=[i.remote_id for i in trying])
                for item in trying:
                    one(item, lookups, swap_counts, swap_applied)
                if _shared_numbers(db, source, {i.number for i in trying}):
                    raise _SwapFailed(_kept_their_numbers(db, source, trying))
        except _SwapFailed as failed:
            stuck = set(failed.remote_ids)
            while True:  # and those waiting for a number the stuck ones keep, and so on
                more = {i.remote_id for i in trying if holder_of.get(i.number) in stuck} - stuck
                if not more:
                    break
                stuck |= more
            aside += [i for i in trying if i.remote_id in stuck]
            trying = [i for i in trying if i.remote_id not in stuck]
            continue
        counts.update(swap_counts)
        applied.extend(swap_applied)
        break
    if aside:
        lookups = InvoiceLookups(db, source, items, now=now)
        for item in aside:
            # An invoice refused for what it holds (a bad amount, a value SQLite refuses) is
            # quarantined with that reason, not with the number it could not take meanwhile.
            refused = _refused_anyway(db, item, _unchecked(db, source, items, now), one)
            one(item, _unchecked(db, source, items, now) if refused else lookups, counts, applied)


def _unchecked(db: Database, source: str, items: list[RemoteInvoice], now: str) -> InvoiceLookups:
    """Lookups that know no invoice numbers: applying with them checks everything but the number."""
    lookups = InvoiceLookups(db, source, items, now=now)
    lookups.numbers.clear()
    return lookups


def _kept_their_numbers(db: Database, source: str, items: list[RemoteInvoice]) -> set[str]:
    """Those of `items` not stored with their new number (held, or refused)."""
    kept = set()
    for item in items:
        row = db.execute(
            "SELECT number FROM invoices WHERE source = ? AND remote_id = ?", (source, item.remote_id)
        ).fetchone()
        if row is None or row[0] != item.number:
            kept.add(item.remote_id)
    return kept


def _refused_anyway(db: Database, item: RemoteInvoice, unchecked: InvoiceLookups, one: Any) -> bool:
    """Whether `item` would be refused even were its number free (tried, then undone)."""
    outcome: Counter[str] = Counter()
    try:
        with db.atomic():
            one(item, unchecked, outcome, [])
            raise _Undo
    except _Undo:
        return outcome["quarantined"] > 0
    except _STORE_ERRORS:
        return True


class _Undo(Exception):
    pass


class _SwapFailed(Exception):
    def __init__(self, remote_ids: set[str]) -> None:
        super().__init__(f"invoices that kept their numbers: {sorted(remote_ids)}")
        self.remote_ids = remote_ids


def _shared_numbers(db: Database, source: str, numbers: set[str]) -> bool:
    """Whether any of `numbers` is on more than one open invoice of `source`."""
    return any(
        db.execute(
            "SELECT COUNT(*) FROM invoices WHERE source = ? AND number = ? AND status != 'deleted'",
            (source, number),
        ).fetchone()[0]
        > 1
        for number in numbers
    )


def _apply_one(
    db: Database,
    clock: Clock,
    source: str,
    obj: str,
    entity_id: int,
    on_new_billing_contact: Any,
    item: Any,
    lookups: InvoiceLookups | None,
    counts: Counter[str],
    applied: list[str],
    *,
    per_record: bool,
) -> None:
    """Apply one record of a page: count its outcome, quarantine it with the reason it is refused."""
    if isinstance(item, Rejected):
        quarantine(
            db,
            clock,
            source=source,
            obj=item.object,
            remote_id=item.remote_id,
            reason=item.reason,
            raw_json=_rejected_raw(item.raw),
        )
        counts["quarantined"] += 1
        return
    catch = _REFUSED_OR_STORE if per_record else _REFUSED
    try:
        with db.atomic() if per_record else contextlib.nullcontext():
            if isinstance(item, RemoteCompany):
                outcome = upsert_company(db, clock, source, entity_id, item)
            elif isinstance(item, RemoteContact):
                outcome, is_new_billing = upsert_contact(db, clock, source, item)
                if is_new_billing and on_new_billing_contact is not None:
                    on_new_billing_contact(db, item)
            elif isinstance(item, RemoteInvoice):
                outcome = upsert_invoice(db, clock, source, item, lookups)
            else:
                raise Skip(f"unexpected record type {type(item).__name__}")
    except catch as exc:
        if isinstance(exc, Skip):
            reason = str(exc)
        elif isinstance(exc, UnicodeEncodeError) and (problem := _text_problem(item)):
            reason = problem
        else:
            reason = f"could not be stored ({type(exc).__name__}: {exc})"
        quarantine(
            db,
            clock,
            source=source,
            obj=obj,
            remote_id=str(getattr(item, "remote_id", "?")),
            reason=reason,
            raw_json=_raw(item, cut=True),
        )
        counts["quarantined"] += 1
        return
    counts[outcome] += 1
    # A held record was read and is waiting for a person in the exceptions queue: any quarantine
    # row about an older listing of it is out of date.
    applied.append(getattr(item, "remote_id", ""))


def _plain_number(item: Any) -> Any:
    """An invoice with its number as a person reads it: no invisible characters (a zero-width
    space, a byte order mark, a control character) that would make "INV-1042" a second number."""
    if not isinstance(item, RemoteInvoice) or (item.number.isascii() and item.number.isprintable()):
        return item
    number = "".join(c for c in item.number if unicodedata.category(c) not in ("Cf", "Cc")).strip()
    if not number:
        raw = item.raw if isinstance(item.raw, Mapping) else {"id": item.remote_id}
        return Rejected("invoice", item.remote_id, "invoice number has no visible characters", raw)
    return item._replace(number=number)


def _last_listings(items: list[Any]) -> list[Any]:
    """`items` with only the last listing of a record a page names more than once: the last is
    what the PSA says now, as across pages (and a bad last listing is quarantined, not hidden by
    a good one before it)."""
    last = {getattr(item, "remote_id", None): n for n, item in enumerate(items)}
    if len(last) == len(items):
        return items
    return [item for n, item in enumerate(items) if last.get(getattr(item, "remote_id", None)) == n
            or not getattr(item, "remote_id", None)]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
