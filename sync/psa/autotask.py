"""Datto Autotask PSA REST v1.0: companies, contacts and invoices (lines from BillingItems) in.

Autotask has no invoice-payment entity, so nothing is written back (`supports_payment_writeback`
is False; payments belong in the accounting system). Invoices have no last-modified field: a sweep
reads invoices created, voided or marked paid after the cursor, and `refresh` re-reads the ones the
portal still shows as open, because "mark as paid" may carry a paid date before the cursor.
See ../shared/API_NOTES.md section 3. Transport: `POST /V1.0/{Entity}/query` with filter JSON, 500
records a page, `pageDetails.nextPageUrl` followed verbatim (the same body re-POSTed), three
headers for auth, and the zone discovered once per process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from app.core.clock import Clock
from app.core.money import MoneyError, check_currency
from sync import jsonio, sweep
from sync.base import (
    ConnectorError,
    InvoiceKind,
    Page,
    PaymentWriteBack,
    RecordError,
    RemoteCompany,
    RemoteContact,
    RemoteInvoice,
    RemoteLine,
)
from sync.http import HttpClient
from sync.psa.amounts import field_minor, rounded_minor, settle, was_rounded
from sync.psa.connectwise import map_or_reject, parse_quantity, split_names
from sync.psa.fields import optional_time, record_id, required_date, text_or_none

if TYPE_CHECKING:
    from app.config import AutotaskSettings

API = "V1.0"
MAX_PAGE = 500  # Autotask's cap per page, and the most values one `in` filter should carry
# The invoice fields whose change a sweep must see: creation, void and "mark as paid".
_INVOICE_CHANGES = ("createDateTime", "voidedDate", "paidDate")


@dataclass(frozen=True)
class AutotaskRules:
    currency: str = "USD"
    billing_titles: frozenset[str] = frozenset({"billing", "accounts payable"})
    primary_is_billing: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> AutotaskRules:
        return cls(
            currency=check_currency(settings.currency),
            billing_titles=split_names(settings.billing_contact_titles),
            primary_is_billing=settings.primary_contact_is_billing,
        )


# ---- pure mapping ------------------------------------------------------------------------------


def company_from_api(raw: Mapping[str, Any], rules: AutotaskRules = AutotaskRules()) -> RemoteCompany:
    """One Companies record; raises RecordError (missing id or companyName)."""
    name = text_or_none(raw.get("companyName"))
    if not name:
        raise RecordError("missing companyName")
    return RemoteCompany(
        remote_id=record_id(raw),
        name=name,
        identifier=text_or_none(raw.get("companyNumber")),
        parent_remote_id=_parent(raw),
        updated_at=optional_time(raw.get("lastTrackedModifiedDateTime")),
        raw=raw,
    )


def _parent(raw: Mapping[str, Any]) -> str | None:
    # A company that names itself as its parent has none (as ConnectWise and HaloPSA read it).
    parent = _ref(raw.get("parentCompanyID"))
    return None if parent is not None and parent == str(raw.get("id")) else parent


def contact_from_api(raw: Mapping[str, Any], rules: AutotaskRules = AutotaskRules()) -> RemoteContact:
    """One Contacts record; billing when its title is a billing title or it is the primary contact."""
    company = _ref(raw.get("companyID"))
    if company is None:
        raise RecordError("missing companyID")
    title = (text_or_none(raw.get("title")) or "").lower()
    email = text_or_none(raw.get("emailAddress"))
    return RemoteContact(
        remote_id=record_id(raw),
        company_remote_id=company,
        email=email if email and "@" in email else None,
        first_name=text_or_none(raw.get("firstName")) or "",
        last_name=text_or_none(raw.get("lastName")) or "",
        is_billing=title in rules.billing_titles
        or (rules.primary_is_billing and raw.get("primaryContact") is True),
        is_active=raw.get("isActive") in (1, True),
        updated_at=optional_time(raw.get("lastModifiedDate")),
        raw=raw,
    )


def invoice_from_api(
    raw: Mapping[str, Any],
    items: list[Mapping[str, Any]],
    *,
    currency: str | None,
    contracts: Mapping[str, str | None] | None = None,
    rules: AutotaskRules = AutotaskRules(),
) -> RemoteInvoice:
    """One Invoices record and its BillingItems. `currency` is the company's (None: unknown code).

    Raises RecordError naming every problem: missing id/invoiceNumber/companyID/invoiceTotal, an
    unknown currency, unparseable dates, bad billing items, items not summing to the subtotal.
    Line amounts and taxes are rounded half-even to the currency's minor unit (Autotask keeps four
    decimals on items); a rounding remainder of at most a minor unit per line becomes a
    "Rounding" line, anything larger rejects the invoice.
    """
    problems: list[str] = []
    remote_id = record_id(raw)
    number = text_or_none(raw.get("invoiceNumber"))
    if not number:
        problems.append("missing invoiceNumber")
    company = _ref(raw.get("companyID"))
    if company is None:
        problems.append("missing companyID")
    code = currency if currency is not None else rules.currency
    try:
        code = check_currency(code)
    except MoneyError:
        problems.append(f"unknown currency {code!r}")
        code = ""
    issued_on = required_date(raw, "invoiceDateTime", problems)
    due_on = required_date(raw, "dueDate", problems)
    total = tax = 0
    lines: tuple[RemoteLine, ...] = ()
    if code:
        total = field_minor(raw, "invoiceTotal", code, problems)
        tax = field_minor(raw, "totalTaxValue", code, problems)
        if raw.get("invoiceTotal") is None:
            problems.append("missing invoiceTotal")
        elif not problems:
            lines = _lines(items, code, total - tax, contracts or {}, problems)
    if problems:
        raise RecordError("; ".join(problems))
    assert number and company and issued_on and due_on
    refs = _invoice_refs(items, contracts or {})
    return RemoteInvoice(
        remote_id=remote_id,
        number=number,
        company_remote_id=company,
        kind=invoice_kind(total, items),
        currency=code,
        issued_on=issued_on,
        due_on=due_on,
        subtotal_minor=total - tax,
        tax_minor=tax,
        total_minor=total,
        # Autotask only knows "paid" (a date), not how much: a paid invoice is paid in full.
        paid_minor=total if raw.get("paidDate") and total > 0 else 0,
        lines=lines,
        is_void=raw.get("isVoided") is True,
        agreement=refs["agreement"],
        project=refs["project"],
        ticket=refs["ticket"],
        description=text_or_none(raw.get("comments")),
        updated_at=max((t for t in (optional_time(raw.get(f)) for f in _INVOICE_CHANGES) if t), default=None),
        raw={"invoice": dict(raw), "billingItems": [dict(i) for i in items]},
    )


def invoice_kind(total_minor: int, items: list[Mapping[str, Any]]) -> InvoiceKind:
    """Negative is a credit; then the work the items bill: project, recurring contract services,
    tickets, other contract work, and items that name none of these (products sold)."""
    if total_minor < 0:
        return "credit_memo"
    has = {key: any(i.get(key) for i in items) for key in ("projectID", "ticketID", "contractID")}
    recurring = any(i.get("contractID") and (i.get("serviceID") or i.get("serviceBundleID")) for i in items)
    if has["projectID"]:
        return "project"
    if recurring and not has["ticketID"]:
        return "agreement"
    if has["ticketID"]:
        return "time_and_materials"
    if has["contractID"]:
        return "agreement"
    return "product" if items else "other"


def _invoice_refs(
    items: list[Mapping[str, Any]], contracts: Mapping[str, str | None]
) -> dict[str, str | None]:
    def first(key: str) -> str | None:
        return next((_ref(i.get(key)) for i in items if i.get(key)), None)

    contract, project, ticket = first("contractID"), first("projectID"), first("ticketID")
    return {
        "agreement": (contracts.get(contract) or f"Contract {contract}") if contract else None,
        "project": f"Project {project}" if project else None,
        "ticket": f"#{ticket}" if ticket else None,
    }


def _lines(
    items: list[Mapping[str, Any]],
    currency: str,
    subtotal: int,
    contracts: Mapping[str, str | None],
    problems: list[str],
) -> tuple[RemoteLine, ...]:
    lines: list[RemoteLine] = []
    rounded = 0  # line amounts with more decimals than the currency
    before = len(problems)
    for n, item in enumerate(
        sorted(items, key=lambda i: (i.get("itemDate") or "", i.get("id") or 0)), start=1
    ):
        where = f"billing item {item.get('id', n)}"
        desc = text_or_none(item.get("itemName")) or text_or_none(item.get("description"))
        if not desc:
            problems.append(f"{where}: missing itemName")
            continue
        try:
            qty = parse_quantity(item.get("quantity"), where)
            amount = rounded_minor(item.get("extendedPrice"), currency, f"{where}: extendedPrice")
            rounded += was_rounded(item.get("extendedPrice"), currency)
            unit = rounded_minor(item.get("rate"), currency, f"{where}: rate", default=amount)
            item_tax = rounded_minor(item.get("taxDollars"), currency, f"{where}: taxDollars", default=0)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        contract = _ref(item.get("contractID"))
        lines.append(
            RemoteLine(
                description=desc,
                quantity=format(qty, "f"),
                unit_price_minor=unit,
                amount_minor=amount,
                tax_minor=item_tax,
                agreement=(contracts.get(contract) or f"Contract {contract}") if contract else None,
                project=f"Project {item['projectID']}" if item.get("projectID") else None,
                ticket=f"#{item['ticketID']}" if item.get("ticketID") else None,
                service=text_or_none(item.get("description")) if text_or_none(item.get("itemName")) else None,
            )
        )
    if len(problems) > before:
        return ()
    settled, reason = settle(lines, subtotal, currency, rounded=rounded)
    if reason:
        problems.append(reason)
    return settled



def _numeric(text: str) -> bool:
    """An id Autotask can be asked for: ASCII digits ("²" is a digit to str.isdigit, not to int)."""
    return text.isascii() and text.isdigit()


def _ref(value: Any) -> str | None:
    if isinstance(value, bool) or value in (None, "", 0):
        return None
    return str(value)


# ---- transport ---------------------------------------------------------------------------------


class Autotask:
    """PsaSource over Autotask REST. Errors leave as ConnectorError (from HttpClient or here)."""

    kind = "autotask"
    supports_payment_writeback = False  # the REST API has no invoice-payment entity
    supports_deletion_check = True
    refreshes_open_invoices = True

    def __init__(self, settings: AutotaskSettings, http: HttpClient, clock: Clock) -> None:
        self._settings = settings
        self._headers = {
            "ApiIntegrationCode": settings.integration_code,
            "UserName": settings.username,
            "Secret": str(settings.secret),
            "Accept": "application/json",
        }
        self._zone = settings.zone_url.rstrip("/") or None
        self._page_size = max(1, min(settings.page_size, MAX_PAGE))
        self._rules = AutotaskRules.from_settings(settings)
        self._http = http
        self._clock = clock
        self._currencies: dict[str, str] | None = None  # currency id -> ISO code
        self._internal_currency: str | None = None
        self._company_currency: dict[str, str | None] = {}  # company id -> currency id
        self._contracts: dict[str, str | None] = {}  # contract id -> name

    # -- PsaSource ---------------------------------------------------------------------------------

    def companies(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteCompany | Rejected changed (lastTrackedModifiedDateTime) after `cursor`."""
        return self._sweep("Companies", cursor, ("lastTrackedModifiedDateTime",), self._map_companies)

    def contacts(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteContact | Rejected changed (lastModifiedDate) after `cursor`."""
        return self._sweep("Contacts", cursor, ("lastModifiedDate",), self._map_contacts)

    def invoices(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteInvoice | Rejected created, voided or marked paid after `cursor`."""
        self._forget_lookups()
        return self._sweep("Invoices", cursor, _INVOICE_CHANGES, self._map_invoices)

    def refresh(self, remote_ids: Iterable[str]) -> Iterator[Page]:
        """The invoices `remote_ids` as they are now (ids that no longer exist are left out)."""
        self._forget_lookups()
        ids = sorted({int(i) for i in remote_ids if _numeric(str(i))})
        for start in range(0, len(ids), MAX_PAGE):
            chunk = ids[start : start + MAX_PAGE]
            for records in self._query("Invoices", [{"op": "in", "field": "id", "value": chunk}]):
                yield Page(self._map_invoices(records), None)

    def invoice_ids(self) -> Iterator[str]:
        """Every invoice id, 500 a page (IncludeFields id)."""
        for records in self._query("Invoices", [{"op": "gt", "field": "id", "value": 0}], include=["id"]):
            yield from (str(r["id"]) for r in records if isinstance(r, dict) and r.get("id") is not None)

    def estimate(self, obj: str, cursor: str | None) -> int | None:
        """How many records a sweep from `cursor` reads (query/count), for the progress bar."""
        entity, fields = {
            "companies": ("Companies", ("lastTrackedModifiedDateTime",)),
            "contacts": ("Contacts", ("lastModifiedDate",)),
            "invoices": ("Invoices", _INVOICE_CHANGES),
        }[obj]
        state = sweep.begin(cursor)
        body = {"filter": self._filter(state.after, sweep.parse_time(state.since), fields)}
        data = _json(self._post(f"{self.zone()}/{API}/{entity}/query/count", body))
        count = data.get("queryCount") if isinstance(data, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def record_payment(self, payment: PaymentWriteBack, *, key: str) -> str:
        """Not possible: Autotask's REST API has no invoice payment (see API_NOTES section 3)."""
        raise ConnectorError(
            "Autotask cannot record invoice payments through its API; they belong in the accounting system",
            retryable=False,
        )

    # -- zone, queries -----------------------------------------------------------------------------

    def zone(self) -> str:
        """The API base of the user's zone, asked once per process (ZoneInformation is not throttled)."""
        if self._zone is None:
            url = self._settings.discovery_url.rstrip("/") + f"/{API}/ZoneInformation"
            resp = self._http.request(
                "GET", url, headers=self._headers, params={"user": self._settings.username}
            )
            data = _json(resp)
            found = data.get("url") if isinstance(data, dict) else None
            parsed = urlsplit(found) if isinstance(found, str) else None
            if not parsed or parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConnectorError(
                    f"Autotask zone discovery for {self._settings.username} returned no zone URL",
                    retryable=False,
                )
            self._zone = found.rstrip("/")
        return self._zone

    def _sweep(
        self, entity: str, cursor: str | None, changed: tuple[str, ...], mapper: Any
    ) -> Iterator[Page]:
        state = sweep.begin(cursor)
        since = sweep.parse_time(state.since)
        if state.since and since is None:
            raise ConnectorError(f"unreadable Autotask cursor {state.since!r}", retryable=False)
        newest = sweep.parse_time(state.newest)
        now = self._clock.utc_now()
        for records, is_last in self._pages(entity, self._filter(state.after, since, changed)):
            for raw in records:
                if isinstance(raw, dict):
                    for name in changed:
                        newest = sweep.newer(newest, optional_time(raw.get(name)), now)
            items = mapper(records)
            if is_last:
                yield Page(items, state.final_cursor(newest))
                return
            last = max((r["id"] for r in records if isinstance(r, dict) and _is_int(r.get("id"))), default=0)
            state = state.advance(after=max(state.after, last), newest=newest)
            yield Page(items, state.encode())

    @staticmethod
    def _filter(after: int, since: datetime | None, changed: tuple[str, ...]) -> list[dict[str, Any]]:
        # Results come in id order, so `id > after` resumes a sweep; the change fields select what
        # changed after the cursor (any of them for invoices).
        items: list[dict[str, Any]] = [{"op": "gt", "field": "id", "value": after}]
        if since is not None:
            when = sweep.format_time(since)
            alternatives = [{"op": "gt", "field": name, "value": when} for name in changed]
            items.append(alternatives[0] if len(alternatives) == 1 else {"op": "or", "items": alternatives})
        return items if len(items) == 1 else [{"op": "and", "items": items}]

    def _query(
        self, entity: str, filters: list[dict[str, Any]], *, include: list[str] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of raw records (see `_pages`)."""
        for records, _ in self._pages(entity, filters, include=include):
            yield records

    def _pages(
        self, entity: str, filters: list[dict[str, Any]], *, include: list[str] | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """(records, is_last) per page; follows pageDetails.nextPageUrl verbatim, re-POSTing the same body."""
        body: dict[str, Any] = {"MaxRecords": self._page_size, "filter": filters}
        if include:
            body["IncludeFields"] = include
        url: str | None = f"{self.zone()}/{API}/{entity}/query"
        seen: set[str] = set()
        top: int | None = None  # the highest id read so far: results come in id order
        while url:
            data = _json(self._post(url, body))
            items = data.get("items") if isinstance(data, dict) else None
            details = data.get("pageDetails") if isinstance(data, dict) else None
            if not isinstance(items, list) or not isinstance(details, dict):
                raise ConnectorError(f"POST {entity}/query: expected items and pageDetails", retryable=False)
            url = details.get("nextPageUrl") or None
            if url is not None and not items:
                # Autotask gives a next page only while records remain: an empty page that names
                # another could be followed forever (a fresh URL every time).
                raise ConnectorError(f"POST {entity}/query: an empty page names a next page", retryable=False)
            if url is not None and url in seen:
                raise ConnectorError(f"POST {entity}/query: nextPageUrl repeats itself", retryable=False)
            ids = [r["id"] for r in items if isinstance(r, dict) and _is_int(r.get("id"))]
            if ids and top is not None and max(ids) <= top:
                # A fresh nextPageUrl that answers a page already read would page forever.
                raise ConnectorError(
                    f"POST {entity}/query: a next page brought no id after {top} (the same page again)",
                    retryable=False,
                )
            top = max([*ids, top]) if top is not None else (max(ids) if ids else None)
            seen.add(url or "")
            yield items, url is None

    def _post(self, url: str, body: Mapping[str, Any]) -> requests.Response:
        # A query is a read: repeating it after a timeout is safe.
        return self._http.request(
            "POST",
            url,
            json=body,
            headers={**self._headers, "Content-Type": "application/json"},
            idempotent=True,
        )

    # -- mapping pages -----------------------------------------------------------------------------

    def _map_companies(self, records: list[Any]) -> list[Any]:
        return [map_or_reject("company", company_from_api, r, self._rules) for r in records]

    def _map_contacts(self, records: list[Any]) -> list[Any]:
        return [map_or_reject("contact", contact_from_api, r, self._rules) for r in records]

    def _map_invoices(self, records: list[Any]) -> list[Any]:
        good = [r for r in records if isinstance(r, dict) and _is_int(r.get("id"))]
        items = self._billing_items([r["id"] for r in good])
        self._learn_contracts({_ref(i.get("contractID")) for lst in items.values() for i in lst} - {None})
        self._learn_companies({_ref(r.get("companyID")) for r in good} - {None})
        out = []
        for raw in records:
            if not (isinstance(raw, dict) and _is_int(raw.get("id"))):
                out.append(
                    map_or_reject(
                        "invoice", lambda r, _rules: invoice_from_api(r, [], currency=None), raw, self._rules
                    )
                )
                continue
            its = items.get(raw["id"], [])
            currency = self._currency_of(_ref(raw.get("companyID")))
            out.append(
                map_or_reject(
                    "invoice",
                    lambda r, rules, its=its, cur=currency: invoice_from_api(
                        r, its, currency=cur, contracts=self._contracts, rules=rules
                    ),
                    raw,
                    self._rules,
                )
            )
        return out

    def _forget_lookups(self) -> None:
        # Currencies, company currencies and contract names are read once a sweep, not once a
        # process: the MSP adds a currency or moves a client to another one while Cashloop runs.
        self._currencies = None
        self._internal_currency = None
        self._company_currency.clear()
        self._contracts.clear()

    def _billing_items(self, invoice_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, dict[Any, dict[str, Any]]] = {}
        for start in range(0, len(invoice_ids), MAX_PAGE):
            chunk = invoice_ids[start : start + MAX_PAGE]
            for records in self._query("BillingItems", [{"op": "in", "field": "invoiceID", "value": chunk}]):
                for item in records:
                    if isinstance(item, dict) and _is_int(item.get("invoiceID")):
                        # An item listed again (on the next page as well) is one line: keyed by id.
                        key = item["id"] if _is_int(item.get("id")) else ("no id", id(item))
                        found.setdefault(item["invoiceID"], {})[key] = item
        return {invoice: list(items.values()) for invoice, items in found.items()}

    def _learn_contracts(self, ids: set[str | None]) -> None:
        wanted = sorted(int(i) for i in ids if i not in self._contracts and _numeric(i))
        for start in range(0, len(wanted), MAX_PAGE):
            chunk = wanted[start : start + MAX_PAGE]
            for records in self._query(
                "Contracts", [{"op": "in", "field": "id", "value": chunk}], include=["id", "contractName"]
            ):
                for r in _objects(records):
                    self._contracts[str(r.get("id"))] = text_or_none(r.get("contractName"))
            self._contracts.update({str(i): self._contracts.get(str(i)) for i in chunk})

    def _learn_companies(self, ids: set[str | None]) -> None:
        wanted = sorted(int(i) for i in ids if i not in self._company_currency and _numeric(i))
        for start in range(0, len(wanted), MAX_PAGE):
            chunk = wanted[start : start + MAX_PAGE]
            for records in self._query(
                "Companies", [{"op": "in", "field": "id", "value": chunk}], include=["id", "currencyID"]
            ):
                for r in _objects(records):
                    self._company_currency[str(r.get("id"))] = _ref(r.get("currencyID"))

    def _currency_of(self, company: str | None) -> str | None:
        """The ISO code of the company's currency; the internal currency when it names none."""
        if self._currencies is None:
            self._currencies = {}
            for records in self._query("Currencies", [{"op": "gt", "field": "id", "value": 0}]):
                for r in _objects(records):
                    self._currencies[str(r.get("id"))] = str(r.get("name") or "").strip()
                    if r.get("isInternalCurrency") is True:
                        self._internal_currency = str(r.get("name") or "").strip()
        if company not in self._company_currency:
            return self._rules.currency  # unknown company: the core quarantines it for that
        currency_id = self._company_currency[company]
        if currency_id is None:
            return self._internal_currency or self._rules.currency
        return self._currencies.get(currency_id, f"currency #{currency_id}")


def _objects(records: list[Any]) -> list[dict[str, Any]]:
    """The records of a lookup that are objects (a null among them names nothing)."""
    return [r for r in records if isinstance(r, dict)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json(resp: requests.Response) -> Any:
    try:
        return jsonio.loads_body(resp.content, resp.encoding)
    except ValueError as exc:
        path = urlsplit(resp.url).path if resp.url else "?"
        why = "empty body" if not resp.content.strip() else str(exc)[:120]
        raise ConnectorError(
            f"{path}: response is not JSON ({why})", retryable=True, status=resp.status_code
        ) from None
