"""Monthly statements: what was invoiced and paid in a month, and what is open, with aging.

Months are the MSP's calendar months (`cashloop.timezone`): a payment at 23:30 on the 31st in
Chicago belongs to that month although it is already the 1st in UTC. Open items, balances and
aging are as of the statement date (the month's last day, or today for this month): invoices
issued by then, less the allocations that counted by the end of that local day. A payment's
allocations count from its success, refunds and disputes from their own rows' time, so an
invoice open on the 30th and paid on the 4th is open on that month's statement. Amounts paid at
the PSA (`paid_elsewhere_minor`) carry no date here and are taken as known today.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from app.core.clock import to_db
from app.core.store import Store
from app.web.invoice_rows import COLUMNS, InvoiceRow, client_invoices_cte, row_from_sql

BUCKETS = (
    ("current", "Not yet due"),
    ("1_30", "1–30 days"),
    ("31_60", "31–60 days"),
    ("61_90", "61–90 days"),
    ("over_90", "Over 90 days"),
)
MAX_MONTHS = 36


def bucket_of(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1_30"
    if days_past_due <= 60:
        return "31_60"
    if days_past_due <= 90:
        return "61_90"
    return "over_90"


@dataclass
class Aging:
    currency: str
    buckets: dict[str, int] = field(default_factory=lambda: {key: 0 for key, _ in BUCKETS})

    @property
    def total_minor(self) -> int:
        return sum(self.buckets.values())


@dataclass(frozen=True)
class Statement:
    month: date
    period_end: date
    as_of: date
    issued: list[InvoiceRow]
    payments: list[dict[str, object]]
    open_items: list[tuple[InvoiceRow, int]]  # (invoice, days past due at as_of)
    aging: list[Aging]
    credits: list[InvoiceRow]


def month_end(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def parse_month(text: str) -> date | None:
    """ "2026-03" -> date(2026, 3, 1); None for anything else."""
    try:
        year, _, mon = text.partition("-")
        if len(year) != 4 or len(mon) != 2:
            return None
        return date(int(year), int(mon), 1)
    except ValueError:
        return None


def available_months(store: Store, client_id: int, today: date) -> list[date]:
    """Months (first days) from the first visible invoice up to this month, newest first."""
    first = store.scalar(
        "SELECT MIN(issued_on) FROM invoices WHERE client_id = ? AND status = 'open' AND is_approved = 1",
        (client_id,),
    )
    if not first:
        return []
    start = date.fromisoformat(first).replace(day=1)
    months, current = [], today.replace(day=1)
    while current >= start and len(months) < MAX_MONTHS:
        months.append(current)
        current = (current - timedelta(days=1)).replace(day=1)
    return months


def _utc_bounds(month: date, tz: ZoneInfo) -> tuple[str, str]:
    start = datetime.combine(month, time(0), tz).astimezone(UTC)
    nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    end = datetime.combine(nxt, time(0), tz).astimezone(UTC)
    return to_db(start), to_db(end)


def _cutoff(day: date, tz: ZoneInfo) -> str:
    """The UTC instant the local day after `day` starts: what happened before it counts."""
    return to_db(datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC))


# Balances at `:cutoff`: an allocation counts once its payment had succeeded and the row existed
# (reversals are written when they happen; a payment's own rows when it starts, before success).
_AS_OF_CTE = """, paid_then AS (
    SELECT a.invoice_id, SUM(a.amount_minor) AS paid_minor
    FROM invoices ci JOIN allocations a ON a.invoice_id = ci.id JOIN payments p ON p.id = a.payment_id
    WHERE ci.client_id = :client AND p.status = 'succeeded' AND p.succeeded_at < :cutoff
      AND a.created_at < :cutoff
    GROUP BY a.invoice_id
), then_inv AS (
    SELECT inv.*, COALESCE(pt.paid_minor, 0) AS paid_then_minor,
           inv.total_minor - inv.paid_elsewhere_minor - COALESCE(pt.paid_minor, 0) AS balance_then_minor
    FROM inv LEFT JOIN paid_then pt ON pt.invoice_id = inv.id
    WHERE inv.issued_on <= :end
)
"""
_THEN = {
    "paid_minor": "paid_then_minor AS paid_minor",
    "balance_minor": "balance_then_minor AS balance_minor",
}
_THEN_COLUMNS = ", ".join(_THEN.get(c, c) for c in COLUMNS.split(", "))


def build(
    store: Store, client_id: int, month: date, *, today: date, tz: ZoneInfo, thresholds: dict[str, int]
) -> Statement:
    end = month_end(month)
    as_of = min(end, today)
    cte = client_invoices_cte(thresholds)
    params: dict[str, object] = {
        "client": client_id,
        "today": today.isoformat(),
        "start": month.isoformat(),
        "end": end.isoformat(),
        "cutoff": _cutoff(as_of, tz),
    }
    issued = [
        row_from_sql(r, today)
        for r in store.all(
            f"{cte} SELECT {COLUMNS} FROM inv WHERE issued_on BETWEEN :start AND :end "
            f"ORDER BY issued_on, length(number), number",
            params,
        )
    ]
    # Open items and credits carry their balances at the statement date (see _AS_OF_CTE).
    open_rows = [
        row_from_sql(r, as_of)
        for r in store.all(
            f"{cte}{_AS_OF_CTE} SELECT {_THEN_COLUMNS} FROM then_inv WHERE kind != 'credit_memo' "
            f"AND balance_then_minor > 0 ORDER BY due_on, length(number), number",
            params,
        )
    ]
    credits = [
        row_from_sql(r, as_of)
        for r in store.all(
            f"{cte}{_AS_OF_CTE} SELECT {_THEN_COLUMNS} FROM then_inv WHERE kind = 'credit_memo' "
            f"AND balance_then_minor < 0 ORDER BY issued_on",
            params,
        )
    ]
    start_at, end_at = _utc_bounds(month, tz)
    payments = [
        dict(r)
        for r in store.all(
            "SELECT p.id, p.token, p.method, p.amount_minor, p.currency, p.succeeded_at, ml.brand, ml.last4, "
            "ml.bank_name, (SELECT group_concat(number, ', ') FROM (SELECT DISTINCT i.number "
            "FROM allocations a JOIN invoices i ON i.id = a.invoice_id WHERE a.payment_id = p.id "
            "ORDER BY i.number)) AS invoice_numbers "
            "FROM payments p LEFT JOIN payment_method_labels ml ON ml.payment_id = p.id "
            "WHERE p.client_id = ? AND p.status = 'succeeded' AND p.succeeded_at >= ? AND p.succeeded_at < ? "
            "ORDER BY p.succeeded_at, p.id",
            (client_id, start_at, end_at),
        )
    ]
    aging: dict[str, Aging] = {}
    items = []
    for row in open_rows:
        days = (as_of - date.fromisoformat(row.due_on)).days
        items.append((row, max(0, days)))
        bucket = aging.setdefault(row.currency, Aging(row.currency))
        bucket.buckets[bucket_of(days)] += row.balance_minor
    return Statement(month, end, as_of, issued, payments, items, [aging[c] for c in sorted(aging)], credits)
