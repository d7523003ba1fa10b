"""What a person does about an item in the exceptions queue; every action is audited.

- `resolve_exception`: the person dealt with it (the note says how);
- `dismiss_quarantine`: a quarantined PSA record that needs nothing (it is re-read, and comes
  back, if the PSA changes it and it is still bad);
- `retry_outbox`: a dead outbox entry gets a fresh set of attempts (after fixing its cause).
Functions taking `db` expect the caller's `store.write()`. Each raises ResolutionError for
something already resolved or unknown.
"""

from __future__ import annotations

from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, to_db


class ResolutionError(ValueError):
    """Nothing to resolve: the item is unknown or already done; the message says which."""


def resolve_exception(db: Database, clock: Clock, exception_id: int, *, actor: str, note: str) -> None:
    row = db.execute("SELECT kind, ref, resolved_at FROM exceptions WHERE id = ?", (exception_id,)).fetchone()
    if row is None:
        raise ResolutionError("No such exception.")
    if row["resolved_at"]:
        raise ResolutionError("This exception was already resolved.")
    db.execute("UPDATE exceptions SET resolved_at = ? WHERE id = ?", (to_db(clock.utc_now()), exception_id))
    audit(
        db,
        clock,
        actor=actor,
        action="exception.resolved",
        target=f"exception:{exception_id}",
        detail={"kind": row["kind"], "ref": row["ref"], "note": note.strip()[:500]},
    )


def dismiss_quarantine(db: Database, clock: Clock, quarantine_id: int, *, actor: str, note: str) -> None:
    row = db.execute(
        "SELECT source, object, remote_id, resolved_at FROM quarantine WHERE id = ?", (quarantine_id,)
    ).fetchone()
    if row is None:
        raise ResolutionError("No such quarantined record.")
    if row["resolved_at"]:
        raise ResolutionError("This record was already dismissed.")
    db.execute("UPDATE quarantine SET resolved_at = ? WHERE id = ?", (to_db(clock.utc_now()), quarantine_id))
    audit(
        db,
        clock,
        actor=actor,
        action="quarantine.dismissed",
        target=f"quarantine:{quarantine_id}",
        detail={
            "source": row["source"],
            "object": row["object"],
            "remote_id": row["remote_id"],
            "note": note.strip()[:500],
        },
    )


def retry_outbox(db: Database, clock: Clock, outbox_id: int, *, actor: str) -> None:
    """dead -> pending with its attempts reset, due now; its outbox_dead exception is removed."""
    now = to_db(clock.utc_now())
    cur = db.execute(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, done_at = NULL "
        "WHERE id = ? AND status = 'dead'",
        (now, outbox_id),
    )
    if cur.rowcount != 1:
        raise ResolutionError("Only a dead outbox entry can be retried.")
    # NOTE: deleted, not resolved: exceptions are unique per (kind, ref), and an entry that dies
    # again must open a new one. The audit entry below keeps the history.
    db.execute(
        "DELETE FROM exceptions WHERE kind IN ('outbox_dead', 'accounting_match') AND ref = ?",
        (str(outbox_id),),
    )
    audit(db, clock, actor=actor, action="outbox.retried", target=f"outbox:{outbox_id}")
