"""Money going back out of a succeeded payment (refund, dispute) and coming back (dispute won).

The ledger is append-only: a reversal is negative allocation rows on the payment, so each
invoice's balance reopens by what was taken back and the payment's history stays readable.
Which invoices are reopened, one rule: the invoice amounts first, the invoice with the highest
number first, and the card surcharge last (it is refunded only with everything else). A
reversal never takes an invoice's net allocation below zero.

Every reversal writes, in the caller's transaction, the journal's reversing entry and one PSA
write-back per invoice to the outbox, plus an audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlite_utils import Database

from app.core.audit import audit, raise_exception
from app.core.clock import Clock, to_db
from app.core.keys import derive_key
from app.core.outbox import enqueue
from app.core.payment_refs import payment_reference

Kind = Literal["refund", "dispute", "dispute_won"]


class ReversalError(ValueError):
    """More would be taken back than the payment still holds."""


@dataclass(frozen=True)
class Line:
    invoice_id: int
    number: str
    amount_minor: int  # taken back (reversal) or given back (reinstatement), positive


def net_allocations(db: Database, payment_id: int) -> list[Any]:
    """Per invoice of the payment: what is still applied to it, highest invoice number first."""
    return db.execute(
        "SELECT i.id AS invoice_id, i.number, i.remote_id, i.source, SUM(a.amount_minor) AS net_minor "
        "FROM allocations a JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = ? "
        "GROUP BY i.id ORDER BY i.number DESC",
        (payment_id,),
    ).fetchall()


def surcharge_left(db: Database, pay: Any) -> int:
    """The part of the payment's surcharge not yet refunded or withdrawn by a dispute."""
    refunded = db.execute(
        "SELECT COALESCE(SUM(surcharge_minor), 0) FROM refunds WHERE payment_id = ? AND status = 'succeeded'",
        (pay["id"],),
    ).fetchone()[0]
    disputed = db.execute(
        "SELECT COALESCE(SUM(surcharge_minor), 0) FROM disputes WHERE payment_id = ? AND withdrawn_minor > 0 "
        "AND is_reinstated = 0",
        (pay["id"],),
    ).fetchone()[0]
    return int(pay["surcharge_minor"] - refunded - disputed)


def retained_minor(db: Database, pay: Any) -> int:
    """What the payment still holds: its net allocations plus the surcharge not given back."""
    return sum(r["net_minor"] for r in net_allocations(db, pay["id"])) + surcharge_left(db, pay)


def reverse(
    db: Database,
    clock: Clock,
    pay: Any,
    *,
    amount_minor: int,
    kind: Kind,
    ref: str,
    occurred_on: str,
    actor: str,
    processor_ref: str | None = None,
) -> tuple[list[Line], int]:
    """Take `amount_minor` back from succeeded payment `pay`; returns (invoice lines, surcharge part).

    Idempotent per (kind, ref): the allocation rows' source_ref is unique, so a replay raises
    sqlite3.IntegrityError inside the caller's transaction (callers check first). Raises
    ReversalError when the payment holds less than `amount_minor`.
    """
    if amount_minor <= 0:
        raise ReversalError("nothing to take back")
    rows = net_allocations(db, pay["id"])
    left = surcharge_left(db, pay)
    if amount_minor > sum(r["net_minor"] for r in rows) + left:
        raise ReversalError(
            f"payment {pay['token']} holds {sum(r['net_minor'] for r in rows) + left} minor units; "
            f"{amount_minor} cannot be taken back"
        )
    remaining, lines = amount_minor, []
    now = to_db(clock.utc_now())
    for r in rows:
        take = min(remaining, r["net_minor"])
        if take <= 0:
            continue
        db.execute(
            "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, kind, source_ref, "
            "created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                pay["id"],
                r["invoice_id"],
                -take,
                pay["currency"],
                kind,
                f"{kind}-{ref}-{r['invoice_id']}",
                now,
            ),
        )
        lines.append(Line(r["invoice_id"], r["number"], take))
        remaining -= take
    surcharge_part = remaining
    _announce(
        db,
        clock,
        pay,
        lines,
        surcharge_part,
        kind=kind,
        ref=ref,
        occurred_on=occurred_on,
        processor_ref=processor_ref,
        sign=-1,
    )
    audit(
        db,
        clock,
        actor=actor,
        action=f"payment.{kind}",
        target=f"payment:{pay['id']}",
        detail={
            "ref": ref,
            "amount_minor": amount_minor,
            "surcharge_minor": surcharge_part,
            "invoices": {ln.number: -ln.amount_minor for ln in lines},
        },
    )
    return lines, surcharge_part


def reinstate(
    db: Database,
    clock: Clock,
    pay: Any,
    lines: list[Line],
    surcharge_minor: int,
    *,
    ref: str,
    occurred_on: str,
    actor: str,
    processor_ref: str | None = None,
) -> None:
    """Give back what a dispute took (it was won): positive rows mirroring the reversal.

    If a reopened invoice was paid again meanwhile, its balance goes below zero: the money is
    recorded and an "overpayment" exception (a credit for the client) is opened for a person.
    """
    now = to_db(clock.utc_now())
    for ln in lines:
        db.execute(
            "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, kind, source_ref, "
            "created_at) "
            "VALUES (?, ?, ?, ?, 'dispute_won', ?, ?)",
            (
                pay["id"],
                ln.invoice_id,
                ln.amount_minor,
                pay["currency"],
                f"dispute_won-{ref}-{ln.invoice_id}",
                now,
            ),
        )
        balance = db.execute(
            "SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (ln.invoice_id,)
        ).fetchone()[0]
        if balance < 0:
            raise_exception(
                db,
                clock,
                kind="overpayment",
                ref=f"invoice:{ln.invoice_id}",
                summary=f"invoice {ln.number} is overpaid by {-balance} minor units after dispute "
                f"{ref} was won; the client has a credit",
            )
    _announce(
        db,
        clock,
        pay,
        lines,
        surcharge_minor,
        kind="dispute_won",
        ref=ref,
        occurred_on=occurred_on,
        processor_ref=processor_ref,
        sign=1,
    )
    audit(
        db,
        clock,
        actor=actor,
        action="payment.dispute_won",
        target=f"payment:{pay['id']}",
        detail={"ref": ref, "invoices": {ln.number: ln.amount_minor for ln in lines}},
    )


def _announce(
    db: Database,
    clock: Clock,
    pay: Any,
    lines: list[Line],
    surcharge_minor: int,
    *,
    kind: Kind,
    ref: str,
    occurred_on: str,
    processor_ref: str | None,
    sign: int,
) -> None:
    client = db.execute("SELECT name, remote_id FROM clients WHERE id = ?", (pay["client_id"],)).fetchone()
    invoices = (
        {
            r["id"]: r
            for r in db.execute(
                f"SELECT id, remote_id, source FROM invoices WHERE id IN ({','.join('?' * len(lines))})",
                [ln.invoice_id for ln in lines],
            )
        }
        if lines
        else {}
    )
    enqueue(
        db,
        clock,
        kind="journal_reversal",
        key=derive_key("journal-reversal", kind=kind, ref=ref),
        payload={
            "kind": kind,
            "reference": ref,
            "processor_ref": processor_ref or pay["processor_ref"],
            "payment_id": pay["id"],
            "payment_token": pay["token"],
            "method": pay["method"],
            "occurred_on": occurred_on,
            "currency": pay["currency"],
            "amount_minor": sum(ln.amount_minor for ln in lines) + surcharge_minor,
            "surcharge_minor": surcharge_minor,
            "client_name": client["name"],
            "client_remote_id": client["remote_id"],
            "allocations": [[ln.number, ln.amount_minor] for ln in lines],
        },
    )
    for ln in lines:
        inv = invoices[ln.invoice_id]
        # A positive amount (dispute won) is written back as a payment again, a negative one reverses.
        enqueue(
            db,
            clock,
            kind="psa_reversal",
            key=derive_key("psa-reversal", kind=kind, ref=ref, invoice=ln.invoice_id),
            payload={
                "invoice_number": ln.number,
                "invoice_remote_id": inv["remote_id"],
                "source": inv["source"],
                "amount_minor": sign * ln.amount_minor,
                "currency": pay["currency"],
                "paid_on": occurred_on,
                "reference": f"Cashloop {kind.replace('_', ' ')} {ref} of {payment_reference(pay['id'])}",
            },
        )
