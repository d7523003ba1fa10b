"""The invoice list: filters from the query string, one page of rows, counts and totals per kind.

Everything is scoped by the session's client (`:client`); filter values are bound parameters.
Two queries per page: one groups the selection by kind and currency (counts, totals, the
category tabs), one returns the page. Both run over the client's invoices only, through the
`invoices_client_visible` index, so a client with thousands of invoices stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal

from app.core.store import Store
from app.web.invoice_rows import COLUMNS, STATUS_RANK, InvoiceRow, client_invoices_cte, row_from_sql

PER_PAGE = 50
KINDS = ("agreement", "project", "time_and_materials", "product", "credit_memo", "other")
STATUS_FILTERS = {
    "unpaid": "Unpaid",
    "overdue": "Overdue",
    "partly_paid": "Partly paid",
    "processing": "Payment pending",
    "awaiting_approval": "Awaiting approval",
    "in_dispute": "In dispute",
    "paid": "Paid",
    "credit": "Credits",
    "all": "All",
}
# Old links (and bookmarks) said status=open for what is now "Unpaid".
_STATUS_ALIASES = {"open": "unpaid"}
SORTS = {
    "due": "Due date",
    "date": "Invoice date",
    "number": "Number",
    "kind": "Kind",
    "reference": "Agreement / project / ticket",
    "total": "Total",
    "balance": "Balance",
    "status": "Status",
}
_STATUS_ORDER = (
    "CASE status_key " + " ".join(f"WHEN '{s}' THEN {n}" for n, s in enumerate(STATUS_RANK)) + " END"
)
_SORT_SQL = {
    "date": ("issued_on",),
    "due": ("due_on",),
    # Natural order for numbers sharing a prefix: INV-999 before INV-1000.
    "number": ("length(number)", "number"),
    "kind": ("kind",),
    "reference": ("reference COLLATE NOCASE",),
    "total": ("total_minor",),
    "balance": ("balance_minor",),
    "status": (_STATUS_ORDER, "due_on"),
}
_OWED = "kind != 'credit_memo' AND balance_minor > 0"
_STATUS_SQL = {
    "unpaid": _OWED,
    "overdue": f"{_OWED} AND due_on < :today",
    "partly_paid": f"{_OWED} AND balance_minor < total_minor",
    "processing": "reserved_minor > 0",
    "awaiting_approval": f"{_OWED} AND awaits_approval",
    "in_dispute": "in_dispute",
    "paid": "kind != 'credit_memo' AND balance_minor <= 0",
    "credit": "kind = 'credit_memo'",
    "all": "",
}
_SEARCHED_INVOICE = ("number", "description", "ticket", "project", "agreement")
_SEARCHED_LINE = ("description", "ticket", "project", "agreement", "service")


@dataclass(frozen=True)
class InvoiceFilters:
    kind: str = ""
    status: str = "unpaid"
    q: str = ""
    project: str = ""
    agreement: str = ""
    service: str = ""
    due_from: date | None = None
    due_to: date | None = None
    sort: str = "due"
    direction: Literal["asc", "desc"] = "asc"
    page: int = 1

    @property
    def is_narrowed(self) -> bool:
        """True when anything beyond the kind, status and sort narrows the list (shown as a reset link)."""
        return bool(self.q or self.project or self.agreement or self.service or self.due_from or self.due_to)

    def params(self, **changes: object) -> dict[str, object]:
        """Query-string parameters for this selection with `changes`, leaving out defaults."""
        values: dict[str, object] = {
            "kind": self.kind,
            "status": self.status,
            "q": self.q,
            "project": self.project,
            "agreement": self.agreement,
            "service": self.service,
            "due_from": self.due_from.isoformat() if self.due_from else "",
            "due_to": self.due_to.isoformat() if self.due_to else "",
            "sort": self.sort,
            "dir": self.direction,
            "page": self.page,
        }
        values.update(changes)
        defaults = {"status": "unpaid", "sort": "due", "dir": "asc", "page": 1}
        return {k: v for k, v in values.items() if v not in ("", None) and defaults.get(k) != v}


@dataclass(frozen=True)
class CategoryTotal:
    kind: str
    currency: str
    count: int
    total_minor: int
    owed_minor: int
    credit_minor: int


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    total_minor: int
    balance_minor: int
    overdue_minor: int = 0


@dataclass(frozen=True)
class InvoicePage:
    rows: list[InvoiceRow]
    count: int
    page: int
    pages: int
    totals: list[CurrencyTotal]
    categories: list[CategoryTotal] = field(default_factory=list)

    def category_count(self, kind: str) -> int:
        return sum(c.count for c in self.categories if c.kind == kind)


def _date_arg(text: str | None) -> date | None:
    try:
        return date.fromisoformat((text or "").strip()) if text else None
    except ValueError:
        return None


def _int_arg(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def filters_from_args(args: Mapping[str, str]) -> tuple[InvoiceFilters, dict[str, str]]:
    """(filters, errors): a value that means nothing is dropped and explained, never an error page."""
    errors: dict[str, str] = {}
    status = args.get("status", "unpaid")
    status = _STATUS_ALIASES.get(status, status)
    sort = args.get("sort", "due")
    due_from, due_to = _date_arg(args.get("due_from")), _date_arg(args.get("due_to"))
    for key, value in (("due_from", due_from), ("due_to", due_to)):
        if args.get(key) and value is None:
            errors[key] = "Enter the date as YYYY-MM-DD, or pick it from the calendar."
    if due_from and due_to and due_from > due_to:
        errors["due_to"] = "The end of the range is before its start; the dates were swapped."
        due_from, due_to = due_to, due_from
    f = InvoiceFilters(
        kind=args.get("kind", "") if args.get("kind", "") in KINDS else "",
        status=status if status in STATUS_FILTERS else "unpaid",
        q=args.get("q", "").strip()[:100],
        project=args.get("project", "").strip()[:200],
        agreement=args.get("agreement", "").strip()[:200],
        service=args.get("service", "").strip()[:200],
        due_from=due_from,
        due_to=due_to,
        sort=sort if sort in SORTS else "due",
        direction="desc" if args.get("dir") == "desc" else "asc",
        page=_int_arg(args.get("page"), 1),
    )
    return f, errors


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(f: InvoiceFilters, params: dict[str, object], *, with_kind: bool) -> str:
    where: list[str] = []
    if with_kind and f.kind:
        where.append("kind = :kind")
        params["kind"] = f.kind
    if _STATUS_SQL[f.status]:
        where.append(_STATUS_SQL[f.status])
    for ref in ("project", "agreement"):
        value = getattr(f, ref)
        if value:
            params[ref] = value
            where.append(
                f"({ref} = :{ref} OR EXISTS (SELECT 1 FROM invoice_lines l "
                f"WHERE l.invoice_id = inv.id AND l.{ref} = :{ref}))"
            )
    if f.service:
        params["service"] = f.service
        where.append(
            "EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = inv.id AND l.service = :service)"
        )
    if f.due_from:
        params["due_from"] = f.due_from.isoformat()
        where.append("due_on >= :due_from")
    if f.due_to:
        params["due_to"] = f.due_to.isoformat()
        where.append("due_on <= :due_to")
    if f.q:
        params["q"] = _like(f.q)
        on_invoice = " OR ".join(f"{c} LIKE :q ESCAPE '\\'" for c in _SEARCHED_INVOICE)
        on_lines = " OR ".join(f"l.{c} LIKE :q ESCAPE '\\'" for c in _SEARCHED_LINE)
        where.append(
            f"({on_invoice} OR EXISTS (SELECT 1 FROM invoice_lines l "
            f"WHERE l.invoice_id = inv.id AND ({on_lines})))"
        )
    return (" WHERE " + " AND ".join(where)) if where else ""


def list_invoices(
    store: Store,
    client_id: int,
    today: date,
    f: InvoiceFilters,
    *,
    thresholds: dict[str, int],
    per_page: int = PER_PAGE,
) -> InvoicePage:
    """One page of the client's invoices matching `f`, with counts and totals of the whole selection."""
    cte = client_invoices_cte(thresholds)
    params: dict[str, object] = {"client": client_id, "today": today.isoformat()}
    cond_all_kinds = _conditions(f, params, with_kind=False)
    categories = [
        CategoryTotal(r["kind"], r["currency"], r["n"], r["total_minor"], r["owed_minor"], r["credit_minor"])
        for r in store.all(
            f"{cte} SELECT kind, currency, COUNT(*) AS n, SUM(total_minor) AS total_minor, "
            f"SUM(CASE WHEN kind != 'credit_memo' AND balance_minor > 0 THEN balance_minor ELSE 0 END) "
            f"AS owed_minor, "
            f"SUM(CASE WHEN kind = 'credit_memo' AND balance_minor < 0 THEN -balance_minor ELSE 0 END) "
            f"AS credit_minor FROM inv{cond_all_kinds} GROUP BY kind, currency ORDER BY kind, currency",
            params,
        )
    ]
    chosen = [c for c in categories if not f.kind or c.kind == f.kind]
    count = sum(c.count for c in chosen)
    totals: dict[str, CurrencyTotal] = {}
    for c in chosen:
        t = totals.get(c.currency, CurrencyTotal(c.currency, 0, 0))
        totals[c.currency] = replace(
            t,
            total_minor=t.total_minor + c.total_minor,
            balance_minor=t.balance_minor + c.owed_minor - c.credit_minor,
        )
    pages = max(1, -(-count // per_page))
    page = min(max(1, f.page), pages)
    direction = "DESC" if f.direction == "desc" else "ASC"
    order = ", ".join(f"{col} {direction}" for col in _SORT_SQL.get(f.sort, _SORT_SQL["due"]))
    cond = _conditions(f, params, with_kind=True)
    params.update(limit=per_page, offset=(page - 1) * per_page)
    rows = store.all(
        f"{cte} SELECT {COLUMNS} FROM inv{cond} ORDER BY {order}, id {direction} LIMIT :limit OFFSET :offset",
        params,
    )
    return InvoicePage(
        [row_from_sql(r, today) for r in rows],
        count,
        page,
        pages,
        [totals[c] for c in sorted(totals)],
        categories,
    )


def filter_options(store: Store, client_id: int) -> dict[str, list[str]]:
    """The projects, agreements and services the client's visible invoices name (for the filter menus).

    Kept until the client's data changes (app.web.list_cache): they scan every line of its invoices.
    """
    from app.web import list_cache

    key = (store.path, client_id, list_cache.client_version(store, client_id))
    return list_cache.options.get_or_compute(key, lambda: _read_options(store, client_id))


def _read_options(store: Store, client_id: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    visible = "i.client_id = ? AND i.status = 'open' AND i.is_approved = 1"
    for ref in ("project", "agreement", "service"):
        on_invoice = (
            f"SELECT i.{ref} AS v FROM invoices i WHERE {visible} AND i.{ref} IS NOT NULL UNION "
            if ref != "service"
            else ""
        )
        sql = (
            f"SELECT v FROM ({on_invoice}SELECT l.{ref} AS v FROM invoices i JOIN invoice_lines l "
            f"ON l.invoice_id = i.id WHERE {visible} AND l.{ref} IS NOT NULL) "
            f"WHERE v != '' GROUP BY v ORDER BY v COLLATE NOCASE LIMIT 500"
        )
        args = (client_id, client_id) if on_invoice else (client_id,)
        out[ref] = [r[0] for r in store.all(sql, args)]
    return out
