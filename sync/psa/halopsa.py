"""HaloPSA: clients, users and invoices (with their lines) in; invoice payments out.

OAuth2 client credentials against the authorisation server; the token is kept in memory, renewed
a minute before it expires and once more if the API refuses it (a revoked token). Lists are pages
of `pageinate=true&page_size&page_no` in `{page_no, page_size, record_count, <plural>}` envelopes.
See ../shared/API_NOTES.md section 4.

`/Invoice` has no modified-since filter in the spec version we build against, so an incremental
sweep reads invoices newest-modified first (`order=last_modified&orderdesc=true`) and stops at the
cursor; a full sweep reads them in id order and resumes by page. The spec types `/Client`'s
`lastupdatefromdate` as a boolean, so clients and users are re-read every poll; a re-read that
matches the store writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from app.core.clock import Clock
from app.core.money import Money, MoneyError, check_currency
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
from sync.psa import refetch
from sync.psa.amounts import field_minor, rounded_minor, settle, was_rounded
from sync.psa.connectwise import json_bytes, map_or_reject, parse_quantity
from sync.psa.fields import optional_time, record_id, required_date, text_or_none

if TYPE_CHECKING:
    from app.config import HaloPsaSettings

KEY_PREFIX = "cashloop:"  # thirdpartyid of the InvoicePayment rows Cashloop writes
TOKEN_MARGIN = timedelta(seconds=60)
MAX_REPEATED_PAGES = 3  # full pages in a row with no new record before a listing is given up
MAX_STEP_BACKS = 20  # pages read again, for deletions made while paging, before a listing is given up


@dataclass(frozen=True)
class HaloRules:
    currency: str = "USD"
    require_posted: bool = True
    hide_awaiting_approval: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> HaloRules:
        return cls(
            currency=check_currency(settings.currency),
            require_posted=settings.require_posted,
            hide_awaiting_approval=settings.hide_awaiting_approval,
        )


# ---- pure mapping ------------------------------------------------------------------------------


def client_from_api(raw: Mapping[str, Any], rules: HaloRules = HaloRules()) -> RemoteCompany:
    """One /Client record (Halo calls a client an Area); raises RecordError (missing id or name)."""
    name = text_or_none(raw.get("name"))
    if not name:
        raise RecordError("missing name")
    return RemoteCompany(
        remote_id=record_id(raw),
        name=name,
        identifier=text_or_none(raw.get("accountsid")),
        parent_remote_id=_invoiced_to(raw),
        raw=raw,
    )


def _invoiced_to(raw: Mapping[str, Any]) -> str | None:
    """Halo's "client to invoice": the client billed for this one's work, which is its parent.

    A Halo top level (`toplevel_id`) groups clients but is not a client itself (it has no
    invoices or users), so it is never a parent here. 0 or the client's own id means none.
    """
    ref = raw.get("client_to_invoice")
    if isinstance(ref, bool) or not isinstance(ref, int | str) or str(ref).strip() in ("", "0", "-1"):
        return None
    return None if str(ref).strip() == str(raw.get("id")) else str(ref).strip()


def user_from_api(
    raw: Mapping[str, Any], client: Mapping[str, Any], rules: HaloRules = HaloRules()
) -> RemoteContact:
    """One /Users record of `client`: billing when it is the client's accounts address."""
    email = _email(raw.get("emailaddress"))
    accounts = _email(client.get("accountsemailaddress"))
    first = text_or_none(raw.get("firstname"))
    last = text_or_none(raw.get("surname"))
    if first is None and last is None:
        first, _, last = (text_or_none(raw.get("name")) or "").partition(" ")
    return RemoteContact(
        remote_id=record_id(raw),
        company_remote_id=record_id(client),
        email=email,
        first_name=first or "",
        last_name=last or "",
        is_billing=bool(email and accounts and email.lower() == accounts.lower()),
        is_active=raw.get("inactive") is not True,
        raw=raw,
    )


def accounts_contact(client: Mapping[str, Any]) -> RemoteContact | None:
    """The client's accounts address as a billing contact, when no user carries it (Halo keeps it on
    the client: accountsemailaddress / accountsfirstname / accountslastname)."""
    email = _email(client.get("accountsemailaddress"))
    if not email:
        return None
    return RemoteContact(
        remote_id=f"client-{record_id(client)}-accounts",
        company_remote_id=record_id(client),
        email=email,
        first_name=text_or_none(client.get("accountsfirstname")) or "",
        last_name=text_or_none(client.get("accountslastname")) or "",
        is_billing=True,
        raw={
            "client_id": client.get("id"),
            "accountsemailaddress": email,
            "accountsfirstname": client.get("accountsfirstname"),
            "accountslastname": client.get("accountslastname"),
        },
    )


def invoice_from_api(raw: Mapping[str, Any], rules: HaloRules = HaloRules()) -> RemoteInvoice:
    """One /Invoice record with `includelines=true`.

    Raises RecordError naming every problem: missing id/invoicenumber/client_id/total, an unknown
    currency, unparseable dates, bad lines, lines not summing to the subtotal (total - tax_total).
    """
    problems: list[str] = []
    remote_id = record_id(raw)
    number = text_or_none(raw.get("invoicenumber")) or text_or_none(raw.get("thirdpartyinvoicenumber"))
    if not number:
        problems.append("missing invoicenumber")
    client = _ref(raw.get("client_id"))
    if client is None:
        problems.append("missing client_id")
    code = text_or_none(raw.get("currency")) or rules.currency
    try:
        code = check_currency(code)
    except MoneyError:
        problems.append(f"unknown currency {code!r}")
        code = ""
    issued_on = required_date(raw, "invoice_date", problems)
    due_on = required_date(raw, "duedate", problems)
    total = tax = paid = 0
    lines: tuple[RemoteLine, ...] = ()
    if code:
        total = field_minor(raw, "total", code, problems)
        tax = field_minor(raw, "tax_total", code, problems)
        due = raw.get("amountdue")
        paid = (
            total - field_minor(raw, "amountdue", code, problems)
            if due is not None
            else field_minor(raw, "amountpaid", code, problems)
        )
        if raw.get("total") is None:
            problems.append("missing total")
        elif not problems:
            lines = _lines(raw.get("lines"), code, total - tax, problems)
    if problems:
        raise RecordError("; ".join(problems))
    assert number and client and issued_on and due_on
    awaiting = raw.get("requires_approval") is True and not raw.get("approvaldatetime")
    contract = _ref(raw.get("contract_id"))
    ticket = _ref(raw.get("ticket_id"))
    return RemoteInvoice(
        remote_id=remote_id,
        number=number,
        company_remote_id=client,
        kind=invoice_kind(raw, total),
        currency=code,
        issued_on=issued_on,
        due_on=due_on,
        subtotal_minor=total - tax,
        tax_minor=tax,
        total_minor=total,
        paid_minor=max(0, paid) if total > 0 else 0,
        lines=lines,
        is_void=raw.get("voided") is True,
        is_approved=(raw.get("posted") is True or not rules.require_posted)
        and not (awaiting and rules.hide_awaiting_approval),
        agreement=(text_or_none(raw.get("contract_ref")) or f"Contract {contract}") if contract else None,
        ticket=" ".join(p for p in (f"#{ticket}", text_or_none(raw.get("ticket_summary"))) if p)
        if ticket
        else None,
        description=text_or_none(raw.get("reference")) or text_or_none(raw.get("notes_1")),
        updated_at=optional_time(raw.get("last_modified")),
        raw=raw,
    )


def invoice_kind(raw: Mapping[str, Any], total_minor: int) -> InvoiceKind:
    """Credit notes first (negative, or linked to the invoice they credit), then contract, ticket and
    sales-order invoices; invoices of item lines alone are products."""
    lines = [ln for ln in raw.get("lines") or [] if isinstance(ln, Mapping)]
    if total_minor < 0 or raw.get("creditlinkedtoinvoiceid"):
        return "credit_memo"
    tickets = raw.get("ticket_id") or any(ln.get("ticket_id") for ln in lines)
    contracts = (
        raw.get("contract_id")
        or raw.get("is_recurring_invoice")
        or any(ln.get("contract_id") or ln.get("recurring_invoice_id") for ln in lines)
    )
    if contracts and not tickets:
        return "agreement"
    if tickets:
        return "time_and_materials"
    if raw.get("salesorder_id") or (lines and all(ln.get("item_code") or ln.get("_itemid") for ln in lines)):
        return "product"
    return "other"


def _lines(given: Any, currency: str, subtotal: int, problems: list[str]) -> tuple[RemoteLine, ...]:
    if given is None:
        given = []
    if not isinstance(given, list):
        problems.append("lines is not a list")
        return ()
    lines: list[RemoteLine] = []
    rounded = 0  # line amounts with more decimals than the currency
    before = len(problems)
    for n, item in enumerate(given, start=1):
        where = f"line {n}"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: not an object")
            continue
        if item.get("isgroupdesc") is True:
            continue  # a heading row of a line group: no quantity, no amount
        desc = text_or_none(item.get("item_shortdescription")) or text_or_none(
            item.get("item_longdescription")
        )
        if not desc:
            problems.append(f"{where}: missing item_shortdescription")
            continue
        try:
            qty = parse_quantity(item.get("qty_order"), where)
            amount = rounded_minor(item.get("net_amount"), currency, f"{where}: net_amount")
            rounded += was_rounded(item.get("net_amount"), currency)
            unit = rounded_minor(item.get("unit_price"), currency, f"{where}: unit_price", default=amount)
            line_tax = rounded_minor(item.get("tax_amount"), currency, f"{where}: tax_amount", default=0)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        ticket, contract = _ref(item.get("ticket_id")), _ref(item.get("contract_id"))
        lines.append(
            RemoteLine(
                description=desc,
                quantity=format(qty, "f"),
                unit_price_minor=unit,
                amount_minor=amount,
                tax_minor=line_tax,
                agreement=f"Contract {contract}" if contract else None,
                ticket=f"#{ticket}" if ticket else None,
                service=text_or_none(item.get("item_code")),
            )
        )
    if len(problems) > before:
        return ()
    settled, reason = settle(lines, subtotal, currency, rounded=rounded)
    if reason:
        problems.append(reason)
    return settled



def _ref(value: Any) -> str | None:
    if isinstance(value, bool) or value in (None, "", 0, -1):
        return None
    return str(value)


def _email(value: Any) -> str | None:
    text = text_or_none(value)
    return text if text and "@" in text and " " not in text and "," not in text and ";" not in text else None


# ---- transport ---------------------------------------------------------------------------------


class HaloPsa:
    """PsaSource over the Halo API. Errors leave as ConnectorError (from HttpClient or here)."""

    kind = "halopsa"
    supports_payment_writeback = True
    supports_deletion_check = True

    def __init__(self, settings: HaloPsaSettings, http: HttpClient, clock: Clock) -> None:
        self._base = settings.base_url.rstrip("/")
        default_auth = (
            self._base[: -len("/api")] + "/auth" if self._base.endswith("/api") else self._base + "/auth"
        )
        self._auth_url = (settings.auth_url.rstrip("/") or default_auth) + "/token"
        self._settings = settings
        self._page_size = max(1, settings.page_size)
        self._rules = HaloRules.from_settings(settings)
        self._http = http
        self._clock = clock
        self._token: str | None = None
        self._token_renew_at: datetime | None = None

    # -- PsaSource ---------------------------------------------------------------------------------

    def companies(self, cursor: str | None) -> Iterator[Page]:
        """Every client, in pages; a killed sweep resumes at its page (re-reading one for safety)."""
        yield from self._by_page(
            "/Client",
            "clients",
            cursor,
            {"includeinactive": "true"},
            lambda raw: map_or_reject("company", client_from_api, raw, self._rules),
        )

    def contacts(self, cursor: str | None) -> Iterator[Page]:
        """The users of every client (and each client's accounts address), one page per client page."""
        for clients, _, _ in self._list("/Client", "clients", {"order": "id", "includeinactive": "true"}):
            items: list[Any] = []
            for client in clients:
                client_id = _askable_id(client)
                if client_id is None:
                    continue  # the client itself is quarantined by companies(); its users cannot be asked for
                users = [
                    u
                    for page, _, _ in self._list("/Users", "users", {"client_id": client_id, "order": "id"})
                    for u in page
                ]
                items.extend(
                    map_or_reject(
                        "contact", lambda raw, rules, c=client: user_from_api(raw, c, rules), u, self._rules
                    )
                    for u in users
                )
                emails = {(_email(u.get("emailaddress")) or "").lower() for u in users if isinstance(u, dict)}
                extra = accounts_contact(client)
                if extra and extra.email and extra.email.lower() not in emails:
                    items.append(extra)
            yield Page(items, None)

    def invoices(self, cursor: str | None) -> Iterator[Page]:
        """A full sweep (cursor None or a full sweep's position) in id order; otherwise the invoices
        modified after the cursor, newest first, until the first one at or before it."""
        state = sweep.begin(cursor)
        if state.is_full:
            yield from self._by_page(
                "/Invoice",
                "invoices",
                cursor,
                {"includelines": "true"},
                lambda raw: map_or_reject("invoice", invoice_from_api, raw, self._rules),
                changed="last_modified",
            )
            return
        since = sweep.parse_time(state.since)
        if since is None:
            raise ConnectorError(f"unreadable HaloPSA cursor {state.since!r}", retryable=False)
        newest: datetime | None = None
        now = self._clock.utc_now()
        params = {"includelines": "true", "order": "last_modified", "orderdesc": "true"}
        for records, _, is_last in self._list("/Invoice", "invoices", params):
            times = [optional_time(r.get("last_modified")) if isinstance(r, dict) else None for r in records]
            for when in times:
                newest = sweep.newer(newest, when, now)
            items = [map_or_reject("invoice", invoice_from_api, raw, self._rules) for raw in records]
            reached = any(when is not None and when <= since for when in times)
            if is_last or reached:
                yield Page(items, sweep.format_time(newest) if newest and newest > since else state.since)
                return
            yield Page(items, None)

    def refresh(self, remote_ids: Iterable[str]) -> Iterator[Page]:
        """The invoices `remote_ids` as they are now (`GET /Invoice/{id}` with its details, the
        lines); an id gone at Halo is left out."""
        return refetch.by_id(
            remote_ids,
            lambda rid: self._get_json(f"/Invoice/{rid}", {"includedetails": "true"}),
            lambda raw: map_or_reject("invoice", invoice_from_api, raw, self._rules),
        )

    def invoice_ids(self) -> Iterator[str]:
        """Every invoice id (`idonly=true`), in id order."""
        for records, _, _ in self._list("/Invoice", "invoices", {"idonly": "true", "order": "id"}):
            yield from (str(r["id"]) for r in records if isinstance(r, dict) and r.get("id") is not None)

    def estimate(self, obj: str, cursor: str | None) -> int | None:
        """record_count of the list (a full sweep only; an incremental one stops early)."""
        if obj != "invoices" and obj != "companies":
            return None
        if obj == "invoices" and not sweep.begin(cursor).is_full:
            return None
        path = "/Invoice" if obj == "invoices" else "/Client"
        data = self._get_json(path, {"pageinate": "true", "page_size": "1", "page_no": "1"})
        count = data.get("record_count") if isinstance(data, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def record_payment(self, payment: PaymentWriteBack, *, key: str) -> str:
        """POST one InvoicePayment (an array of one); returns its id. Idempotent by `key`, kept in
        `thirdpartyid`: the invoice's payments are listed first and one carrying the key is returned."""
        if not payment.invoice_remote_id.isdigit():
            raise ConnectorError(
                f"Halo invoice id must be a number, got {payment.invoice_remote_id!r}", retryable=False
            )
        marker = KEY_PREFIX + key
        for records, _, _ in self._list(
            "/InvoicePayment", "payments", {"invoice_id": payment.invoice_remote_id}
        ):
            for existing in records:
                if isinstance(existing, dict) and existing.get("thirdpartyid") == marker:
                    return str(existing["id"])
        body = [
            {
                "invoice_id": int(payment.invoice_remote_id),
                "amount": Money(payment.amount_minor, payment.currency).to_decimal(),
                "date": f"{payment.paid_on.isoformat()}T00:00:00",
                "thirdpartyid": marker,
            }
        ]
        resp = self._send(
            "POST", "/InvoicePayment", data=json_bytes(body), headers={"Content-Type": "application/json"}
        )
        created = _json(resp)
        if isinstance(created, list):
            created = created[0] if created else None
        if not isinstance(created, dict) or created.get("id") is None:
            raise ConnectorError("POST /InvoicePayment: response carries no payment id", retryable=False)
        return str(created["id"])

    # -- lists -------------------------------------------------------------------------------------

    def _by_page(
        self,
        path: str,
        key: str,
        cursor: str | None,
        params: dict[str, str],
        mapper: Any,
        *,
        changed: str | None = None,
    ) -> Iterator[Page]:
        # Page numbers shift when a record before them is deleted: a resumed sweep re-reads the last
        # committed page and drops what it already had (ids are ascending), so nothing is skipped.
        # `changed` names the field whose newest value becomes the change cursor at the end.
        state = sweep.begin(cursor)
        newest = sweep.parse_time(state.newest)
        now = self._clock.utc_now()
        first = max(1, state.page)
        for records, page_no, is_last in self._list(path, key, {"order": "id", **params}, first=first):
            fresh = [r for r in records if not _already_read(r, state.after)]
            if changed:
                for raw in fresh:
                    newest = sweep.newer(
                        newest, optional_time(raw.get(changed)) if isinstance(raw, dict) else None, now
                    )
            items = [mapper(raw) for raw in fresh]
            if is_last:
                yield Page(items, state.final_cursor(newest) if changed else None)
                return
            last = max([_int(r.get("id")) for r in records if isinstance(r, dict)] + [state.after])
            state = state.advance(after=last, newest=newest, page=page_no)
            yield Page(items, state.encode())

    def _list(
        self, path: str, key: str, params: dict[str, str], *, first: int = 1
    ) -> Iterator[tuple[list[Any], int, bool]]:
        page_no = first
        seen: set[Any] = set()
        repeats = 0  # full pages in a row that brought no record not read already
        count: int | None = None  # record_count as the last page gave it
        step_backs = 0
        while True:
            query = {
                **params,
                "pageinate": "true",
                "page_size": str(self._page_size),
                "page_no": str(page_no),
            }
            data = self._get_json(path, query)
            records = data.get(key) if isinstance(data, dict) else None
            if not isinstance(records, list):
                raise ConnectorError(f"GET {path}: expected {{{key}: [...]}}", retryable=False)
            now_counted = _count(data)
            if count is not None and now_counted is not None and now_counted < count and page_no > first:
                # Records of the pages read were deleted meanwhile: pages are numbered by position,
                # so the records that moved up onto the page before this one were never read. Read
                # that page again first (what was read already comes again, and is dropped or
                # stored unchanged); then this one.
                step_backs += 1
                if step_backs > MAX_STEP_BACKS:
                    raise ConnectorError(
                        f"GET {path}: records kept being deleted while the list was read; read again later",
                        retryable=True,
                    )
                count = now_counted
                page_no -= 1
                continue
            count = now_counted if now_counted is not None else count
            ids = {str(r["id"]) for r in records if isinstance(r, dict) and _is_id(r.get("id"))}
            # A full page means there may be more, whatever record_count says (a count can be
            # stale); past the end Halo answers an empty page. A short page ends the list, unless
            # record_count says more remain (a server with pages smaller than the size asked).
            is_last = not records or (
                len(records) < self._page_size and (count is None or len(seen | ids) >= count)
            )
            # A page of records read already happens once when records edited while paging
            # newest first push the rest down a page; page after page of them is a server
            # answering the same page for every number, which would be paged forever.
            repeats = repeats + 1 if ids and ids <= seen and not is_last else 0
            if repeats >= MAX_REPEATED_PAGES:
                raise ConnectorError(
                    f"GET {path}: pages {page_no - repeats + 1}-{page_no} hold only records of the pages "
                    "before them",
                    retryable=True,
                )
            seen |= ids
            yield records, page_no, is_last
            if is_last:
                return
            page_no += 1

    # -- auth and requests -------------------------------------------------------------------------

    def _get_json(self, path: str, params: Mapping[str, str]) -> Any:
        return _json(self._send("GET", path, params=params))

    def _send(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        for attempt in (1, 2):
            auth = {"Authorization": f"Bearer {self._access_token()}", "Accept": "application/json"}
            try:
                return self._http.request(method, self._base + path, headers={**headers, **auth}, **kw)
            except ConnectorError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
                self._token = None  # revoked or expired early: one new token, then give up
        raise AssertionError("unreachable")

    def _access_token(self) -> str:
        now = self._clock.utc_now()
        if self._token and self._token_renew_at and now < self._token_renew_at:
            return self._token
        s = self._settings
        params = {"tenant": s.tenant} if s.tenant else None
        form = {
            "grant_type": "client_credentials",
            "client_id": s.client_id,
            "client_secret": str(s.client_secret),
            "scope": s.scope,
        }
        # Asking for a token twice has no effect at Halo beyond a second token: safe to retry.
        resp = self._http.request(
            "POST",
            self._auth_url,
            params=params,
            data=form,
            headers={"Accept": "application/json"},
            idempotent=True,
        )
        data = _json(resp)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ConnectorError("HaloPSA token response carries no access_token", retryable=False)
        expires = data.get("expires_in")
        seconds = (
            expires if isinstance(expires, int) and not isinstance(expires, bool) and expires > 0 else 3600
        )
        # Renewed a minute before it expires, or half-way through a life shorter than two minutes.
        margin = min(TOKEN_MARGIN, timedelta(seconds=seconds / 2))
        self._token, self._token_renew_at = token, now + timedelta(seconds=seconds) - margin
        return token


def _askable_id(raw: Any) -> str | None:
    """The record's id when Halo can be asked about it (a positive whole number), else None."""
    try:
        rid = record_id(raw)
    except RecordError:
        return None
    return rid if rid.isascii() and rid.isdigit() and int(rid) > 0 else None


def _already_read(raw: Any, after: int) -> bool:
    # Only a well-formed id can be "already read"; any other record goes on to be quarantined.
    value = raw.get("id") if isinstance(raw, dict) else None
    return type(value) is int and 0 < value <= after


def _count(data: Any) -> int | None:
    """A list answer's record_count, when it is a whole number."""
    value = data.get("record_count") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _json(resp: requests.Response) -> Any:
    try:
        return jsonio.loads_body(resp.content, resp.encoding)
    except ValueError as exc:
        path = urlsplit(resp.url).path if resp.url else "?"
        why = "empty body" if not resp.content.strip() else str(exc)[:120]
        raise ConnectorError(
            f"{path}: response is not JSON ({why})", retryable=True, status=resp.status_code
        ) from None


def _is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)
