"""Which billing entity a row of the operations pages belongs to, for the admin's entity filter.

An outbox entry, an email, an audit row, an exception or a quarantined record belongs to the
entity of the client, invoice, payment, outbox entry or tie-out report it names. A row that names
none of them (a PSA connector, a config-level matter, an address no contact has) belongs to no
entity and is shown under every filter, so that nothing a person must see is hidden by it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from app.core.store import Store

if TYPE_CHECKING:
    from app.web.admin.queries import QueueItem


def _client_of(column: str) -> str:
    return f"(SELECT entity_id FROM clients WHERE id = {column})"


def _payment_of(cond: str) -> str:
    return f"(SELECT c.entity_id FROM payments p JOIN clients c ON c.id = p.client_id WHERE {cond})"


def _invoice_of(cond: str) -> str:
    return f"(SELECT c.entity_id FROM invoices i JOIN clients c ON c.id = i.client_id WHERE {cond})"


def _one_entity_of_addresses(addresses: str) -> str:
    """The one entity of the clients whose contacts have these addresses (NULL for none or several)."""
    return (
        "(SELECT CASE WHEN COUNT(DISTINCT c.entity_id) = 1 THEN MIN(c.entity_id) END "
        "FROM contacts ct JOIN clients c ON c.id = ct.client_id "
        f"WHERE ct.email IN (SELECT trim(value) FROM {addresses}))"  # NOCASE, indexed
    )


def outbox_entity(alias: str = "outbox") -> str:
    """SQL: the entities.id an outbox entry belongs to, or NULL. In the order the entry's handler
    picks its entity (app/entity_services.py): the payload's `entity`, the payment, the client,
    the invoice, then the recipients."""

    def j(path: str) -> str:
        return f"json_extract({alias}.payload_json, '$.{path}')"

    return (
        "COALESCE("
        f"(SELECT id FROM entities WHERE key = {j('entity')}), "
        + _payment_of(f"p.id = {j('payment_id')}") + ", "
        + _payment_of(f"p.token = COALESCE({j('payment_token')}, {j('context.payment_token')})") + ", "
        "(SELECT c.entity_id FROM allocations a JOIN payments p ON p.id = a.payment_id "
        f"JOIN clients c ON c.id = p.client_id WHERE a.id = {j('allocation_id')}), "
        + _client_of(f"COALESCE({j('client_id')}, {j('context.client_id')})") + ", "
        + _invoice_of(f"i.id = {j('invoice_id')}") + ", "
        + _invoice_of(f"i.source = {j('source')} AND i.remote_id = {j('invoice_remote_id')}") + ", "
        "(SELECT c.entity_id FROM line_disputes d JOIN clients c ON c.id = d.client_id "
        f"WHERE {alias}.kind = 'psa_dispute_note' AND d.id = {j('dispute_id')}), "
        "(SELECT CASE WHEN COUNT(DISTINCT c.entity_id) = 1 THEN MIN(c.entity_id) END FROM payout_items pi "
        "JOIN payments p ON p.id = pi.payment_id JOIN clients c ON c.id = p.client_id "
        f"WHERE pi.payout_id = {j('payout_row_id')}), "
        + _one_entity_of_addresses(f"json_each({alias}.payload_json, '$.to')")
        + ")"
    )


def email_entity(alias: str = "email_log") -> str:
    """SQL: the entities.id of a logged email by its recipients, or NULL. `to_addr` is "a, b": it is
    read as the JSON list ["a", " b"] (an address holds no quote or backslash to escape)."""
    listed = f"replace(replace(replace({alias}.to_addr, '\\', ''), '\"', ''), ',', '\",\"')"
    return _one_entity_of_addresses(f"json_each('[\"' || {listed} || '\"]')")


def audit_entity(alias: str = "audit_log") -> str:
    """SQL: the entities.id of an audit row by its target (client:, payment:, invoice:, outbox:),
    else by the client or entity its detail names, or NULL."""
    t, d = f"{alias}.target", f"{alias}.detail_json"
    detail_client = f"json_extract({d}, '$.client_id')"

    def after(prefix: str) -> str:
        return f"CAST(substr({t}, {len(prefix) + 1}) AS INTEGER)"

    return (
        f"CASE WHEN {t} LIKE 'client:%' THEN {_client_of(after('client:'))} "
        f"WHEN {t} LIKE 'payment:%' THEN {_payment_of('p.id = ' + after('payment:'))} "
        f"WHEN {t} LIKE 'invoice:%' THEN {_invoice_of('i.id = ' + after('invoice:'))} "
        f"WHEN {t} LIKE 'outbox:%' THEN (SELECT {outbox_entity('o')} FROM outbox o "
        f"WHERE o.id = {after('outbox:')}) "
        f"ELSE COALESCE({_client_of(detail_client)}, "
        f"(SELECT id FROM entities WHERE id = json_extract({d}, '$.entity_id'))) END"
    )


def narrow(expr: str, entity_id: int | None) -> tuple[str, list[Any]]:
    """(an SQL condition, its parameters): rows of `entity_id` and rows of no entity; none for all."""
    if entity_id is None:
        return "1 = 1", []
    return f"COALESCE({expr}, ?) = ?", [entity_id, entity_id]


def _scalar(store: Store, sql: str, params: tuple[Any, ...]) -> int | None:
    """The one value of a query or of a parenthesised subquery expression (the helpers above)."""
    found = store.scalar(f"SELECT {sql}" if sql.startswith("(") else sql, params)
    return None if found is None else int(found)


def _outbox_row(store: Store, cond: str, value: Any) -> int | None:
    return _scalar(store, f"SELECT {outbox_entity('o')} FROM outbox o WHERE {cond}", (value,))


def _id(text: str) -> int | None:
    # Beyond SQLite's INTEGER there is no such row (and binding it would raise OverflowError).
    return int(text) if text.isdigit() and int(text) < 2**63 else None


def ref_entity(store: Store, kind: str, ref: str, detail: dict[str, Any]) -> int | None:
    """The entities.id an exception belongs to by its `ref` (see the raise_exception calls), or None."""
    head, _, rest = ref.partition(":")
    first = rest.split(":", 1)[0]
    by_prefix = {
        "client": lambda n: _scalar(store, "SELECT entity_id FROM clients WHERE id = ?", (n,)),
        "invoice": lambda n: _scalar(store, _invoice_of("i.id = ?"), (n,)),
        "payment": lambda n: _scalar(store, _payment_of("p.id = ?"), (n,)),
        "dispute": lambda n: _scalar(
            store, _payment_of("p.id = (SELECT payment_id FROM disputes WHERE id = ?)"), (n,)
        ),
        "line_dispute": lambda n: _scalar(
            store, "SELECT c.entity_id FROM line_disputes d JOIN clients c ON c.id = d.client_id "
            "WHERE d.id = ?", (n,)
        ),
    }
    if kind == "tieout":  # "<entity key>:<date>"
        return _scalar(store, "SELECT id FROM entities WHERE key = ?", (head,))
    if kind == "accounting_connection":  # "<accounting kind>:<entity id>"
        n = _id(rest)
        return None if n is None else _scalar(store, "SELECT id FROM entities WHERE id = ?", (n,))
    if head in by_prefix and _id(first) is not None:
        return by_prefix[head](_id(first))
    if head == "refund":
        return _scalar(store, _payment_of("p.id = (SELECT payment_id FROM refunds WHERE processor_ref = ?)"),
                       (rest,))
    if head == "intent":
        return _scalar(store, _payment_of("p.processor_ref = ?"), (rest,))
    if head == "payout":
        return _scalar(
            store,
            "SELECT CASE WHEN COUNT(DISTINCT c.entity_id) = 1 THEN MIN(c.entity_id) END FROM payout_items pi "
            "JOIN payouts po ON po.id = pi.payout_id JOIN payments p ON p.id = pi.payment_id "
            "JOIN clients c ON c.id = p.client_id WHERE po.processor_ref = ?",
            (rest,),
        )
    n = _id(ref)
    if n is not None:  # a dead outbox entry (outbox_dead, accounting_match)
        return _outbox_row(store, "o.id = ?", n)
    # "<address>:<outbox key>" (email_refused) or an outbox key itself (psa_reversal_by_hand)
    for key in (ref, rest):
        if key:
            found = _outbox_row(store, "o.idem_key = ?", key)
            if found is not None:
                return found
    for name, sql in (
        ("client_id", "SELECT entity_id FROM clients WHERE id = ?"),
        ("invoice_id", _invoice_of("i.id = ?")),
        ("payment_id", _payment_of("p.id = ?")),
    ):
        value = detail.get(name)
        if isinstance(value, int) and 0 < value < 2**63:
            return _scalar(store, sql, (value,))
    return None


def quarantine_entity(store: Store, row: sqlite3.Row) -> int | None:
    """A quarantined PSA record's entity: that of the client, invoice or contact already stored
    under the same source and remote id (a record never stored yet belongs to no entity)."""
    obj, source, remote_id = row["object"].lower(), row["source"], row["remote_id"]
    if "invoice" in obj:
        return _scalar(store, _invoice_of("i.source = ? AND i.remote_id = ?"), (source, remote_id))
    if "contact" in obj:
        return _scalar(
            store, "SELECT c.entity_id FROM contacts ct JOIN clients c ON c.id = ct.client_id "
            "WHERE ct.source = ? AND ct.remote_id = ?", (source, remote_id)
        )
    if any(word in obj for word in ("compan", "client", "account")):
        return _scalar(store, "SELECT entity_id FROM clients WHERE source = ? AND remote_id = ?",
                       (source, remote_id))
    return None


def item_entity(store: Store, item: QueueItem) -> int | None:
    """The entities.id of an exceptions-queue item, or None when it belongs to no entity."""
    if item.source == "exception":
        row = store.one("SELECT kind, ref, detail_json FROM exceptions WHERE id = ?", (item.id,))
        if row is None:
            return None
        return ref_entity(store, row["kind"], row["ref"], json.loads(row["detail_json"] or "{}"))
    if item.source == "quarantine":
        row = store.one("SELECT * FROM quarantine WHERE id = ?", (item.id,))
        return None if row is None else quarantine_entity(store, row)
    return None  # a PSA connector's sync error: the connectors serve every entity


def queue_of(store: Store, items: list[QueueItem], entity_id: int | None) -> list[QueueItem]:
    """The queue items of `entity_id` and those of no entity; every item for no filter."""
    if entity_id is None:
        return items
    return [i for i in items if item_entity(store, i) in (None, entity_id)]
