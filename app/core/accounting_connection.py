"""Connecting QuickBooks Online or Xero, and what happens around a connection.

- The OAuth2 authorization-code flow's state: one random value per "Connect", bound to the admin
  session that started it, usable once, for STATE_TTL (`begin_connect`, `take_state`); a Xero
  sign-in that authorised several organisations keeps its tokens on that row until the admin
  picks one (`hold_for_tenant_choice`, `take_tenant_choice`).
- A connection that needs a person (revoked, never connected) opens ONE exception per entity and
  kind (`connection_needed`) while the accounting outbox entries wait; connecting again resolves
  it and makes the waiting entries due at once (`connected`).
- "Book again in accounting" (`book_again`): a new journal_payment entry with a new key, for a
  payment whose booking was deleted in the accounting system.
Functions taking `db` expect the caller's `store.write()`; none of them calls a vendor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlite_utils import Database

from app.core import outbox
from app.core.audit import audit
from app.core.clock import Clock, from_db, to_db
from app.core.keys import derive_key, hash_token, public_token
from app.core.store import Store

STATE_TTL = timedelta(minutes=15)
# Outbox kinds delivered to the accounting sink: they wait together when it is not connected.
OUTBOX_KINDS = ("journal_payment", "journal_reversal", "accounting_deposit")
EXCEPTION_KIND = "accounting_connection"
AGAIN = "Start again with Connect."
LABELS = {"quickbooks": "QuickBooks Online", "xero": "Xero", "journal": "The journal export"}


class ConnectError(ValueError):
    """A connect step cannot go on (unknown, replayed or expired state, another session)."""


@dataclass(frozen=True)
class PendingState:
    id: int
    entity_id: int
    kind: str
    actor: str
    redirect_uri: str


@dataclass(frozen=True)
class TenantChoice:
    """A Xero sign-in waiting for the admin to pick one of the organisations it authorised."""

    state_id: int
    tenants: tuple[tuple[str, str], ...]  # (tenant id, organisation name)
    sealed_tokens: bytes


def begin_connect(
    db: Database,
    clock: Clock,
    *,
    entity_id: int,
    kind: str,
    admin_session_id: int,
    actor: str,
    redirect_uri: str,
) -> str:
    """A new state for the consent URL; only its hash is stored."""
    state = public_token(32)
    db.execute(
        "INSERT INTO accounting_oauth_states (state_hash, entity_id, kind, admin_session_id, actor, "
        "redirect_uri, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (hash_token(state), entity_id, kind, admin_session_id, actor, redirect_uri, to_db(clock.utc_now())),
    )
    audit(
        db,
        clock,
        actor=actor,
        action="accounting.connect_started",
        target=f"accounting:{kind}",
        detail={"entity_id": entity_id},
    )
    return state


def take_state(db: Database, clock: Clock, state: str, *, admin_session_id: int) -> PendingState:
    """The state of a callback, used up now. Raises ConnectError for an unknown, replayed, expired
    or foreign one (the admin then starts again with Connect)."""
    row = db.execute(
        "SELECT * FROM accounting_oauth_states WHERE state_hash = ?", (hash_token(state),)
    ).fetchone()
    if row is None:
        raise ConnectError("This sign-in answer does not belong to a Connect started here. " + AGAIN)
    if row["admin_session_id"] != admin_session_id:
        raise ConnectError("This sign-in was started in another admin session. " + AGAIN)
    if row["used_at"]:
        raise ConnectError("This sign-in answer was already used. " + AGAIN)
    now = clock.utc_now()
    db.execute("UPDATE accounting_oauth_states SET used_at = ? WHERE id = ?", (to_db(now), row["id"]))
    if now - from_db(row["created_at"]) > STATE_TTL:
        raise ConnectError("This sign-in took longer than 15 minutes. " + AGAIN)
    return PendingState(row["id"], row["entity_id"], row["kind"], row["actor"], row["redirect_uri"])


def hold_for_tenant_choice(
    db: Database, state_id: int, sealed_tokens: bytes, tenants: list[tuple[str, str]]
) -> None:
    db.execute(
        "UPDATE accounting_oauth_states SET pending_tokens_enc = ?, tenants_json = ? WHERE id = ?",
        (sealed_tokens, json.dumps(tenants), state_id),
    )


def tenant_choice(db: Database, clock: Clock, state_id: int, *, admin_session_id: int) -> TenantChoice:
    """The organisations waiting to be picked from; ConnectError when there is no such choice."""
    row = db.execute("SELECT * FROM accounting_oauth_states WHERE id = ?", (state_id,)).fetchone()
    if row is None or row["admin_session_id"] != admin_session_id or row["pending_tokens_enc"] is None:
        raise ConnectError("There is no organisation to choose (it was chosen already). " + AGAIN)
    if clock.utc_now() - from_db(row["created_at"]) > STATE_TTL:
        raise ConnectError("This sign-in took longer than 15 minutes. " + AGAIN)
    tenants = tuple((str(t), str(n)) for t, n in json.loads(row["tenants_json"]))
    return TenantChoice(row["id"], tenants, bytes(row["pending_tokens_enc"]))


def take_tenant_choice(
    db: Database, clock: Clock, state_id: int, tenant_id: str, *, admin_session_id: int
) -> tuple[TenantChoice, str]:
    """The held tokens and the chosen organisation's name; the held tokens are deleted (single use)."""
    choice = tenant_choice(db, clock, state_id, admin_session_id=admin_session_id)
    names = dict(choice.tenants)
    if tenant_id not in names:
        raise ConnectError("Choose one of the organisations listed.")
    db.execute("UPDATE accounting_oauth_states SET pending_tokens_enc = NULL WHERE id = ?", (state_id,))
    return choice, names[tenant_id]


def connection_needed(store: Store, clock: Clock, *, entity_id: int, kind: str, reason: str) -> None:
    """Open (or reopen) the one exception saying the connection must be made again."""
    label = LABELS.get(kind, kind)
    summary = (
        f"{label} needs to be connected again on the Accounting page; accounting entries wait "
        f"until then. Cause: {reason[:300]}"
    )
    with store.write() as db:
        db.execute(
            "INSERT INTO exceptions (kind, ref, summary, detail_json, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, ref) DO UPDATE SET resolved_at = NULL, summary = excluded.summary, "
            "created_at = excluded.created_at WHERE exceptions.resolved_at IS NOT NULL",
            (
                EXCEPTION_KIND,
                f"{kind}:{entity_id}",
                summary,
                json.dumps({"kind": kind}),
                to_db(clock.utc_now()),
            ),
        )


def connected(db: Database, clock: Clock, *, entity_id: int, kind: str, actor: str, tenant_name: str) -> int:
    """After a (re)connect: the waiting entries are due now and the exception is resolved.
    Returns how many entries were waiting."""
    waiting = outbox.unpark(db, clock, OUTBOX_KINDS)
    db.execute(
        "UPDATE exceptions SET resolved_at = ? WHERE kind = ? AND ref = ? AND resolved_at IS NULL",
        (to_db(clock.utc_now()), EXCEPTION_KIND, f"{kind}:{entity_id}"),
    )
    audit(
        db,
        clock,
        actor=actor,
        action="accounting.connected",
        target=f"accounting:{kind}",
        detail={"entity_id": entity_id, "tenant_name": tenant_name, "waiting_entries": waiting},
    )
    return waiting


def waiting_counts(store: Store) -> dict[str, int]:
    """Accounting outbox entries parked until the connection is made, per kind."""
    marks = ", ".join("?" for _ in OUTBOX_KINDS)
    rows = store.all(
        f"SELECT kind, COUNT(*) FROM outbox WHERE status = 'pending' AND parked_at IS NOT NULL "
        f"AND kind IN ({marks}) GROUP BY kind",
        OUTBOX_KINDS,
    )
    return {r[0]: int(r[1]) for r in rows}


def open_counts(store: Store) -> dict[str, int]:
    """Accounting entries not delivered yet (pending or running) and dead ones, for the page."""
    marks = ", ".join("?" for _ in OUTBOX_KINDS)
    rows = store.all(
        f"SELECT CASE WHEN status = 'dead' THEN 'dead' ELSE 'pending' END, COUNT(*) FROM outbox "
        f"WHERE status IN ('pending', 'running', 'dead') AND kind IN ({marks}) GROUP BY 1",
        OUTBOX_KINDS,
    )
    return {"pending": 0, "dead": 0} | {r[0]: int(r[1]) for r in rows}


class BookAgainError(ValueError):
    """The payment cannot be booked again now; the message says why."""


def book_again(db: Database, clock: Clock, payment_id: int, *, actor: str) -> str:
    """Enqueue the payment's booking once more under a new key (generation n+1), so the sink
    creates a new record instead of replaying the first one. Returns the new key."""
    pay = db.execute("SELECT id, status, token FROM payments WHERE id = ?", (payment_id,)).fetchone()
    if pay is None:
        raise BookAgainError("No such payment.")
    if pay["status"] != "succeeded":
        raise BookAgainError("Only a succeeded payment is booked in accounting.")
    entries = db.execute(
        "SELECT id, status, payload_json FROM outbox WHERE kind = 'journal_payment' "
        "AND json_extract(payload_json, '$.payment_id') = ? ORDER BY id",
        (payment_id,),
    ).fetchall()
    if not entries:
        raise BookAgainError("This payment has no accounting entry to repeat.")
    if any(e["status"] in ("pending", "running") for e in entries):
        raise BookAgainError("This payment is already waiting to be booked; see its effects below.")
    generation = len(entries) + 1
    key = derive_key("journal", payment=payment_id, generation=generation)
    payload: dict[str, Any] = json.loads(entries[-1]["payload_json"]) | {"generation": generation}
    outbox.enqueue(db, clock, kind="journal_payment", key=key, payload=payload)
    audit(
        db,
        clock,
        actor=actor,
        action="payment.booked_again",
        target=f"payment:{payment_id}",
        detail={"generation": generation, "payment_token": pay["token"]},
    )
    return key
