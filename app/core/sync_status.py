"""Per-connector sync status for the admin, and the stop that an authentication failure puts on one.

A 401/403 from a PSA means its keys are wrong or were revoked: retrying every poll would only hammer
the PSA (and may lock the API user out). The poll stops that connector with one `sync_auth`
exception; scheduled polls skip it until the exception is resolved or the connector's settings
change (a new key). A poll started by hand (`cashloop sync`) always tries, and a success clears it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.store import Store

AUTH_KIND = "sync_auth"


@dataclass(frozen=True)
class ObjectStatus:
    object: str  # companies, contacts, invoices, invoice_ids (the deletion check)
    last_run_at: str | None
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    counts: dict[str, int]  # outcomes of the last run: created, updated, unchanged, quarantined, ...
    is_sweeping: bool  # a sweep (e.g. a backfill) stopped part-way and resumes on the next poll


@dataclass(frozen=True)
class ConnectorStatus:
    connector: str
    last_run_at: str | None
    last_success_at: str | None  # the oldest of its objects' last successes: when all were last fine
    last_error: str | None
    is_stopped: bool  # stopped by an authentication failure until someone acts
    stopped_reason: str | None
    quarantined: int  # open quarantine rows
    held_changes: int  # open exceptions for source changes on invoices with payments
    objects: tuple[ObjectStatus, ...]

    @property
    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for obj in self.objects:
            for key, value in obj.counts.items():
                total[key] = total.get(key, 0) + value
        return total


def connector_status(store: Store) -> list[ConnectorStatus]:
    """Every connector that has synced (or failed to), by name. Read-only."""
    by_connector: dict[str, list[Any]] = {}
    for row in store.all("SELECT * FROM sync_state ORDER BY connector, object"):
        by_connector.setdefault(row["connector"], []).append(row)
    out = []
    for connector, rows in by_connector.items():
        objects = tuple(
            ObjectStatus(
                object=r["object"],
                last_run_at=r["last_run_at"],
                last_success_at=r["last_success_at"],
                last_error=r["last_error"],
                last_error_at=r["last_error_at"],
                counts=json.loads(r["counts_json"] or "{}"),
                is_sweeping=bool(r["cursor"] and str(r["cursor"]).startswith("sweep1:")),
            )
            for r in rows
        )
        stop = _open_stop(store.db, connector)
        successes = [o.last_success_at for o in objects]
        out.append(
            ConnectorStatus(
                connector=connector,
                last_run_at=max((o.last_run_at for o in objects if o.last_run_at), default=None),
                last_success_at=None if None in successes else min(successes),  # type: ignore[type-var]
                last_error=next((o.last_error for o in objects if o.last_error), None),
                is_stopped=stop is not None,
                stopped_reason=stop["summary"] if stop else None,
                quarantined=int(
                    store.scalar(
                        "SELECT COUNT(*) FROM quarantine WHERE source = ? AND resolved_at IS NULL",
                        (connector,),
                    )
                ),
                held_changes=_held_changes(store, connector),
                objects=objects,
            )
        )
    return out


def settings_fingerprint(settings: Any) -> str:
    """A digest of a connector's settings, secrets included (never the secrets themselves)."""
    values = {f.name: str(getattr(settings, f.name)) for f in fields(settings)} if settings else {}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def stopped_by(store: Store, connector: str, fingerprint: str) -> str | None:
    """The reason the connector is stopped with these settings, or None when it may poll."""
    stop = _open_stop(store.db, connector)
    if stop is None:
        return None
    detail = json.loads(stop["detail_json"] or "{}")
    return stop["summary"] if detail.get("fingerprint") == fingerprint else None


def stop_connector(db: Database, clock: Clock, *, connector: str, fingerprint: str, error: str) -> bool:
    """Open the one `sync_auth` exception for this connector (inside the caller's write); returns
    False when one is already open, so repeated failures never pile up."""
    if _open_stop(db, connector) is not None:
        return False
    now = to_db(clock.utc_now())
    db.execute(
        "INSERT INTO exceptions (kind, ref, summary, detail_json, created_at) VALUES (?, ?, ?, ?, ?)",
        (
            AUTH_KIND,
            f"{connector}:{now}",
            f"{connector} refused Cashloop's credentials; syncing is stopped until they are fixed "
            f"(then run `cashloop sync` or resolve this): {error[:300]}",
            json.dumps({"connector": connector, "fingerprint": fingerprint, "error": error}),
            now,
        ),
    )
    return True


def clear_stop(db: Database, clock: Clock, *, connector: str) -> None:
    """Resolve the connector's open `sync_auth` exception after a poll that got through."""
    stop = _open_stop(db, connector)
    if stop is None:
        return
    db.execute("UPDATE exceptions SET resolved_at = ? WHERE id = ?", (to_db(clock.utc_now()), stop["id"]))
    audit(
        db,
        clock,
        actor="system",
        action="exception.resolved",
        target=f"exception:{stop['id']}",
        detail={"kind": AUTH_KIND, "ref": stop["ref"], "note": "the next poll was accepted"},
    )


def _held_changes(store: Store, connector: str) -> int:
    refs = store.all(
        "SELECT ref FROM exceptions WHERE kind = 'source_change_on_paid_invoice' AND resolved_at IS NULL"
    )
    ids = sorted(
        {int(r[0].split(":")[1]) for r in refs if r[0].count(":") >= 2 and r[0].split(":")[1].isdigit()}
    )
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return int(
        store.scalar(f"SELECT COUNT(*) FROM invoices WHERE source = ? AND id IN ({marks})", (connector, *ids))
    )


def _open_stop(db: Database, connector: str) -> Any:
    return db.execute(
        "SELECT * FROM exceptions WHERE kind = ? AND ref LIKE ? AND resolved_at IS NULL "
        "ORDER BY id DESC LIMIT 1",
        (AUTH_KIND, f"{connector}:%"),
    ).fetchone()
