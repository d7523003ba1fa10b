"""Stripe payouts into the books: each payout becomes one deposit equal to the bank line.

A payout is read back from Stripe (never trusted from the event), with every balance transaction
it paid out. Each transaction is tied to what Cashloop recorded (a payment by its charge, a refund,
a dispute) and stored once in `payout_items`; a charge's fee fills `payments.fee_minor`. In the
same transaction one `accounting_deposit` outbox entry is queued, keyed by the payout id, so the
webhook, a redelivery and the reconcile job (app.jobs.reconcile_payouts) book it exactly once.

The deposit always equals the bank line to the minor unit. Money Cashloop cannot place (a charge
made outside it, a Stripe adjustment, or transactions Stripe did not list) is booked as an
"adjustment" line, and one exception says exactly what differs, for a person to classify.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core.audit import audit, raise_exception
from app.core.clock import Clock, to_db
from app.core.keys import derive_key
from app.core.money import Money
from app.core.outbox import enqueue
from app.core.store import Store
from sync.payments.stripe import BalanceItem, PayoutState

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)
CHARGE_PREFIXES = ("ch_", "py_")
DISPUTE_PREFIXES = ("dp_", "du_")
PAYOUT_TYPES = ("payout", "payout_failure", "payout_cancel")  # the payout's own movements, not its content


def deposit_key(payout_id: str) -> str:
    """The outbox key of a payout's deposit: one per payout, whoever notices it first."""
    return derive_key("accounting-deposit", payout=payout_id)


def _money(minor: int, currency: str) -> str:
    return f"{Money(minor, currency).to_decimal()} {currency}"


@dataclass(frozen=True)
class Placed:
    """One balance transaction tied to what Cashloop recorded (ids None when it is not ours)."""

    item: BalanceItem
    kind: str  # payment | refund | dispute | dispute_won | adjustment
    payment: Any = None
    refund: Any = None
    dispute: Any = None
    why_unknown: str = ""


def _place(db: Database, item: BalanceItem, charge_intents: Mapping[str, str]) -> Placed:
    src = item.source or ""
    if src.startswith(CHARGE_PREFIXES):
        pay = db.execute("SELECT * FROM payments WHERE charge_ref = ?", (src,)).fetchone()
        if pay is None and charge_intents.get(src):
            pay = db.execute(
                "SELECT * FROM payments WHERE processor_ref = ?", (charge_intents[src],)
            ).fetchone()
        if pay is not None:
            return Placed(item, "payment", payment=pay)
        return Placed(item, "adjustment", why_unknown=f"charge {src} is not a Cashloop payment")
    if src.startswith("re_"):
        ref = db.execute("SELECT * FROM refunds WHERE processor_ref = ?", (src,)).fetchone()
        if ref is not None:
            pay = db.execute("SELECT * FROM payments WHERE id = ?", (ref["payment_id"],)).fetchone()
            return Placed(item, "refund", payment=pay, refund=ref)
        return Placed(item, "adjustment", why_unknown=f"refund {src} is not recorded in Cashloop")
    if src.startswith(DISPUTE_PREFIXES):
        dis = db.execute("SELECT * FROM disputes WHERE processor_ref = ?", (src,)).fetchone()
        if dis is not None:
            pay = db.execute("SELECT * FROM payments WHERE id = ?", (dis["payment_id"],)).fetchone()
            kind = "dispute" if item.amount_minor < 0 else "dispute_won"
            return Placed(item, kind, payment=pay, dispute=dis)
        return Placed(item, "adjustment", why_unknown=f"dispute {src} is not recorded in Cashloop")
    what = f"{item.type} {src}".strip() if src else item.type
    return Placed(item, "adjustment", why_unknown=f"Stripe {what} is not something Cashloop made")


def _line(db: Database, p: Placed) -> dict[str, Any]:
    """The deposit payload's line for one placed item (DepositLine's fields, plus payment_id)."""
    line: dict[str, Any] = {
        "kind": p.kind,
        "processor_ref": p.item.source or p.item.txn_id,
        "balance_txn": p.item.txn_id,
        "amount_minor": p.item.amount_minor,
        "fee_minor": p.item.fee_minor,
        "surcharge_minor": 0,
        "payment_id": None,
        "payment_token": None,
        "reference": None,
        "client_name": "",
        "client_remote_id": "",
    }
    if p.payment is not None:
        client = db.execute(
            "SELECT name, remote_id FROM clients WHERE id = ?", (p.payment["client_id"],)
        ).fetchone()
        line.update(payment_id=p.payment["id"], payment_token=p.payment["token"],
                    client_name=client["name"], client_remote_id=client["remote_id"])
    if p.kind == "payment":
        line["surcharge_minor"] = p.payment["surcharge_minor"]
    elif p.refund is not None:
        line.update(reference=p.refund["token"], surcharge_minor=p.refund["surcharge_minor"])
    elif p.dispute is not None:
        line.update(reference=p.dispute["processor_ref"], surcharge_minor=p.dispute["surcharge_minor"])
    return line


def record_paid(
    store: Store,
    clock: Clock,
    payout: PayoutState,
    items: list[BalanceItem],
    *,
    timezone: ZoneInfo,
    charge_intents: Mapping[str, str] | None = None,
) -> str:
    """Store a paid payout and its items and queue its one deposit; idempotent by payout id.

    `charge_intents` maps charges not found by their id to their PaymentIntent (the caller asks
    Stripe). Returns "booked" or "already booked".
    """
    now = to_db(clock.utc_now())
    cur = payout.currency
    arrival_on = datetime.fromtimestamp(payout.arrival_date, UTC).astimezone(timezone).date()
    with store.write() as db:
        row = db.execute("SELECT * FROM payouts WHERE processor_ref = ?", (payout.payout_id,)).fetchone()
        if row is not None and row["deposit_key"]:
            return "already booked"
        if row is None:
            db.execute(
                "INSERT INTO payouts (processor_ref, currency, amount_minor, status, arrival_on, created_at, "
                "updated_at) VALUES (?, ?, ?, 'paid', ?, ?, ?)",
                (payout.payout_id, cur, payout.amount_minor, arrival_on.isoformat(), now, now),
            )
        row = db.execute("SELECT * FROM payouts WHERE processor_ref = ?", (payout.payout_id,)).fetchone()
        content = [i for i in items if not (i.type in PAYOUT_TYPES and i.source == payout.payout_id)]
        placed = [_place(db, i, charge_intents or {}) for i in content]
        problems = [p.why_unknown for p in placed if p.why_unknown]
        for p in placed:
            if p.item.currency != cur:
                problems.append(f"{p.item.txn_id} is in {p.item.currency}, the payout in {cur}")
            db.execute(
                "INSERT INTO payout_items (payout_id, balance_txn_ref, type, kind, source_ref, payment_id, "
                "refund_id, dispute_id, amount_minor, fee_minor, net_minor, currency, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (balance_txn_ref) DO NOTHING",
                (row["id"], p.item.txn_id, p.item.type, p.kind, p.item.source,
                 p.payment["id"] if p.payment is not None else None,
                 p.refund["id"] if p.refund is not None else None,
                 p.dispute["id"] if p.dispute is not None else None,
                 p.item.amount_minor, p.item.fee_minor, p.item.net_minor, p.item.currency, now),
            )
            if p.kind == "payment":
                db.execute(
                    "UPDATE payments SET fee_minor = ? WHERE id = ?", (p.item.fee_minor, p.payment["id"])
                )
        lines = [_line(db, p) for p in placed]
        fee = sum(p.item.fee_minor for p in placed)
        net = sum(p.item.amount_minor for p in placed) - fee
        if net != payout.amount_minor:
            gap = payout.amount_minor - net
            problems.append(
                f"its transactions add up to {_money(net, cur)}, {_money(gap, cur)} short of the bank "
                "line; the difference is booked as an adjustment"
            )
            lines.append({"kind": "adjustment", "processor_ref": payout.payout_id, "balance_txn": None,
                          "amount_minor": gap, "fee_minor": 0, "surcharge_minor": 0, "payment_id": None,
                          "payment_token": None, "reference": None, "client_name": "",
                          "client_remote_id": ""})
        key = deposit_key(payout.payout_id)
        enqueue(
            db,
            clock,
            kind="accounting_deposit",
            key=key,
            payload={
                "payout_id": payout.payout_id,
                "payout_row_id": row["id"],
                "arrival_on": arrival_on.isoformat(),
                "currency": cur,
                "amount_minor": payout.amount_minor,
                "fee_minor": fee,
                "lines": lines,
            },
        )
        db.execute(
            "UPDATE payouts SET status = 'paid', fee_minor = ?, deposit_key = ?, updated_at = ? WHERE id = ?",
            (fee, key, now, row["id"]),
        )
        if problems:
            raise_exception(
                db,
                clock,
                kind="payout_mismatch",
                ref=f"payout:{payout.payout_id}",
                summary=f"payout {payout.payout_id} of {_money(payout.amount_minor, cur)} on "
                f"{arrival_on.isoformat()}: " + "; ".join(problems)
                + ". The deposit still equals the bank line: the items Cashloop cannot place are booked "
                "as adjustments, to classify by hand.",
                detail={"problems": problems},
            )
        audit(
            db,
            clock,
            actor="stripe",
            action="payout.paid",
            target=f"payout:{row['id']}",
            detail={"payout": payout.payout_id, "amount_minor": payout.amount_minor, "fee_minor": fee,
                    "items": len(placed), "problems": len(problems)},
        )
        return "booked"


def record_failed(store: Store, clock: Clock, payout: PayoutState, *, timezone: ZoneInfo) -> str:
    """A payout the bank returned: an exception for a person, no deposit. Idempotent."""
    now = to_db(clock.utc_now())
    reason = f"{payout.failure_code or 'failed'}: {payout.failure_message or 'no message from Stripe'}"
    arrival_on = datetime.fromtimestamp(payout.arrival_date, UTC).astimezone(timezone).date()
    with store.write() as db:
        row = db.execute("SELECT * FROM payouts WHERE processor_ref = ?", (payout.payout_id,)).fetchone()
        if row is not None and row["status"] == "failed":
            return "unchanged"
        if row is None:
            db.execute(
                "INSERT INTO payouts (processor_ref, currency, amount_minor, status, arrival_on, "
                "failure_reason, created_at, updated_at) VALUES (?, ?, ?, 'failed', ?, ?, ?, ?)",
                (payout.payout_id, payout.currency, payout.amount_minor, arrival_on.isoformat(), reason,
                 now, now),
            )
            booked = False
        else:
            booked = bool(row["deposit_key"])
            db.execute(
                "UPDATE payouts SET status = 'failed', failure_reason = ?, updated_at = ? WHERE id = ?",
                (reason, now, row["id"]),
            )
        after = (
            "its deposit was already booked: reverse it in the books"
            if booked
            else "no deposit was booked; Stripe returns the funds to the balance for a later payout"
        )
        raise_exception(
            db,
            clock,
            kind="payout_failed",
            ref=f"payout:{payout.payout_id}",
            summary=f"payout {payout.payout_id} of {_money(payout.amount_minor, payout.currency)} failed at "
            f"the bank ({reason}); {after}. Check the bank account in Stripe.",
        )
        audit(db, clock, actor="stripe", action="payout.failed", target=f"payout:{payout.payout_id}",
              detail={"reason": reason, "was_booked": booked})
        return "failed"


def _learn_missed(services: Services, items: list[BalanceItem]) -> None:
    """Record the refunds and disputes of our payments that a payout holds but whose webhooks were
    missed (a refund made in the Stripe dashboard, a dispute event lost), so they are booked as such."""
    from app import stripe_events

    store = services.store
    for i in items:
        src = i.source or ""
        if src.startswith("re_") and not store.one("SELECT 1 FROM refunds WHERE processor_ref = ?", (src,)):
            charge = services.gateway.retrieve_refund(src).charge_id
            if charge:
                stripe_events.sync_refunds(services, charge)
        elif src.startswith(DISPUTE_PREFIXES) and not store.one(
            "SELECT 1 FROM disputes WHERE processor_ref = ?", (src,)
        ):
            stripe_events.sync_dispute(services, src)


def sync_payout(services: Services, payout_id: str) -> str:
    """Bring our record of `payout_id` to what Stripe says now: book it once paid, raise an
    exception if it failed, wait otherwise. Safe to call any number of times."""
    store = services.store
    done = store.one("SELECT status, deposit_key FROM payouts WHERE processor_ref = ?", (payout_id,))
    payout = services.gateway.retrieve_payout(payout_id)
    if payout.status == "failed":
        return record_failed(store, services.clock, payout, timezone=services.config.tz)
    if payout.status != "paid" or not payout.reconciled:
        return f"waiting ({payout.status})"
    if done is not None and done["deposit_key"]:
        return "already booked"
    items = services.gateway.payout_transactions(payout_id)
    _learn_missed(services, items)
    unknown = [
        i.source for i in items
        if (i.source or "").startswith(CHARGE_PREFIXES)
        and store.one("SELECT 1 FROM payments WHERE charge_ref = ?", (i.source,)) is None
    ]
    # A payment recorded before its charge id was known is found through its PaymentIntent.
    intents = {ch: services.gateway.charge_intent(ch) or "" for ch in unknown if ch}
    return record_paid(
        store, services.clock, payout, items, timezone=services.config.tz, charge_intents=intents
    )
