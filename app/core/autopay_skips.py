"""Skip one upcoming autopay charge of an invoice: the client's "not this time".

A skip names the charge date it skips (`skipped_on`, the local date of the run that would have
charged the invoice) and the date autopay may charge it again (`resume_on`, `autopay.skip_days`
later). Until then autopay plans the invoice for `resume_on` (app.core.autopay.plan_new) and it
is not "covered", so reminders treat it like any unpaid invoice. An invoice is skipped once; the
skip can be undone until its run's time on `skipped_on` has come. Each change is audited and
the billing contacts are told by email.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core import autopay
from app.core.audit import audit
from app.core.clock import Clock, local_today, to_db
from app.core.emails import date_long
from app.core.keys import derive_key
from app.core.notices import enqueue_notice
from app.core.store import Store


class SkipError(ValueError):
    """The skip (or its undo) cannot be done; the message says why, for the person."""


@dataclass(frozen=True)
class Skip:
    id: int
    invoice_id: int
    number: str
    skipped_on: date
    resume_on: date
    created_by: str


def _skip(row: Any) -> Skip:
    return Skip(
        row["id"],
        row["invoice_id"],
        row["number"],
        date.fromisoformat(row["skipped_on"]),
        date.fromisoformat(row["resume_on"]),
        row["created_by"],
    )


_SELECT = (
    "SELECT s.*, i.number FROM autopay_skips s JOIN invoices i ON i.id = s.invoice_id "
    "WHERE s.undone_at IS NULL"
)


def active_skip(db: Database, invoice_id: int) -> Skip | None:
    """The invoice's skip that is not undone (spent or still ahead), or None."""
    row = db.execute(f"{_SELECT} AND s.invoice_id = ?", (invoice_id,)).fetchone()
    return None if row is None else _skip(row)


def resume_on(db: Database, invoice_id: int) -> date | None:
    """The first local date autopay may charge the invoice after a skip, or None without one."""
    has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'autopay_skips'").fetchone()
    if not has:  # a store migrated before skips existed
        return None
    row = db.execute(
        "SELECT resume_on FROM autopay_skips WHERE invoice_id = ? AND undone_at IS NULL", (invoice_id,)
    ).fetchone()
    return None if row is None else date.fromisoformat(row[0])


def client_skips(db: Database, client_id: int, *, today: date) -> list[Skip]:
    """The client's skips still holding an open invoice back (resume date not reached)."""
    rows = db.execute(
        f"{_SELECT} AND i.client_id = ? AND i.status = 'open' AND s.resume_on > ? "
        "ORDER BY s.skipped_on, i.number",
        (client_id, today.isoformat()),
    ).fetchall()
    return [_skip(r) for r in rows]


def can_undo(skip: Skip, *, now: datetime, run_time: str, tz: ZoneInfo) -> bool:
    return now < autopay.local_run_at(skip.skipped_on, run_time, tz)


def _context(db: Database, invoice_id: int, actor: str) -> dict[str, Any]:
    inv = db.execute(
        "SELECT i.number, i.currency, b.balance_minor FROM invoices i JOIN invoice_balances b "
        "ON b.invoice_id = i.id WHERE i.id = ?",
        (invoice_id,),
    ).fetchone()
    return {
        "number": inv["number"],
        "currency": inv["currency"],
        "amount_minor": inv["balance_minor"],
        "actor": actor,
    }


def skip_next_charge(
    store: Store,
    clock: Clock,
    tz: ZoneInfo,
    *,
    client_id: int,
    invoice_id: int,
    days: int,
    run_time: str,
    actor: str,
    manage_url: str,
    approval_default: str = "",
) -> Skip:
    """Skip the invoice's next planned first charge; raises SkipError when there is none to skip."""
    now = clock.utc_now()
    with store.write() as db:
        if active_skip(db, invoice_id) is not None:
            raise SkipError("This invoice's autopay charge was already skipped once; pay it here instead.")
        planned = next(
            (
                c
                for c in autopay.plan_new(
                    db, today=None, client_id=client_id, approval_default=approval_default
                ).charges
                if invoice_id in c.invoice_ids
            ),
            None,
        )
        if planned is None:
            raise SkipError("Autopay has no charge planned for this invoice, so there is nothing to skip.")
        skipped_on = autopay.run_on(planned.charge_on, now=now, run_time=run_time, tz=tz)
        resume = skipped_on + timedelta(days=days)
        cur = db.execute(
            "INSERT INTO autopay_skips (invoice_id, skipped_on, resume_on, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?)",
            (invoice_id, skipped_on.isoformat(), resume.isoformat(), to_db(now), actor),
        )
        skip_id = int(cur.lastrowid)
        context = _context(db, invoice_id, actor)
        audit(
            db,
            clock,
            actor=actor,
            action="autopay.charge_skipped",
            target=f"invoice:{invoice_id}",
            detail={"skipped_on": skipped_on.isoformat(), "resume_on": resume.isoformat()},
        )
        enqueue_notice(
            db,
            clock,
            template="autopay_skipped",
            client_id=client_id,
            key=derive_key("autopay-skip", skip=skip_id),
            context={
                **context,
                "skipped_on": date_long(skipped_on),
                "charge_on": date_long(resume),
                "is_undone": False,
                "manage_url": manage_url,
            },
        )
        return Skip(skip_id, invoice_id, context["number"], skipped_on, resume, actor)


def undo_skip(
    store: Store,
    clock: Clock,
    tz: ZoneInfo,
    *,
    client_id: int,
    invoice_id: int,
    run_time: str,
    actor: str,
    manage_url: str,
) -> Skip:
    """Put the skipped charge back; raises SkipError once its run's time has come."""
    now = clock.utc_now()
    with store.write() as db:
        skip = active_skip(db, invoice_id)
        owner = db.execute("SELECT client_id FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
        if skip is None or owner is None or owner[0] != client_id:
            raise SkipError("This invoice has no skipped autopay charge.")
        if not can_undo(skip, now=now, run_time=run_time, tz=tz):
            raise SkipError(
                f"Autopay already passed {skip.number} over on {date_long(skip.skipped_on)}; the skip can no "
                "longer be undone. Pay the invoice here, or autopay charges it on "
                f"{date_long(skip.resume_on)}."
            )
        db.execute(
            "UPDATE autopay_skips SET undone_at = ?, undone_by = ? WHERE id = ?", (to_db(now), actor, skip.id)
        )
        audit(
            db,
            clock,
            actor=actor,
            action="autopay.skip_undone",
            target=f"invoice:{invoice_id}",
            detail={"skipped_on": skip.skipped_on.isoformat()},
        )
        enqueue_notice(
            db,
            clock,
            template="autopay_skipped",
            client_id=client_id,
            key=derive_key("autopay-skip-undone", skip=skip.id),
            context={
                **_context(db, invoice_id, actor),
                "skipped_on": date_long(skip.skipped_on),
                "charge_on": date_long(max(skip.skipped_on, local_today(clock, tz))),
                "is_undone": True,
                "manage_url": manage_url,
            },
        )
        return skip
