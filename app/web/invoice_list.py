"""The invoice list: filters from the query string, one page of rows, counts and totals per kind.

Everything is scoped by the session's client. The client's visible invoices (balances and
statuses from app.web.invoice_rows, through the `invoices_client_visible` index) and the text of
their lines are read once per change of its data (app.web.list_cache) and kept; a page, with its
counts and totals per kind and currency, is one pass over them, so that a client with thousands
of invoices gets a new search or sort without a query over all of its lines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
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
_STATUS_ORDER = {s: n for n, s in enumerate(STATUS_RANK)}
# Sort keys: natural order for numbers sharing a prefix (INV-999 before INV-1000), the reference
# case-folded as SQLite's NOCASE does (ASCII only); the invoice id breaks every tie.
_SORT_KEYS: dict[str, Callable[[InvoiceRow], tuple[object, ...]]] = {
    "date": lambda r: (r.issued_on, r.id),
    "due": lambda r: (r.due_on, r.id),
    "number": lambda r: (len(r.number), r.number, r.id),
    "kind": lambda r: (r.kind, r.id),
    "reference": lambda r: (_fold(r.reference), r.id),
    "total": lambda r: (r.total_minor, r.id),
    "balance": lambda r: (r.balance_minor, r.id),
    "status": lambda r: (_STATUS_ORDER.get(r.status_key, len(_STATUS_ORDER)), r.due_on, r.id),
}


def _owed(r: InvoiceRow) -> bool:
    return r.kind != "credit_memo" and r.balance_minor > 0


_STATUS_TESTS: dict[str, Callable[[InvoiceRow, str], bool]] = {
    "unpaid": lambda r, today: _owed(r),
    "overdue": lambda r, today: _owed(r) and r.due_on < today,
    "partly_paid": lambda r, today: _owed(r) and r.balance_minor < r.total_minor,
    "processing": lambda r, today: r.reserved_minor > 0,
    "awaiting_approval": lambda r, today: _owed(r) and r.awaits_approval,
    "in_dispute": lambda r, today: r.in_dispute,
    "paid": lambda r, today: r.kind != "credit_memo" and r.balance_minor <= 0,
    "credit": lambda r, today: r.kind == "credit_memo",
}
_SEARCHED_INVOICE = ("number", "description", "ticket", "project", "agreement")
_SEARCHED_LINE = ("description", "ticket", "project", "agreement", "service")
_REFS = ("project", "agreement", "service")
# SQLite's LIKE and NOCASE fold ASCII letters only; so does the search here.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MAX_SELECTIONS = 32  # filter selections kept per book (each a list of references to its rows)
_SEP = "\x00"  # between searched fields, so that a search never matches across two of them


def _fold(text: str) -> str:
    return text.translate(_ASCII_LOWER)


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


@dataclass
class _Book:
    """Every visible invoice of one client as the list shows it, with what the filters read.

    Computed once per client data version (the key of app.web.list_cache) by two queries; each
    list page is then a pass over it in Python. A search used to run a LIKE over every line of
    every invoice twice per request (for the counts, then for the page).
    """

    rows: list[InvoiceRow]
    haystacks: dict[int, str]  # invoice id -> its searched fields and its lines', ASCII-folded
    line_refs: dict[str, dict[str, frozenset[int]]]  # project/agreement/service -> value -> invoice ids
    _orders: dict[str, list[InvoiceRow]] = field(default_factory=dict)
    _selections: dict[tuple[object, ...], tuple[list[InvoiceRow], list[CategoryTotal]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ordered(self, sort: str) -> list[InvoiceRow]:
        """The rows in ascending order of `sort` (kept: the next page or search reuses it)."""
        order = self._orders.get(sort)
        if order is None:
            order = sorted(self.rows, key=_SORT_KEYS.get(sort, _SORT_KEYS["due"]))
            self._orders[sort] = order
        return order

    def selection(self, f: InvoiceFilters, today: date) -> tuple[list[InvoiceRow], list[CategoryTotal]]:
        """The rows matching `f` but its kind, in ascending order of its sort, and their counts and
        totals per kind and currency; kept for the other pages, kinds and directions of the same."""
        key = (f.sort, f.status, f.q, f.project, f.agreement, f.service, f.due_from, f.due_to)
        found = self._selections.get(key)
        if found is not None:
            return found
        selected = self.ordered(f.sort)
        if f.q:  # the narrowest test first: one substring search per invoice
            needle = _fold(f.q.replace(_SEP, ""))
            ids = {i for i, text in self.haystacks.items() if needle in text}
            selected = [r for r in selected if r.id in ids]
        for test in _tests(f, self, today.isoformat()):
            selected = [r for r in selected if test(r)]
        sums: dict[tuple[str, str], list[int]] = {}
        for r in selected:
            s = sums.get((r.kind, r.currency))
            if s is None:
                s = sums[(r.kind, r.currency)] = [0, 0, 0, 0]
            s[0] += 1
            s[1] += r.total_minor
            if r.kind != "credit_memo":
                s[2] += max(0, r.balance_minor)
            else:
                s[3] += max(0, -r.balance_minor)
        categories = [CategoryTotal(kind, cur, *sums[(kind, cur)]) for kind, cur in sorted(sums)]
        with self._lock:  # request threads share the book
            while len(self._selections) >= MAX_SELECTIONS:
                self._selections.pop(next(iter(self._selections)))
            self._selections[key] = (selected, categories)
        return selected, categories


def _read_book(store: Store, client_id: int, today: date, thresholds: dict[str, int]) -> _Book:
    cte = client_invoices_cte(thresholds)
    params = {"client": client_id, "today": today.isoformat()}
    rows = [row_from_sql(r, today) for r in store.all(f"{cte} SELECT {COLUMNS} FROM inv", params)]
    texts: dict[int, list[str]] = {}
    line_refs: dict[str, dict[str, set[int]]] = {ref: {} for ref in _REFS}
    for r in rows:
        texts[r.id] = [v for v in (getattr(r, c) for c in _SEARCHED_INVOICE) if v is not None]
    for line in store.all(
        f"SELECT l.invoice_id, {', '.join('l.' + c for c in _SEARCHED_LINE)} FROM invoices i "
        "JOIN invoice_lines l ON l.invoice_id = i.id "
        "WHERE i.client_id = ? AND i.status = 'open' AND i.is_approved = 1",
        (client_id,),
    ):
        held = texts.get(line[0])
        if held is None:
            continue
        held.extend(v for v in tuple(line)[1:] if v is not None)
        for ref in _REFS:
            if line[ref] is not None:
                line_refs[ref].setdefault(line[ref], set()).add(line[0])
    return _Book(
        rows,
        {i: _fold(_SEP.join(str(v) for v in values)) for i, values in texts.items()},
        {ref: {v: frozenset(ids) for v, ids in by_value.items()} for ref, by_value in line_refs.items()},
    )


def _book(store: Store, client_id: int, today: date, thresholds: dict[str, int]) -> _Book:
    from app.web import list_cache

    key = (store.path, client_id, list_cache.client_version(store, client_id), today,
           tuple(sorted(thresholds.items())))
    return list_cache.books.get_or_compute(key, lambda: _read_book(store, client_id, today, thresholds))


def _tests(f: InvoiceFilters, book: _Book, today: str) -> list[Callable[[InvoiceRow], bool]]:
    """One test per filter of `f` but the search and the kind (the counts per kind ignore it)."""
    tests: list[Callable[[InvoiceRow], bool]] = []
    status = _STATUS_TESTS.get(f.status)
    if status is not None:
        tests.append(lambda r: status(r, today))
    no_ids: frozenset[int] = frozenset()
    for ref in ("project", "agreement"):
        value = getattr(f, ref)
        if value:
            on_lines = book.line_refs[ref].get(value, no_ids)
            tests.append(lambda r, ref=ref, value=value, on_lines=on_lines: getattr(r, ref) == value
                         or r.id in on_lines)
    if f.service:
        with_service = book.line_refs["service"].get(f.service, no_ids)
        tests.append(lambda r: r.id in with_service)
    if f.due_from:
        due_from = f.due_from.isoformat()
        tests.append(lambda r: r.due_on >= due_from)
    if f.due_to:
        due_to = f.due_to.isoformat()
        tests.append(lambda r: r.due_on <= due_to)
    return tests


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
    book = _book(store, client_id, today, thresholds)
    selected, categories = book.selection(f, today)
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
    if f.kind:
        selected = [r for r in selected if r.kind == f.kind]
    start = (page - 1) * per_page
    if f.direction == "desc":  # (key, id) descending: the ascending order read from its end
        shown = selected[::-1][start : start + per_page]
    else:
        shown = selected[start : start + per_page]
    return InvoicePage(
        shown,
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
