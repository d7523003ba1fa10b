"""Line disputes: a contact objects to one line of an invoice, with a reason.

While a dispute is open the invoice is "in dispute": reminders and autopay skip that invoice
(they ask `is_in_dispute`), it waits in the admin exceptions queue (kind "line_dispute", ref
"line_dispute:<id>"), and the PSA is told through the outbox (kind "psa_dispute_note") where the
connector can add a note. A dispute ends when the contact withdraws it, when the finance team
resolves it (`resolve_dispute`, or the queue's generic resolve), never by itself.

Functions taking `db` expect to run inside the caller's `store.write()` when they write.
Not to be confused with the `disputes` table: those are Stripe chargebacks.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from sqlite_utils import Database

from app.core.audit import audit, raise_exception
from app.core.clock import Clock, to_db
from app.core.keys import derive_key, public_token
from app.core.money import Money
from app.core.outbox import enqueue

EXCEPTION_KIND = "line_dispute"
OUTBOX_KIND = "psa_dispute_note"
REASON_MIN = 10
REASON_MAX = 2000


class DisputeError(ValueError):
    """The dispute cannot be opened or changed; the message is for the person."""


@dataclass(frozen=True)
class LineDispute:
    id: int
    token: str
    invoice_id: int
    line_no: int
    line_description: str
    line_amount_minor: int
    currency: str
    reason: str
    raised_by: str
    status: str  # open | resolved | withdrawn
    resolution: str | None
    created_at: str
    resolved_at: str | None
    psa_note_status: str


def _dispute(row: sqlite3.Row) -> LineDispute:
    return LineDispute(**{k: row[k] for k in LineDispute.__dataclass_fields__})


def exception_ref(dispute_id: int) -> str:
    return f"{EXCEPTION_KIND}:{dispute_id}"


def is_in_dispute(db: Database, invoice_id: int) -> bool:
    """True while any line of the invoice has an open dispute. Read-only; for reminders and autopay."""
    return (
        db.execute("SELECT 1 FROM open_line_disputes WHERE invoice_id = ? LIMIT 1", (invoice_id,)).fetchone()
        is not None
    )


def disputed_invoice_ids(db: Database, invoice_ids: list[int]) -> set[int]:
    """Which of `invoice_ids` are in dispute (one query for a batch)."""
    if not invoice_ids:
        return set()
    marks = ",".join("?" * len(invoice_ids))
    rows = db.execute(
        f"SELECT DISTINCT invoice_id FROM open_line_disputes WHERE invoice_id IN ({marks})", invoice_ids
    ).fetchall()
    return {int(r[0]) for r in rows}


def disputes_for_invoice(db: Database, invoice_id: int) -> list[LineDispute]:
    """Every dispute of the invoice, newest first; `status` reads "resolved" for one the finance
    team closed in the exceptions queue."""
    rows = db.execute(
        f"SELECT {', '.join('d.' + k for k in LineDispute.__dataclass_fields__ if k != 'status')}, "
        "CASE WHEN d.status = 'open' AND d.id NOT IN (SELECT id FROM open_line_disputes "
        "WHERE invoice_id = :inv) THEN 'resolved' ELSE d.status END AS status "
        "FROM line_disputes d WHERE d.invoice_id = :inv ORDER BY d.created_at DESC, d.id DESC",
        {"inv": invoice_id},
    ).fetchall()
    return [_dispute(r) for r in rows]


def _close_stale(db: Database, clock: Clock, invoice_id: int, line_no: int) -> None:
    # A dispute whose queue entry was resolved by the generic admin action is over: mark it so,
    # which frees the line for a new dispute (one open dispute per line).
    db.execute(
        "UPDATE line_disputes SET status = 'resolved', resolved_at = ?, resolved_by = 'admin queue' "
        "WHERE invoice_id = ? AND line_no = ? AND status = 'open' "
        "AND id NOT IN (SELECT id FROM open_line_disputes WHERE invoice_id = ?)",
        (to_db(clock.utc_now()), invoice_id, line_no, invoice_id),
    )


def open_dispute(
    db: Database,
    clock: Clock,
    *,
    client_id: int,
    invoice_id: int,
    line_no: int,
    reason: str,
    raised_by: str,
) -> LineDispute:
    """Record a contact's dispute of one line, queue it for the finance team and the PSA.

    The invoice must belong to `client_id` and be visible and unpaid-or-not (a paid invoice can be
    disputed too: the money question is then a refund, which a person decides). Raises
    DisputeError for an unknown line, a credit memo, a reason shorter than REASON_MIN or longer
    than REASON_MAX, or a line already in dispute. Writes the dispute, one exception, one outbox
    entry and an audit row, or nothing.
    """
    text = " ".join((reason or "").split())
    if len(text) < REASON_MIN:
        raise DisputeError(f"Tell us what is wrong with this line (at least {REASON_MIN} characters).")
    if len(text) > REASON_MAX:
        raise DisputeError(f"Keep the reason under {REASON_MAX} characters; attach details in a reply to us.")
    inv = db.execute(
        "SELECT id, number, kind, currency, source, remote_id FROM invoices "
        "WHERE id = ? AND client_id = ? AND status = 'open' AND is_approved = 1",
        (invoice_id, client_id),
    ).fetchone()
    if inv is None:
        raise DisputeError("This invoice is not available.")
    if inv["kind"] == "credit_memo":
        raise DisputeError("A credit memo cannot be disputed; contact us if it looks wrong.")
    line = db.execute(
        "SELECT line_no, description, amount_minor, ticket, project, agreement FROM invoice_lines "
        "WHERE invoice_id = ? AND line_no = ?",
        (invoice_id, line_no),
    ).fetchone()
    if line is None:
        raise DisputeError("That line is not on this invoice.")
    _close_stale(db, clock, invoice_id, line_no)
    now = to_db(clock.utc_now())
    try:
        cur = db.execute(
            "INSERT INTO line_disputes (token, client_id, invoice_id, line_no, line_description, "
            "line_amount_minor, currency, reason, raised_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                public_token(),
                client_id,
                invoice_id,
                line_no,
                line["description"],
                line["amount_minor"],
                inv["currency"],
                text,
                raised_by,
                now,
            ),
        )
    except sqlite3.IntegrityError:
        raise DisputeError("This line is already in dispute; we will answer the open one.") from None
    dispute_id = int(cur.lastrowid)
    amount = Money(line["amount_minor"], inv["currency"]).to_decimal()
    raise_exception(
        db,
        clock,
        kind=EXCEPTION_KIND,
        ref=exception_ref(dispute_id),
        summary=f"{raised_by} disputes line {line_no} of invoice {inv['number']} "
        f"({line['description']}, {amount} {inv['currency']}): {text[:200]}",
        detail={
            "invoice_id": invoice_id,
            "invoice_number": inv["number"],
            "line_no": line_no,
            "reason": text,
            "raised_by": raised_by,
        },
    )
    enqueue(
        db,
        clock,
        kind=OUTBOX_KIND,
        key=derive_key("psa-dispute-note", dispute=dispute_id),
        payload={
            "dispute_id": dispute_id,
            "source": inv["source"],
            "invoice_remote_id": inv["remote_id"],
            "invoice_number": inv["number"],
            "line_no": line_no,
            "line_description": line["description"],
            "amount_minor": line["amount_minor"],
            "currency": inv["currency"],
            "reason": text,
            "raised_by": raised_by,
            "ticket": line["ticket"],
        },
    )
    audit(
        db,
        clock,
        actor=f"login:{raised_by}",
        action="line_dispute.opened",
        target=f"invoice:{invoice_id}",
        detail={"dispute_id": dispute_id, "line_no": line_no},
    )
    row = db.execute("SELECT * FROM line_disputes WHERE id = ?", (dispute_id,)).fetchone()
    return _dispute(row)


def _end(db: Database, clock: Clock, dispute_id: int, *, status: str, actor: str, resolution: str) -> None:
    now = to_db(clock.utc_now())
    db.execute(
        "UPDATE line_disputes SET status = ?, resolution = ?, resolved_by = ?, resolved_at = ? WHERE id = ?",
        (status, resolution.strip()[:2000] or None, actor, now, dispute_id),
    )
    db.execute(
        "UPDATE exceptions SET resolved_at = ? WHERE kind = ? AND ref = ? AND resolved_at IS NULL",
        (now, EXCEPTION_KIND, exception_ref(dispute_id)),
    )


def withdraw_dispute(db: Database, clock: Clock, *, client_id: int, token: str, actor: str) -> LineDispute:
    """The contact takes back an open dispute of their company; raises DisputeError otherwise."""
    row = db.execute(
        "SELECT d.id, d.invoice_id FROM open_line_disputes d WHERE d.token = ? AND d.client_id = ?",
        (token, client_id),
    ).fetchone()
    if row is None:
        raise DisputeError("This dispute is not open.")
    _end(db, clock, row["id"], status="withdrawn", actor=actor, resolution="withdrawn by the client")
    audit(
        db,
        clock,
        actor=f"login:{actor}",
        action="line_dispute.withdrawn",
        target=f"invoice:{row['invoice_id']}",
        detail={"dispute_id": row["id"]},
    )
    return _dispute(db.execute("SELECT * FROM line_disputes WHERE id = ?", (row["id"],)).fetchone())


def resolve_dispute(db: Database, clock: Clock, dispute_id: int, *, actor: str, resolution: str) -> None:
    """The finance team's answer (for the admin console); closes the queue entry too. Raises
    DisputeError when the dispute is not open."""
    row = db.execute(
        "SELECT invoice_id FROM line_disputes WHERE id = ? AND status = 'open'", (dispute_id,)
    ).fetchone()
    if row is None:
        raise DisputeError("This dispute is not open.")
    _end(db, clock, dispute_id, status="resolved", actor=actor, resolution=resolution)
    audit(
        db,
        clock,
        actor=actor,
        action="line_dispute.resolved",
        target=f"invoice:{row['invoice_id']}",
        detail={"dispute_id": dispute_id, "resolution": resolution.strip()[:500]},
    )


def record_psa_note(
    db: Database, dispute_id: int, *, status: str, ref: str | None = None, error: str | None = None
) -> None:
    """What became of the PSA note (sent with its id, or unsupported with the reason)."""
    db.execute(
        "UPDATE line_disputes SET psa_note_status = ?, psa_note_ref = ?, psa_note_error = ? WHERE id = ?",
        (status, ref, error, dispute_id),
    )
