"""ConnectWise PSA (Manage) REST 3.0: companies, contacts and invoices in; invoice payments out.

The `*_from_api` functions are pure (raw dict in, value type out, RecordError for a bad record) and
are shared with the files connector, which reads the same record shapes from disk. `ConnectWise` is
the transport: paging, cursors and the payment write-back. See ../shared/API_NOTES.md section 2.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation, localcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from app.core.clock import Clock, parse_vendor_time
from app.core.emails import money_text
from app.core.money import Money, MoneyError, check_currency, minor_from_float
from sync import jsonio, sweep
from sync.base import (
    ConnectorError,
    InvoiceKind,
    Page,
    PaymentWriteBack,
    RecordError,
    Rejected,
    RemoteCompany,
    RemoteContact,
    RemoteInvoice,
    RemoteLine,
)
from sync.http import HttpClient
from sync.psa import refetch
from sync.psa.amounts import exact_minor, lines_mismatch
from sync.psa.fields import optional_time, record_id, required_date

if TYPE_CHECKING:
    from app.config import ConnectWiseSettings

API_VERSION = "2025.1"
ACCEPT = f"application/vnd.connectwise.com+json; version={API_VERSION}"
MAX_PAGE_SIZE = 1000  # ConnectWise's hard cap
# InvoicePayment has no notes/reference field in the 2025.1 schema; `source` is the only free-text
# field that is not GL-related, so it carries our key. NOTE: unverified that CW keeps it as sent.
KEY_PREFIX = "cashloop:"

# (field, line description) of the category totals an invoice carries instead of line items.
_CATEGORIES = (
    ("agreementAmount", "Agreement"),
    ("serviceTotal", "Services"),
    ("productTotal", "Products"),
    ("expenseTotal", "Expenses"),
)
_REF_FIELDS = ("agreement", "project", "phase", "ticket", "service")


def split_names(names: str | Iterable[str]) -> frozenset[str]:
    """["Void", "Cancelled"] (or "Void, Cancelled") -> {"void", "cancelled"}.

    Names compare case-insensitively.
    """
    parts = names.split(",") if isinstance(names, str) else names
    return frozenset(p.strip().lower() for p in parts if p.strip())


@dataclass(frozen=True)
class MappingRules:
    """The per-install choices the mapping needs (from ConnectWiseSettings or FilesSettings)."""

    currency: str = "USD"
    void_statuses: frozenset[str] = frozenset({"void"})
    unapproved_statuses: frozenset[str] = frozenset({"new"})
    billing_contact_types: frozenset[str] = frozenset({"billing"})

    @classmethod
    def from_settings(cls, settings: Any) -> MappingRules:
        return cls(
            currency=check_currency(settings.currency),
            void_statuses=split_names(settings.void_statuses),
            unapproved_statuses=split_names(settings.unapproved_statuses),
            billing_contact_types=split_names(settings.billing_contact_types),
        )


DEFAULT_RULES = MappingRules()


# ---- pure mapping ------------------------------------------------------------------------------


def company_from_api(raw: Mapping[str, Any], rules: MappingRules = DEFAULT_RULES) -> RemoteCompany:
    """One /company/companies record; raises RecordError (missing id or name)."""
    _object(raw)
    name = _text(raw.get("name"))
    if not name:
        raise RecordError("missing name")
    return RemoteCompany(
        remote_id=record_id(raw),
        name=name,
        identifier=_text(raw.get("identifier")),
        parent_remote_id=parent_of(raw),
        billing_contact_remote_id=_ref_id(raw, "billingContact"),
        updated_at=last_updated(raw),
        raw=raw,
    )


def parent_of(raw: Mapping[str, Any]) -> str | None:
    """The company this one rolls up to for billing, or None.

    Rule: the bill-to company when it names another company (CW bills this company's invoices
    to it); otherwise the parent company; a company naming itself in either is its own payer.
    """
    own = str(raw.get("id"))
    for key in ("billToCompany", "parentCompany"):
        ref = _ref_id(raw, key)
        if ref is not None and ref != own:
            return ref
    return None


def contact_from_api(raw: Mapping[str, Any], rules: MappingRules = DEFAULT_RULES) -> RemoteContact:
    """One /company/contacts record; raises RecordError (missing id or company).

    Billing contacts are those with a type named in `rules.billing_contact_types` or CW's
    `defaultBillingFlag`; the company's own billingContact is on RemoteCompany for the core to join.
    """
    _object(raw)
    remote_id = record_id(raw)
    company_id = _ref_id(raw, "company")
    if company_id is None:
        raise RecordError("missing company")
    types = {(_ref_name(t) or "").lower() for t in raw.get("types") or []}
    return RemoteContact(
        remote_id=remote_id,
        company_remote_id=company_id,
        email=_email(raw),
        first_name=_text(raw.get("firstName")) or "",
        last_name=_text(raw.get("lastName")) or "",
        is_billing=bool(types & rules.billing_contact_types) or raw.get("defaultBillingFlag") is True,
        is_active=raw.get("inactiveFlag") is not True,
        updated_at=last_updated(raw),
        raw=raw,
    )


def invoice_from_api(raw: Mapping[str, Any], rules: MappingRules = DEFAULT_RULES) -> RemoteInvoice:
    """One /finance/invoices record (optionally with Cashloop's `lines` extension).

    Raises RecordError naming every problem found: missing id/invoiceNumber/company/total, an
    unknown currency, amounts with more decimals than the currency has, missing or unparseable
    date/dueDate, bad lines (negative quantity, lines not summing to the subtotal).
    """
    _object(raw)
    problems: list[str] = []
    remote_id = record_id(raw)
    number = _text(raw.get("invoiceNumber"))
    if not number:
        problems.append("missing invoiceNumber")
    company_id = _ref_id(raw, "company")
    if company_id is None:
        problems.append("missing company")
    currency = _currency(raw, rules, problems)
    issued_on = required_date(raw, "date", problems)
    due_on = required_date(raw, "dueDate", problems)
    amounts: dict[str, int] = {}
    if currency:
        if raw.get("total") is None:
            problems.append("missing total")
        amounts = _amounts(raw, currency, problems)
    refs = invoice_refs(raw)
    lines: tuple[RemoteLine, ...] = ()
    if currency and not problems:
        _settle_subtotal(raw, currency, amounts, problems)
    if currency and not problems:
        lines = _invoice_lines(raw, currency, amounts, refs, problems)
    if problems:
        raise RecordError("; ".join(problems))
    assert number and company_id and currency and issued_on and due_on  # narrowed by `problems`
    status = (_ref_name(raw.get("status")) or "").lower()
    return RemoteInvoice(
        remote_id=remote_id,
        number=number,
        company_remote_id=company_id,
        kind=invoice_kind(raw, refs),
        currency=currency,
        issued_on=issued_on,
        due_on=due_on,
        subtotal_minor=amounts["subtotal"],
        tax_minor=amounts["salesTax"],
        total_minor=amounts["total"],
        paid_minor=amounts["payments"] + amounts["credits"],
        lines=lines,
        is_void=status in rules.void_statuses,
        is_approved=status not in rules.unapproved_statuses,
        agreement=refs["agreement"],
        project=refs["project"],
        phase=refs["phase"],
        ticket=refs["ticket"],
        description=_text(raw.get("reference")),
        updated_at=last_updated(raw),
        raw=raw,
    )


def invoice_refs(raw: Mapping[str, Any]) -> dict[str, str | None]:
    """agreement/project/phase by name, ticket as '#12345 Printer down' (or whichever part exists)."""

    ticket = raw.get("ticket")
    ticket_text = None
    if isinstance(ticket, dict):
        parts = [f"#{ticket['id']}" if ticket.get("id") is not None else None, _text(ticket.get("summary"))]
        ticket_text = " ".join(p for p in parts if p) or None
    return {
        "agreement": _ref_name(raw.get("agreement")),
        "project": _ref_name(raw.get("project")),
        "phase": _ref_name(raw.get("phase")),
        "ticket": ticket_text,
        "service": None,
    }


def invoice_kind(raw: Mapping[str, Any], refs: Mapping[str, str | None]) -> InvoiceKind:
    """CreditMemo (or any negative total) first, then what the invoice applies to (reference or
    applyToType), then its totals. A negative invoice is money owed to the client: shown as a credit,
    never as an invoice whose balance below zero would read as "paid"."""
    kind_type, apply_to = raw.get("type"), raw.get("applyToType")
    if kind_type == "CreditMemo" or _negative(raw.get("total")):
        return "credit_memo"
    if kind_type == "Agreement" or refs.get("agreement") or apply_to == "Agreement":
        return "agreement"
    if kind_type == "Progress" or refs.get("project") or apply_to in ("Project", "ProjectPhase"):
        return "project"
    lines = raw.get("lines") if isinstance(raw.get("lines"), list) else []
    # A monthly roll-up (applyToType "All") names its tickets only on its lines.
    if refs.get("ticket") or apply_to == "Ticket" or any(isinstance(ln, Mapping) and ln.get("ticket")
                                                        for ln in lines):
        return "time_and_materials"
    if _positive(raw.get("productTotal")) and not _positive(raw.get("serviceTotal")):
        return "product"
    return "other"


def make_line(
    *,
    description: Any,
    quantity: Any,
    unit_price: Any,
    amount: Any,
    currency: str,
    where: str,
    refs: Mapping[str, Any] | None = None,
) -> RemoteLine:
    """One invoice line from loosely typed values (JSON extension or a CSV row).

    `quantity` defaults to 1; `amount` defaults to quantity x unit_price, which must then come out
    in whole minor units; `unit_price` may be left out only when the quantity is 1. Raises
    RecordError prefixed with `where` ("line 2", "row 7").
    """
    desc = _text(description)
    if not desc:
        raise RecordError(f"{where}: missing description")
    qty = parse_quantity(quantity, where)
    try:
        price = None if _blank(unit_price) else exact_minor(unit_price, currency)
        total = None if _blank(amount) else exact_minor(amount, currency)
    except MoneyError as exc:
        raise RecordError(f"{where}: {exc}") from None
    if total is None:
        if price is None:
            raise RecordError(f"{where}: missing amount and unit price")
        with localcontext(prec=60):  # exact: 24 digits of quantity times 19 of price
            exact = qty * price
        if exact != exact.to_integral_value():
            raise RecordError(f"{where}: quantity x unit price is not a whole amount; give the amount")
        total = int(exact)
    if price is None:
        if qty != 1:
            raise RecordError(f"{where}: missing unit price")
        price = total
    refs = refs or {}
    # The references in RemoteLine's field order (agreement, project, phase, ticket, service).
    return RemoteLine(desc, format(qty, "f"), price, total, *[_text(refs.get(k)) for k in _REF_FIELDS])


def parse_quantity(value: Any, where: str) -> Decimal:
    """A non-negative decimal quantity; blank means 1. Floats go through their shortest repr."""
    if _blank(value):
        return Decimal(1)
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RecordError(f"{where}: quantity {value!r} is not a number")
    try:
        qty = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise RecordError(f"{where}: quantity {value!r} is not a number") from None
    if not qty.is_finite():
        raise RecordError(f"{where}: quantity {value!r} is not a number")
    if qty < 0:
        raise RecordError(f"{where}: negative quantity {value}")
    # A line's quantity is hours, seats or units: more than 12 digits either side of the point
    # is a typo, and would make quantity x price inexact in Decimal's 28 digits.
    if qty and (qty.adjusted() >= 12 or qty.as_tuple().exponent < -12):  # type: ignore[operator]
        raise RecordError(f"{where}: quantity {value!r} is out of range")
    return qty


def last_updated(raw: Mapping[str, Any]) -> datetime | None:
    """`_info.lastUpdated` as an aware datetime; None when absent or unparseable (it is advisory)."""
    info = raw.get("_info")
    return optional_time(info.get("lastUpdated") if isinstance(info, dict) else None)


def format_cursor(when: datetime) -> str:
    """Cursor text: ISO-8601 UTC with Z, to the second (what `conditions` expects)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invoice_lines(
    raw: Mapping[str, Any],
    currency: str,
    amounts: Mapping[str, int],
    refs: Mapping[str, str | None],
    problems: list[str],
) -> tuple[RemoteLine, ...]:
    subtotal = amounts["subtotal"]
    given = raw.get("lines")
    if given is not None:  # Cashloop's export extension: real lines, checked against the subtotal
        if not isinstance(given, list):
            problems.append("lines is not a list")
            return ()
        lines = []
        for n, item in enumerate(given, start=1):
            if not isinstance(item, dict):
                problems.append(f"line {n}: not an object")
                continue
            try:
                lines.append(
                    make_line(
                        description=item.get("description"),
                        quantity=item.get("quantity"),
                        unit_price=item.get("unitPrice"),
                        amount=item.get("amount"),
                        currency=currency,
                        where=f"line {n}",
                        refs=item,
                    )
                )
            except RecordError as exc:
                problems.append(str(exc))
        if not problems and (reason := lines_mismatch(tuple(lines), subtotal, currency)):
            problems.append(reason)
        return tuple(lines)
    return _category_lines(raw, amounts, refs)


def _category_lines(
    raw: Mapping[str, Any], amounts: Mapping[str, int], refs: Mapping[str, str | None]
) -> tuple[RemoteLine, ...]:
    # The REST invoice has no line array: one line per non-zero category total, plus whatever
    # the categories do not explain (adjustments, down payments applied) so lines sum to subtotal.
    agreement, project, phase, ticket = refs["agreement"], refs["project"], refs["phase"], refs["ticket"]
    # Work lines name the agreement only on an agreement invoice (additions billed on it).
    work_agreement = agreement if raw.get("type") == "Agreement" else None
    lines = []
    explained = 0
    for field_name, label in _CATEGORIES:
        minor = amounts[field_name]
        if minor:
            explained += minor
            if field_name == "agreementAmount":
                lines.append(RemoteLine(label, "1", minor, minor, agreement))
            else:
                lines.append(RemoteLine(label, "1", minor, minor, work_agreement, project, phase, ticket))
    if amounts.get("downpayment"):
        minor = -amounts["downpayment"]
        explained += minor
        lines.append(
            RemoteLine("Down payment applied", "1", minor, minor, work_agreement, project, phase, ticket)
        )
    rest = amounts["subtotal"] - explained
    if rest:
        label = f"Invoice {raw.get('invoiceNumber')}" if not lines else "Adjustments"
        reason = _text(raw.get("adjustmentReason"))
        description = f"{label}: {reason}" if reason and lines else label
        lines.append(RemoteLine(description, "1", rest, rest, work_agreement, project, phase, ticket))
    return tuple(lines)


def _object(raw: Any) -> None:
    if not isinstance(raw, Mapping):
        raise RecordError("record is not a JSON object")



def _ref_id(raw: Mapping[str, Any], key: str) -> str | None:
    ref = raw.get(key)
    if isinstance(ref, dict) and ref.get("id") is not None and not isinstance(ref.get("id"), bool):
        return str(ref["id"])
    return None


def _ref_name(ref: Any) -> str | None:
    return _text(ref.get("name")) if isinstance(ref, dict) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _positive(value: Any) -> bool:
    if type(value) is float or type(value) is int:  # what the Decimal of its repr would say
        return value > 0
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value)) > 0
    except (InvalidOperation, ValueError):
        return False


def _negative(value: Any) -> bool:
    if type(value) is float or type(value) is int:
        return value < 0
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return False
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value)) < 0
    except (InvalidOperation, ValueError):
        return False


def _settle_subtotal(
    raw: Mapping[str, Any], currency: str, amounts: dict[str, int], problems: list[str]
) -> None:
    # The portal and the books rely on subtotal + tax = total. CW leaves subtotal out of partial
    # responses, and a down payment applied on the invoice is the one known gap between them; it
    # becomes a negative line ("Down payment applied") so that the lines still sum to the subtotal.
    total, tax = amounts["total"], amounts["salesTax"]
    if raw.get("subtotal") is None:
        amounts["subtotal"] = total - tax
        return
    given = amounts["subtotal"]
    if given + tax == total:
        return
    downpayment = _amount(raw, "downpaymentApplied", currency, problems)
    if downpayment and given + tax - downpayment == total:
        amounts["subtotal"] = total - tax
        amounts["downpayment"] = downpayment
        return
    problems.append(
        f"subtotal {money_text(given, currency)} + tax {money_text(tax, currency)} is "
        f"{money_text(given + tax, currency)} but total is {money_text(total, currency)}"
    )


def _email(raw: Mapping[str, Any]) -> str | None:
    items = [i for i in raw.get("communicationItems") or [] if isinstance(i, dict)]
    emails = [
        i
        for i in items
        if i.get("communicationType") == "Email"
        or (i.get("communicationType") is None and _ref_name(i.get("type")) == "Email")
    ]
    emails.sort(key=lambda i: i.get("defaultFlag") is not True)  # stable: default first
    for item in emails:
        value = _text(item.get("value"))
        # One address, as typed: "sam @typo.example" or "a@x.example, b@y.example" is not one.
        if value and "@" in value and not any(ch.isspace() or ch in ",;" for ch in value):
            return value
    return None


# Vendor currency codes already checked (a backfill sends the same one or two on every invoice).
_CHECKED_CODES: dict[str, str] = {}


def _currency(raw: Mapping[str, Any], rules: MappingRules, problems: list[str]) -> str | None:
    ref = raw.get("currency")
    code = ref.get("currencyCode") if isinstance(ref, dict) else None
    if type(code) is str and (checked := _CHECKED_CODES.get(code)) is not None:
        return checked
    if _blank(code):
        return rules.currency
    try:
        checked = check_currency(code)
        if len(_CHECKED_CODES) < 256:
            _CHECKED_CODES[code] = checked
        return checked
    except MoneyError:
        problems.append(f"unknown currency {code!r}")
        return None


_AMOUNT_FIELDS = ("total", "subtotal", "salesTax", "payments", "credits", *dict(_CATEGORIES))


def _amounts(raw: Mapping[str, Any], currency: str, problems: list[str]) -> dict[str, int]:
    # Nine amounts an invoice: JSON doubles with the currency's places take the fast exact path.
    out: dict[str, int] = {}
    for name in _AMOUNT_FIELDS:
        value = raw.get(name)
        if type(value) is float and (minor := minor_from_float(value, currency)) is not None:
            out[name] = minor
        else:
            out[name] = _amount(raw, name, currency, problems)
    return out


def _amount(raw: Mapping[str, Any], key: str, currency: str, problems: list[str]) -> int:
    value = raw.get(key)
    if value is None or (value == 0 and type(value) in (int, float)):
        return 0
    try:
        return exact_minor(value, currency)
    except MoneyError as exc:
        problems.append(f"{key}: {exc}")
        return 0


# ---- transport ---------------------------------------------------------------------------------


class ConnectWise:
    """PsaSource over REST 3.0. Errors leave as ConnectorError (from HttpClient or here)."""

    kind = "connectwise"
    supports_payment_writeback = True
    supports_deletion_check = True

    def __init__(self, settings: ConnectWiseSettings, http: HttpClient, clock: Clock) -> None:
        base = settings.base_url or f"https://{settings.site}/{settings.codebase.strip('/')}/apis/3.0"
        self._base = base.rstrip("/")
        self._auth = (f"{settings.company_id}+{settings.public_key}", str(settings.private_key))
        self._headers = {"clientId": settings.client_id, "Accept": ACCEPT}
        self._page_size = max(1, min(settings.page_size, MAX_PAGE_SIZE))
        self._payment_type = settings.payment_type
        self._rules = MappingRules.from_settings(settings)
        self._http = http
        self._clock = clock

    def companies(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteCompany | Rejected changed since `cursor` (see `_changed`)."""
        return self._changed("/company/companies", "company", company_from_api, cursor)

    def contacts(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteContact | Rejected changed since `cursor`."""
        return self._changed("/company/contacts", "contact", contact_from_api, cursor)

    def invoices(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteInvoice | Rejected changed since `cursor`."""
        return self._changed("/finance/invoices", "invoice", invoice_from_api, cursor)

    def record_payment(self, payment: PaymentWriteBack, *, key: str) -> str:
        """POST one InvoicePayment; returns its id. Idempotent by `key` (kept in the payment's `source`).

        Before posting, the invoice's payments are listed and one already carrying the key is
        returned instead: that is how a retry after a lost response avoids a second payment.
        """
        path = f"/finance/invoices/{_int_id(payment.invoice_remote_id)}/payments"
        marker = KEY_PREFIX + key
        for existing in self._all(path):
            if marker in str(existing.get("source") or ""):
                return str(existing["id"])
        body = {
            "type": self._payment_type,
            "amount": Money(payment.amount_minor, payment.currency).to_decimal(),
            "paymentDate": f"{payment.paid_on.isoformat()}T00:00:00Z",
            "source": marker,
        }
        resp = self._http.request(
            "POST",
            self._base + path,
            data=json_bytes(body),
            auth=self._auth,
            headers={**self._headers, "Content-Type": "application/json"},
        )
        created = _json(resp)
        if not isinstance(created, dict) or created.get("id") is None:
            raise ConnectorError(f"POST {path}: response carries no payment id", retryable=False)
        return str(created["id"])

    def refresh(self, remote_ids: Iterable[str]) -> Iterator[Page]:
        """The invoices `remote_ids` as they are now, one GET each (an id gone at ConnectWise is left out)."""
        return refetch.by_id(
            remote_ids,
            lambda rid: _json(self._get(f"/finance/invoices/{rid}", {})),
            lambda raw: map_or_reject("invoice", invoice_from_api, raw, self._rules),
        )

    def invoice_ids(self) -> Iterator[str]:
        """Every invoice id at ConnectWise, 1,000 a request (`fields=id`, keyset on id)."""
        last_id = 0
        while True:
            params: dict[str, Any] = {"orderBy": "id asc", "pageSize": MAX_PAGE_SIZE, "fields": "id"}
            if last_id:
                params["conditions"] = f"id > {last_id}"
            resp = self._get("/finance/invoices", params)
            records = _json(resp)
            if not isinstance(records, list):
                raise ConnectorError("GET /finance/invoices: expected a JSON array", retryable=False)
            ids = [int(i) for i in map(_listed_id, records) if i is not None]
            if ids and min(ids) <= last_id:
                # A page that goes back (a PSA answering the first page again): what it lists
                # says nothing about what is gone, and closing invoices on it would be wrong.
                raise ConnectorError(
                    f"invoice_ids: GET /finance/invoices with id > {last_id} answered id {min(ids)}; "
                    "the deletion check is skipped this time",
                    retryable=True,
                )
            yield from (str(i) for i in ids)
            if len(records) < MAX_PAGE_SIZE or not _has_next(resp) or not ids:
                return
            last_id = max(ids)

    def estimate(self, obj: str, cursor: str | None) -> int | None:
        """How many records a sweep from `cursor` will read (for the progress bar); None if unknown."""
        path = {"companies": "/company/companies", "contacts": "/company/contacts",
                "invoices": "/finance/invoices"}[obj]
        state = sweep.begin(cursor)
        conditions = self._conditions(sweep.parse_time(state.since), state.after)
        params = {"conditions": conditions} if conditions else {}
        body = _json(self._get(path + "/count", params))
        count = body.get("count") if isinstance(body, dict) else None
        return count if _is_int(count) else None

    def _changed(self, path: str, obj: Any, mapper: Callable[..., Any], cursor: str | None) -> Iterator[Page]:
        """Keyset paging (`id > last`, orderBy id asc) over records changed after the sweep's start.

        Keyset rather than page numbers: a record deleted mid-sweep would shift page offsets and
        silently skip a neighbour. Pages come in id order, not lastUpdated order, so the change
        cursor only moves on the sweep's last page; the pages before carry the sweep's position
        (sync/sweep.py), which resumes a killed sweep after its last committed page. Changes made
        during the sweep are caught by the core's overlap window.
        """
        state = sweep.begin(cursor)
        since = sweep.parse_time(state.since)
        if state.since and since is None:
            raise ConnectorError(f"unreadable ConnectWise cursor {state.since!r}", retryable=False)
        newest = sweep.parse_time(state.newest)
        last_id = state.after
        now = self._clock.utc_now()
        pending = _InFlight(self._get, path, self._page_params(since, last_id))
        while True:
            resp = pending.result()
            records = _json(resp)
            if not isinstance(records, list):
                raise ConnectorError(f"GET {path}: expected a JSON array", retryable=False)
            page_last_id = max(
                [last_id, *(r["id"] for r in records if isinstance(r, dict) and _is_int(r.get("id")))]
            )
            more = len(records) >= self._page_size and _has_next(resp)
            if more and page_last_id <= last_id:
                raise ConnectorError(f"GET {path}: a full page without increasing ids", retryable=False)
            last_id = page_last_id
            if more:  # the PSA answers the next page while this one is mapped and stored
                pending = _InFlight(self._get, path, self._page_params(since, last_id))
            items: list[Any] = []
            for raw in records:
                item = map_or_reject(obj, mapper, raw, self._rules)
                items.append(item)
                if isinstance(raw, dict):
                    # A mapped record carries its last_updated(raw) already.
                    stamp = last_updated(raw) if isinstance(item, Rejected) else item.updated_at
                    newest = sweep.newer(newest, stamp, now)
            if more:
                state = state.advance(after=last_id, newest=newest)
                yield Page(items, state.encode())
                continue
            yield Page(items, state.final_cursor(newest))
            return

    def _page_params(self, since: datetime | None, last_id: int) -> dict[str, Any]:
        params: dict[str, Any] = {"orderBy": "id asc", "pageSize": self._page_size}
        conditions = self._conditions(since, last_id)
        if conditions:
            params["conditions"] = conditions
        return params

    @staticmethod
    def _conditions(since: datetime | None, last_id: int) -> str:
        parts = [f"lastUpdated > [{format_cursor(since)}]"] if since else []
        if last_id:
            parts.append(f"id > {last_id}")
        return " and ".join(parts)

    def _all(self, path: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            records = _json(self._get(path, {"orderBy": "id asc", "page": page, "pageSize": MAX_PAGE_SIZE}))
            if not isinstance(records, list):
                raise ConnectorError(f"GET {path}: expected a JSON array", retryable=False)
            yield from (r for r in records if isinstance(r, dict))
            if len(records) < MAX_PAGE_SIZE:
                return
            page += 1

    def _get(self, path: str, params: Mapping[str, Any]) -> requests.Response:
        return self._http.request(
            "GET", self._base + path, headers=self._headers, params=params, auth=self._auth
        )


def parse_cursor(cursor: str | None) -> datetime | None:
    """The stored cursor as an aware datetime; raises ConnectorError (not retryable) if unreadable."""
    if not cursor:
        return None
    try:
        return parse_vendor_time(cursor).astimezone(UTC)
    except ValueError:
        raise ConnectorError(f"unreadable ConnectWise cursor {cursor!r}", retryable=False) from None


def json_bytes(value: Any) -> bytes:
    """JSON with Decimals written as exact number literals (json.dumps would need a float)."""
    return _dumps(value).encode()


def _dumps(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


def map_or_reject(obj: Any, mapper: Callable[..., Any], raw: Any, rules: MappingRules) -> Any:
    """`mapper(raw, rules)`, or a Rejected with the RecordError's reason (a bad record never stops a page)."""
    try:
        return mapper(raw, rules)
    except RecordError as exc:
        reason = str(exc)
    # A shape the mapping did not foresee, or a number past what date or decimal arithmetic holds.
    except (AttributeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        reason = f"unexpected record shape ({type(exc).__name__}: {exc})"
    remote_id = str(raw.get("id", "")).strip() if isinstance(raw, dict) else ""  # as record_id reads it
    return Rejected(obj, remote_id, reason, raw if isinstance(raw, dict) else {"value": raw})


def _listed_id(record: Any) -> str | None:
    """The id of one record of an id listing, read as record_id reads it; None if it has none."""
    try:
        rid = record_id(record)
    except RecordError:
        return None
    return rid if rid.isascii() and rid.isdigit() else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_next(resp: requests.Response) -> bool:
    # CW sends Link rel="next" while more pages exist; without any Link header, trust the count.
    link = resp.headers.get("Link")
    return link is None or 'rel="next"' in link


class _InFlight:
    """One request on its own thread; `result()` waits for it and raises what it raised.

    A sweep has at most one in flight and waits for it before asking for the next page, so its
    requests never overlap (connectors need not be thread-safe).
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="cw-next-page", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to result(), on the sweep's thread
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _json(resp: requests.Response) -> Any:
    """The body decoded (by orjson, for speed; see jsonio.loads_body for its bytes); ConnectorError
    (retryable) when it is not JSON."""
    try:
        return jsonio.loads_body(resp.content, resp.encoding)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        path = urlsplit(resp.url).path if resp.url else "?"
        why = "empty body" if not resp.content.strip() else str(exc)[:120]
        raise ConnectorError(
            f"{path}: response is not JSON ({why})", retryable=True, status=resp.status_code
        ) from None


def _int_id(remote_id: str) -> int:
    if not remote_id.isdigit():
        raise ConnectorError(f"ConnectWise invoice id must be a number, got {remote_id!r}", retryable=False)
    return int(remote_id)
