"""Approvals: invoices above a threshold need an approver's OK before anyone pays or autopays them.

The threshold is the client's override (set by the finance team, in one currency) or else the
TOML `portal.approval_threshold`, read in the invoice's own currency; none means no approvals.
An approval is for the total the approver saw: if the PSA changes the total later, the invoice
needs approving again. Functions taking `db` expect the caller's `store.write()` when they write.
"""

from __future__ import annotations

from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.money import Money, MoneyError

APPROVER_ROLE = "approver"


class ApprovalError(ValueError):
    """The approval cannot be given; the message is for the person."""


def threshold_minor(db: Database, *, client_id: int, currency: str, default: str) -> int | None:
    """The approval threshold for this client in `currency` minor units, or None for "no approvals".

    `default` is the TOML decimal ("5000.00", or "" for none). A client override applies in its own
    currency only; other currencies fall back to the default.
    """
    from app.core.client_overrides import get_overrides

    override = get_overrides(db, client_id).approval_threshold
    if override is not None and override.currency == currency:
        return override.amount_minor
    if not default:
        return None
    try:
        return Money.from_decimal(default, currency).amount_minor
    except MoneyError:  # "2500.50" means nothing in yen: the threshold is its whole part
        return Money.from_decimal(default.split(".")[0], currency).amount_minor


def thresholds_by_currency(
    db: Database, *, client_id: int, currencies: set[str], default: str
) -> dict[str, int]:
    """threshold_minor for each currency that has one (for building one SQL expression)."""
    out = {}
    for currency in sorted(currencies):
        value = threshold_minor(db, client_id=client_id, currency=currency, default=default)
        if value is not None:
            out[currency] = value
    return out


def _invoice(db: Database, invoice_id: int):
    return db.execute(
        "SELECT id, client_id, number, kind, currency, total_minor FROM invoices WHERE id = ?", (invoice_id,)
    ).fetchone()


def needs_approval(db: Database, invoice_id: int, *, default_threshold: str) -> bool:
    """True when the invoice's total is above the threshold (credit memos never need one). Read-only."""
    inv = _invoice(db, invoice_id)
    if inv is None or inv["kind"] == "credit_memo":
        return False
    limit = threshold_minor(
        db, client_id=inv["client_id"], currency=inv["currency"], default=default_threshold
    )
    return limit is not None and inv["total_minor"] > limit


def is_approved(db: Database, invoice_id: int) -> bool:
    """True when an approver approved the invoice at its current total. Read-only."""
    row = db.execute(
        "SELECT 1 FROM invoice_approvals a JOIN invoices i ON i.id = a.invoice_id WHERE a.invoice_id = ? "
        "AND (a.approved_total_minor IS NULL OR a.approved_total_minor = i.total_minor)",
        (invoice_id,),
    ).fetchone()
    return row is not None


def awaits_approval(db: Database, invoice_id: int, *, default_threshold: str) -> bool:
    """needs_approval and not is_approved: nobody may pay it, and autopay must skip it."""
    return needs_approval(db, invoice_id, default_threshold=default_threshold) and not is_approved(
        db, invoice_id
    )


def approve(db: Database, clock: Clock, *, invoice_id: int, client_id: int, approver: str, role: str) -> bool:
    """Record `approver`'s OK for the invoice of `client_id`; False when it was already approved.

    Raises ApprovalError when `role` is not approver or the invoice is not this client's.
    """
    if role != APPROVER_ROLE:
        raise ApprovalError("Only an approver of your company can approve invoices.")
    inv = _invoice(db, invoice_id)
    if inv is None or inv["client_id"] != client_id:
        raise ApprovalError("This invoice is not available.")
    if is_approved(db, invoice_id):
        return False
    db.execute(
        "INSERT INTO invoice_approvals (invoice_id, approved_by, approved_at, approved_total_minor) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (invoice_id) DO UPDATE SET approved_by = excluded.approved_by, "
        "approved_at = excluded.approved_at, approved_total_minor = excluded.approved_total_minor",
        (invoice_id, approver, to_db(clock.utc_now()), inv["total_minor"]),
    )
    audit(
        db,
        clock,
        actor=f"login:{approver}",
        action="invoice.approved",
        target=f"invoice:{invoice_id}",
        detail={"number": inv["number"], "total_minor": inv["total_minor"], "currency": inv["currency"]},
    )
    return True


def unapproved_numbers(db: Database, invoice_ids: list[int], *, default_threshold: str) -> list[str]:
    """Numbers of the invoices among `invoice_ids` that still await approval (for a clear refusal)."""
    out = []
    for invoice_id in invoice_ids:
        if awaits_approval(db, invoice_id, default_threshold=default_threshold):
            inv = _invoice(db, invoice_id)
            out.append(inv["number"])
    return out
