"""The MSP's billing entities: the top-level [entity] (key "default") and any [[entities]] tables.

Each entity bills through its own Stripe account, books and sender; every client belongs to one.
Intake assigns a new client by the entities' `psa_match` rules (kept in the `entities` table so
intake needs no config); a company two entities claim is quarantined, never guessed. An admin
can move a client that has no money through Cashloop yet; a moved client stays where it was put.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.audit import audit, raise_exception
from app.core.clock import Clock
from app.core.store import Store

if TYPE_CHECKING:
    from sqlite_utils import Database

    from app.config import Config, EntityTableSettings
    from sync.base import RemoteCompany

DEFAULT_KEY = "default"
# psa_match field -> (PSA source kind, the company record's fields that carry it).
_RULE_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "connectwise_territories": ("connectwise", ("territory",)),
    "autotask_territories": ("autotask", ("territoryID", "TerritoryID")),
    "halo_toplevels": ("halopsa", ("toplevel_id", "toplevel_name")),
}


class EntityError(Exception):
    """A client or key names no configured entity, or a request would cross entities."""


# ---------------------------------------------------------------------------- config side


def _table(cfg: Config, key: str) -> EntityTableSettings:
    for e in cfg.entities:
        if e.key == key:
            return e
    raise EntityError(f"no entity {key!r} in the config (known: {', '.join(keys(cfg))})")


def keys(cfg: Config) -> list[str]:
    return [DEFAULT_KEY, *(e.key for e in cfg.entities)]


def entity_config(cfg: Config, key: str) -> Config:
    """The whole config as seen by entity `key`: its entity, branding, Stripe, sender and books."""
    if key == DEFAULT_KEY:
        return cfg
    from app.config import EntitySettings

    e = _table(cfg, key)
    accounting = e.accounting
    if not accounting.journal.path:
        journal = accounting.journal
        path = str(cfg.data_path / f"journal-{e.key}.{journal.format}")
        accounting = replace(accounting, journal=replace(journal, path=path))
    email = replace(
        cfg.email, from_address=e.email.from_address, from_name=e.email.from_name, reply_to=e.email.reply_to)
    return replace(
        cfg,
        entity=EntitySettings(name=e.name, currency=e.currency),
        branding=e.branding,
        stripe=e.stripe,
        email=email,
        accounting=accounting,
        entities=(),
    )


def _rules(e: EntityTableSettings) -> dict[str, list[str]]:
    m = e.psa_match
    found = {name: list(getattr(m, name)) for name in (*_RULE_FIELDS, "company_ids")}
    return {name: values for name, values in found.items() if values}


def check_entities(cfg: Config) -> None:
    """Raise ConfigError naming the key: a key used twice, a PSA value two entities claim,
    a books section missing for its kind, two entities writing one journal file."""
    from app.config import ConfigError

    seen: set[str] = set()
    claimed: dict[tuple[str, str], str] = {}
    journals = {str(cfg.journal_path): "accounting.journal.path"}
    for e in cfg.entities:
        where = f"entities.{e.key}"
        if e.key in seen:
            raise ConfigError(f"{where}.key: {e.key!r} names two [[entities]] tables; keys must differ")
        seen.add(e.key)
        kind = e.accounting.kind
        if kind != "journal" and getattr(e.accounting, kind) is None:
            raise ConfigError(f"{where}.accounting.{kind}: missing section for accounting.kind = {kind!r}")
        for name, values in _rules(e).items():
            for value in values:
                other = claimed.setdefault((name, value.strip().casefold()), e.key)
                if other != e.key:
                    raise ConfigError(
                        f"{where}.psa_match.{name}: {value!r} is also claimed by entities.{other}; "
                        "a PSA company belongs to one entity")
        journal = str(entity_config(cfg, e.key).journal_path)
        if journal in journals:
            raise ConfigError(f"{where}.accounting.journal.path: {journal} is also the journal of "
                              f"{journals[journal]}; each entity keeps its own books")
        journals[journal] = f"{where}.accounting.journal.path"


# ------------------------------------------------------------------------------ store side


def sync_entities(store: Store, config: Config) -> dict[str, int]:
    """Write every configured entity (name, currency, PSA rules) to the store; key -> id. Idempotent."""
    rows = [(DEFAULT_KEY, config.entity.name, config.entity.currency, "{}")]
    rows += [(e.key, e.name, e.currency, json.dumps(_rules(e), sort_keys=True)) for e in config.entities]
    with store.write() as db:
        for key, name, currency, rules in rows:
            db.execute(
                "INSERT INTO entities (key, name, currency, psa_match_json) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET name = excluded.name, currency = excluded.currency, "
                "psa_match_json = excluded.psa_match_json "
                "WHERE entities.name IS NOT excluded.name OR entities.currency IS NOT excluded.currency "
                "OR entities.psa_match_json IS NOT excluded.psa_match_json",
                (key, name, currency, rules),
            )
        return {r["key"]: int(r["id"]) for r in db.execute("SELECT id, key FROM entities")}


def ensure_entity(store: Store, config: Config) -> int:
    """The id of the default entity, every configured entity written to the store first. Idempotent."""
    return sync_entities(store, config)[DEFAULT_KEY]


def key_of_client(db: Database, client_id: int) -> str:
    row = db.execute(
        "SELECT e.key FROM clients c JOIN entities e ON e.id = c.entity_id WHERE c.id = ?", (client_id,)
    ).fetchone()
    if row is None:
        raise EntityError(f"client {client_id} is unknown")
    return str(row[0])


def _values(raw: Mapping[str, Any], names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for name in names:
        value = raw.get(name)
        if isinstance(value, Mapping):  # a ConnectWise reference: {"id": 3, "name": "Toronto"}
            out |= {str(value[k]).strip().casefold() for k in ("id", "name") if value.get(k) is not None}
        elif value is not None and value != "":
            out.add(str(value).strip().casefold())
    return out


@dataclass(frozen=True)
class Match:
    entity_id: int | None  # None: no entity claims the company (it goes to the default entity)
    reason: str = ""  # set when two entities claim it


def match_company(db: Database, source: str, company: RemoteCompany) -> Match:
    """Which entity's psa_match rules claim the company; two claiming it is a Match with a reason."""
    claims: dict[int, list[str]] = {}
    raw = company.raw or {}
    for row in db.execute("SELECT id, key, psa_match_json FROM entities WHERE psa_match_json != '{}'"):
        rules = json.loads(row["psa_match_json"])
        hits = []
        if company.remote_id in {str(v).strip() for v in rules.get("company_ids", [])}:
            hits.append(f"company id {company.remote_id}")
        for name, (kind, fields) in _RULE_FIELDS.items():
            if kind != source or name not in rules:
                continue
            wanted = {str(v).strip().casefold() for v in rules[name]}
            if hit := sorted(wanted & _values(raw, fields)):
                hits.append(f"{name} {hit[0]}")
        if hits:
            claims[int(row["id"])] = [f"{row['key']} ({', '.join(hits)})"]
    if len(claims) > 1:
        names = " and ".join(c[0] for c in claims.values())
        return Match(None, f"company {company.remote_id} is claimed by entities {names}; "
                           "change the psa_match rules so that one entity claims it")
    return Match(next(iter(claims), None))


def assign_on_intake(
    db: Database, clock: Clock, source: str, company: RemoteCompany, *, default_id: int, existing: Any
) -> int:
    """The entity a PSA company is (now) the client of. Raises EntityError when two entities claim it.

    An existing client keeps its entity when an admin placed it, and when money already went
    through its entity's Stripe account (its customer and cards live there): the change is held
    for a person instead.
    """
    if existing is not None and existing["entity_pinned"]:
        return int(existing["entity_id"])
    found = match_company(db, source, company)
    if found.reason:
        raise EntityError(found.reason)
    wanted = found.entity_id or default_id
    if existing is None or int(existing["entity_id"]) == wanted:
        return wanted
    if _has_money(db, int(existing["id"])):
        raise_exception(
            db, clock, kind="entity_change_held", ref=f"client:{existing['id']}",
            summary=f"{company.name}: the PSA now places it in another entity, but it already paid "
                    "through its current one; move it on the client page if that is right",
            detail={"client_id": existing["id"], "wanted_entity_id": wanted},
        )
        return int(existing["entity_id"])
    return wanted


def _has_money(db: Database, client_id: int) -> bool:
    return bool(
        db.execute(
            "SELECT 1 FROM clients WHERE id = ? AND stripe_customer_id IS NOT NULL UNION ALL "
            "SELECT 1 FROM payments WHERE client_id = ? LIMIT 1",
            (client_id, client_id),
        ).fetchone()
    )


def move_client(store: Store, clock: Clock, *, client_id: int, entity_key: str, actor: str) -> None:
    """An admin places a client in an entity (for good: intake keeps it there). Raises EntityError."""
    with store.write() as db:
        target = db.execute("SELECT id FROM entities WHERE key = ?", (entity_key,)).fetchone()
        if target is None:
            raise EntityError(f"no entity {entity_key!r}")
        client = db.execute("SELECT id, entity_id FROM clients WHERE id = ?", (client_id,)).fetchone()
        if client is None:
            raise EntityError(f"client {client_id} is unknown")
        if int(client["entity_id"]) != int(target["id"]) and _has_money(db, client_id):
            raise EntityError(
                "This client already has payments or a Stripe customer in its entity; its cards and "
                "charges live in that Stripe account, so it cannot move.")
        db.execute(
            "UPDATE clients SET entity_id = ?, entity_pinned = 1 WHERE id = ?", (target["id"], client_id))
        audit(db, clock, actor=actor, action="client.entity_moved", target=f"client:{client_id}",
              detail={"entity": entity_key})


def check_one_entity(db: Database, client_id: int, invoice_ids: Iterable[int]) -> None:
    """Raise EntityError when an invoice belongs to a client of another entity than the payer's."""
    ids = list(invoice_ids)
    if not ids:
        return
    row = db.execute(
        "SELECT COUNT(*) FROM invoices i JOIN clients c ON c.id = i.client_id "
        f"WHERE i.id IN ({','.join('?' * len(ids))}) "
        "AND c.entity_id != (SELECT entity_id FROM clients WHERE id = ?)",
        (*ids, client_id),
    ).fetchone()
    if row[0]:
        raise EntityError("These invoices are billed by different companies of ours; pay them separately.")


def journal_paths(cfg: Config) -> dict[str, Path]:
    """Each entity's journal file, by key."""
    return {key: entity_config(cfg, key).journal_path for key in keys(cfg)}


def email_tag(db: Database, client_id: int) -> dict[str, str]:
    """What an email payload carries so that it goes out in the client's entity's name and sender:
    nothing for the default entity (a single-entity MSP's payloads are as they always were)."""
    key = key_of_client(db, client_id)
    return {} if key == DEFAULT_KEY else {"entity": key}
