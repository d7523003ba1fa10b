"""The dashboard's figures, computed from the ledger with the MSP's calendar date.

Definitions (each figure is per currency; amounts in different currencies are never added):
- Open AR: the balance of every open, approved invoice that is not a credit memo and still owes
  something (`invoice_balances`, so only succeeded payments count).
- Aging: each such balance goes in one bucket by days past due, `today - due_on` with `today`
  the MSP's local date: current (not yet due, or due today), 1-30, 31-60, 61-90, 90+.
- DSO (days sales outstanding) = open AR x N / amount invoiced in the last N days (issued in
  (today - N, today], same invoices as AR but paid or not), rounded half to even to whole days;
  none when nothing was invoiced. N is `admin.dso_days` (90 by default).
- Collected: succeeded payments whose success instant falls in the local calendar month.
- Autopay adoption: among clients invoiced in the last 365 days, those with an active autopay
  rule, by count and by the share of what those clients were invoiced in the same 365 days.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core.clock import Clock, local_today, to_db
from app.core.store import Store

if TYPE_CHECKING:
    from app.config import SurchargeSettings

BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")
BUCKET_LABELS = {
    "current": "Current",
    "1-30": "1–30 days",
    "31-60": "31–60 days",
    "61-90": "61–90 days",
    "90+": "Over 90 days",
}
ADOPTION_DAYS = 365
_AR = (
    "FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id "
    "WHERE i.status = 'open' AND i.is_approved = 1 AND i.kind != 'credit_memo'"
)


def bucket_of(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1-30"
    if days_past_due <= 60:
        return "31-60"
    if days_past_due <= 90:
        return "61-90"
    return "90+"


def _round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half to even, in exact decimal arithmetic."""
    return int((Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def permille(part: int, whole: int) -> int | None:
    """part/whole in tenths of a percent (625 = 62.5 %), rounded half to even; None for whole 0."""
    return None if whole == 0 else _round_div(part * 1000, whole)


@dataclass
class Aging:
    currency: str
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))

    @property
    def total_minor(self) -> int:
        return sum(self.buckets.values())

    @property
    def overdue_minor(self) -> int:
        return self.total_minor - self.buckets["current"]


def _of_entity(entity_id: int | None, client_column: str) -> tuple[str, tuple[int, ...]]:
    """The SQL condition (and its parameter) narrowing to one entity's clients; none for all."""
    if entity_id is None:
        return "", ()
    return f" AND {client_column} IN (SELECT id FROM clients WHERE entity_id = ?)", (entity_id,)


def aging(store: Store, today: date, entity_id: int | None = None) -> list[Aging]:
    """Open AR by currency and aging bucket, the entity's currencies in alphabetical order."""
    out: dict[str, Aging] = {}
    cond, params = _of_entity(entity_id, "i.client_id")
    for r in store.all(f"SELECT i.currency, i.due_on, b.balance_minor {_AR} AND b.balance_minor > 0{cond}",
                       params):
        ag = out.setdefault(r["currency"], Aging(r["currency"]))
        bucket = bucket_of((today - date.fromisoformat(r["due_on"])).days)
        ag.buckets[bucket] += r["balance_minor"]
        ag.counts[bucket] += 1
    return [out[c] for c in sorted(out)]


@dataclass(frozen=True)
class Dso:
    currency: str
    ar_minor: int
    invoiced_minor: int
    period_days: int

    @property
    def days(self) -> int | None:
        return (
            None
            if self.invoiced_minor <= 0
            else _round_div(self.ar_minor * self.period_days, self.invoiced_minor)
        )


def dso(store: Store, today: date, period_days: int, entity_id: int | None = None) -> list[Dso]:
    """Days sales outstanding by currency (of one entity's clients when `entity_id` is given)."""
    since = (today - timedelta(days=period_days)).isoformat()
    cond, params = _of_entity(entity_id, "i.client_id")
    ar = {
        r["currency"]: r["ar"]
        for r in store.all(
            f"SELECT i.currency, SUM(b.balance_minor) AS ar {_AR} AND b.balance_minor > 0{cond} "
            f"GROUP BY i.currency",
            params,
        )
    }
    invoiced = {
        r["currency"]: r["billed"]
        for r in store.all(
            f"SELECT i.currency, SUM(i.total_minor) AS billed {_AR} AND i.issued_on > ? AND i.issued_on <= ?"
            f"{cond} GROUP BY i.currency",
            (since, today.isoformat(), *params),
        )
    }
    return [
        Dso(c, ar.get(c, 0), invoiced.get(c, 0), period_days) for c in sorted(ar.keys() | invoiced.keys())
    ]


def month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def utc_midnight(day: date, tz: ZoneInfo) -> str:
    return to_db(datetime(day.year, day.month, day.day, tzinfo=tz))


def collected_in(
    store: Store, start: date, end: date, tz: ZoneInfo, entity_id: int | None = None
) -> dict[str, int]:
    """Succeeded payments by currency whose success falls on local dates [start, end)."""
    cond, params = _of_entity(entity_id, "client_id")
    return {
        r["currency"]: r["total"]
        for r in store.all(
            "SELECT currency, SUM(amount_minor) AS total FROM payments WHERE status = 'succeeded' "
            f"AND succeeded_at >= ? AND succeeded_at < ?{cond} GROUP BY currency",
            (utc_midnight(start, tz), utc_midnight(end, tz), *params),
        )
    }


@dataclass(frozen=True)
class Collected:
    currency: str
    this_month_minor: int
    last_month_minor: int


def collected(store: Store, today: date, tz: ZoneInfo, entity_id: int | None = None) -> list[Collected]:
    this_start, last_start = month_start(today), month_start(today, 1)
    this = collected_in(store, this_start, month_start(today, -1), tz, entity_id)
    last = collected_in(store, last_start, this_start, tz, entity_id)
    return [Collected(c, this.get(c, 0), last.get(c, 0)) for c in sorted(this.keys() | last.keys())]


def monthly_collections(
    store: Store, today: date, tz: ZoneInfo, months: int = 6, entity_id: int | None = None
) -> list[tuple[date, dict[str, int]]]:
    """(first day of month, collected by currency) for the last `months` months, oldest first."""
    return [
        (
            month_start(today, back),
            collected_in(store, month_start(today, back), month_start(today, back - 1), tz, entity_id),
        )
        for back in range(months - 1, -1, -1)
    ]


def _has_table(db: Database, name: str) -> bool:
    return (
        db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        is not None
    )


def autopay_clients(db: Database) -> set[int] | None:
    """Ids of clients with an active autopay rule; None while autopay is not set up in this build.

    TODO(#8): the autopay_rules table comes with migration 0003 (autopay); until its module
    offers "clients with autopay on", this reads the table defensively: any row counts unless a
    column says it is off (is_enabled/is_active/enabled = 0, status not active, paused/removed set).
    """
    if not _has_table(db, "autopay_rules"):
        return None
    columns = {r["name"] for r in db.execute("PRAGMA table_info(autopay_rules)")}
    if "client_id" not in columns:
        return None
    where = ["1 = 1"]
    for flag in ("is_enabled", "is_active", "enabled", "active"):
        if flag in columns:
            where.append(f"{flag} = 1")
    if "status" in columns:
        where.append("status = 'active'")
    for ended in ("paused_at", "removed_at", "deleted_at", "ended_at", "disabled_at"):
        if ended in columns:
            where.append(f"{ended} IS NULL")
    return {
        r[0] for r in db.execute(f"SELECT DISTINCT client_id FROM autopay_rules WHERE {' AND '.join(where)}")
    }


@dataclass(frozen=True)
class AdoptionShare:
    currency: str
    autopay_minor: int
    invoiced_minor: int

    @property
    def permille(self) -> int | None:
        return permille(self.autopay_minor, self.invoiced_minor)


@dataclass(frozen=True)
class Adoption:
    is_set_up: bool
    clients_invoiced: int = 0
    clients_on_autopay: int = 0
    shares: tuple[AdoptionShare, ...] = ()

    @property
    def clients_permille(self) -> int | None:
        return permille(self.clients_on_autopay, self.clients_invoiced)


def adoption(store: Store, today: date) -> Adoption:
    on = autopay_clients(store.db)
    if on is None:
        return Adoption(is_set_up=False)
    since = (today - timedelta(days=ADOPTION_DAYS)).isoformat()
    rows = store.all(
        f"SELECT i.client_id, i.currency, SUM(i.total_minor) AS billed {_AR} AND i.issued_on > ? "
        f"AND i.issued_on <= ? GROUP BY i.client_id, i.currency",
        (since, today.isoformat()),
    )
    clients = {r["client_id"] for r in rows}
    totals: dict[str, list[int]] = {}
    for r in rows:
        t = totals.setdefault(r["currency"], [0, 0])
        t[1] += r["billed"]
        if r["client_id"] in on:
            t[0] += r["billed"]
    shares = tuple(AdoptionShare(c, t[0], t[1]) for c, t in sorted(totals.items()))
    return Adoption(True, len(clients), len(clients & on), shares)


@dataclass(frozen=True)
class UpcomingCharge:
    charge_on: date
    client_id: int
    client_name: str
    invoice_numbers: str
    amount_minor: int
    currency: str
    method: str


def upcoming_autopay(
    store: Store,
    clock: Clock,
    tz: ZoneInfo,
    *,
    run_time: str,
    days: int = 14,
    surcharge: SurchargeSettings | None = None,
    approval_default: str = "",
) -> list[UpcomingCharge] | None:
    """What autopay will charge in the next `days` days (first attempts and retries), oldest first,
    each on the date of the run that will make it, as the portal shows it
    (app.core.autopay.upcoming_charges); None while autopay is not set up in this build."""
    if autopay_clients(store.db) is None:
        return None
    try:
        from app.core import autopay
    except ImportError:  # TODO(#8): drop once autopay is merged; the table came before the module
        return None
    planned = autopay.upcoming_charges(
        store, clock, tz, None, run_time=run_time, surcharge=surcharge, approval_default=approval_default
    )
    horizon = local_today(clock, tz) + timedelta(days=days)
    out = [
        UpcomingCharge(
            c.charge_on,
            c.client_id,
            c.client_name,
            ", ".join(it.number for it in c.items),
            c.amount_minor,
            c.currency,
            c.method.label,
        )
        for c in planned
        if c.charge_on <= horizon
    ]
    return sorted(out, key=lambda u: (u.charge_on, u.client_name, u.invoice_numbers))


def failed_payments(
    store: Store, since: datetime, limit: int = 10, entity_id: int | None = None
) -> tuple[int, list[sqlite3.Row]]:
    """(how many, the latest `limit`) payments that failed since `since` (of one entity's clients)."""
    cond, params = _of_entity(entity_id, "p.client_id")
    where = (
        "FROM payments p JOIN clients c ON c.id = p.client_id WHERE p.status = 'failed' AND p.updated_at >= ?"
        f"{cond}"
    )
    count = int(store.scalar(f"SELECT COUNT(*) {where}", (to_db(since), *params)) or 0)
    rows = store.all(
        f"SELECT p.id, p.token, p.amount_minor, p.currency, p.method, p.updated_at, p.failure_reason, "
        f"c.name AS client_name, c.id AS client_id {where} ORDER BY p.updated_at DESC LIMIT ?",
        (to_db(since), *params, limit),
    )
    return count, rows


def outbox_backlog(store: Store) -> dict[str, int]:
    """Outbox entries by status, plus `retried`: entries still open after more than one attempt."""
    counts = dict.fromkeys(("pending", "running", "done", "dead"), 0)
    counts.update(
        {r["status"]: r["n"] for r in store.all("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")}
    )
    counts["retried"] = int(
        store.scalar(
            "SELECT COUNT(*) FROM outbox WHERE attempts > 1 OR (attempts = 1 AND status = 'pending')"
        )
        or 0
    )
    return counts
