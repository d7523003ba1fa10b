"""A QuickBooks Online v3 fake on loopback: one company, its OAuth2 token endpoint, and the entities
the connector books (Invoice, Customer, Account, Payment, Deposit, JournalEntry, Preferences).

It behaves like QBO where the books depend on it: invoices carry a Balance that Payments reduce
(partial allowed; a Line above the open Balance is refused with a ValidationFault), Payments
list in the Invoice's LinkedTxn, a Deposit may link only a Payment held in Undeposited Funds and
only once, JournalEntries must balance and name a Customer on Accounts Receivable lines, updates
need the current SyncToken (Fault 5010 otherwise), deleted objects vanish from queries (a read
answers Fault 610), and a repeated `requestid` gets the first response back, even when that
object was deleted since.

Requests are checked: `minorversion=75`, a live Bearer token (401 otherwise), JSON bodies whose
every field the XSD defines for that entity (tests/fakes/qbo_xsd.py), and queries of exactly the
forms in `FILTERS` (anything else is answered with the QBO 4001 "Invalid query" shape). A problem
is appended to `violations`, so every test can assert `fake.violations == []`.

Injectable: `throttle_next` (429 with Fault 3001 and Retry-After), `drop_next_response` (the
change is committed, the response never comes: the client times out), `expire_access_tokens`
(401 until refreshed), `revoke_refresh_tokens` (invalid_grant), `conflict_next_update` (a
concurrent edit wins: Fault 5010).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sync.accounting.oauth import TokenSet
from tests.fakes._spec import LoopbackServer
from tests.fakes.qbo_xsd import load_xsd

REALM = "9341453050071234"
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qbo"
FILTERS: dict[str, dict[str, set[str]]] = {  # entity -> field -> operators the connector uses
    "Invoice": {"DocNumber": {"="}, "CustomerRef": {"="}, "Balance": {">"}},
    "Customer": {"DisplayName": {"="}},
    "Account": {"Name": {"="}, "AccountType": {"="}},
    "Payment": {"CustomerRef": {"="}, "TxnDate": {"=", ">=", "<="}},
    "Deposit": {"TxnDate": {"="}},
    "JournalEntry": {"TxnDate": {"="}},
}
_QUERY = re.compile(r"^select \* from (?P<entity>\w+)(?: where (?P<where>.+?))?"
                    r"(?: startposition (?P<start>\d+))?(?: maxresults (?P<max>\d+))?$", re.I | re.S)
_COND = re.compile(r"(?P<field>[A-Za-z.]+) (?P<op>>=|<=|=|>|<) '(?P<value>(?:[^'\\]|\\.)*)'")
_PLACES = {"JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3}
_POSTED = {"payment": "Payment", "deposit": "Deposit", "journalentry": "JournalEntry"}


class Fault(Exception):
    def __init__(self, status: int, code: str, message: str, detail: str = "", *,
                 kind: str = "ValidationFault", violation: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.kind, self.violation = kind, violation

    def body(self) -> dict[str, Any]:
        return {"Fault": {"Error": [{"Message": self.message, "Detail": self.detail or self.message,
                                     "code": self.code}], "type": self.kind}, "time": _now()}


@dataclass
class Seen:
    method: str
    path: str  # below /v3/company/{realm}, or the token path
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class _Injected:
    kind: str  # throttle | drop | conflict
    times: int
    path: str | None = None
    retry_after: float = 1.0
    hang: float = 0.0
    status: int = 429


@dataclass
class QboFake:
    client_id: str = "qbo-client-id"
    client_secret: str = "qbo-client-secret"
    home_currency: str = "USD"
    multicurrency: bool = True
    requests: list[Seen] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.xsd = load_xsd()
        self._lock = threading.RLock()
        self._ids = itertools.count(100)
        self.accounts: list[dict[str, Any]] = []
        self.customers: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.payments: list[dict[str, Any]] = []
        self.deposits: list[dict[str, Any]] = []
        self.journal_entries: list[dict[str, Any]] = []
        self._access: set[str] = set()
        self._refresh: set[str] = set()
        self._replay: dict[str, dict[str, Any]] = {}
        self._injected: list[_Injected] = []
        self.throttle_body = json.loads((FIXTURES / "too_many_requests_error.json").read_text())
        self.throttle_body.pop("_note", None)
        for name, kind, sub in (("Undeposited Funds", "Other Current Asset", "UndepositedFunds"),
                                ("Checking", "Bank", "Checking"),
                                ("Stripe clearing", "Bank", "Checking"),
                                ("Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable"),
                                ("Stripe fees", "Expense", "BankCharges"),
                                ("Card surcharge income", "Income", "ServiceFeeIncome")):
            self.add_account(name, kind, sub)
        self._server = LoopbackServer(self.handle)
        self.port = 0

    # ---- lifecycle and seeding ------------------------------------------------------------------

    def __enter__(self) -> QboFake:
        self.port = self._server.start()
        server = self._server._server
        assert server is not None
        original = server.handle_error

        def quiet_lost_client(request: Any, address: Any) -> None:
            # A dropped response is written after the client gave up: that broken pipe is the point.
            if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                original(request, address)

        server.handle_error = quiet_lost_client  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v3"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}{TOKEN_PATH}"

    def _next_id(self) -> str:
        return str(next(self._ids))

    def add_account(self, name: str, account_type: str, sub_type: str) -> dict[str, Any]:
        row = {"Id": self._next_id(), "SyncToken": "0", "Name": name, "AccountType": account_type,
               "AccountSubType": sub_type, "Active": True}
        self.accounts.append(row)
        return row

    def add_customer(self, name: str) -> str:
        row = {"Id": self._next_id(), "SyncToken": "0", "DisplayName": name, "Active": True}
        self.customers.append(row)
        return row["Id"]

    def add_invoice(self, number: str, customer_id: str, total: str, *, currency: str | None = None,
                    txn_date: str = "2026-11-01") -> dict[str, Any]:
        """An invoice shaped like fixtures/qbo/invoices.json, open for `total` (a decimal string)."""
        template = json.loads((FIXTURES / "invoices.json").read_text(), parse_float=Decimal)
        row = copy.deepcopy(template["QueryResponse"]["Invoice"][0])
        for drop in ("BillAddr", "ShipAddr", "CustomerMemo", "SalesTermRef", "MetaData"):
            row.pop(drop, None)
        amount = Decimal(total)
        customer = self._customer(customer_id)
        row.update({"Id": self._next_id(), "SyncToken": "0", "DocNumber": number, "TxnDate": txn_date,
                    "CustomerRef": {"value": customer_id, "name": customer["DisplayName"]},
                    "CurrencyRef": {"value": currency or self.home_currency},
                    "TotalAmt": amount, "Balance": amount, "LinkedTxn": []})
        row["Line"][0].update({"Amount": amount, "Description": f"Services {number}"})
        row["Line"][0]["SalesItemLineDetail"].update({"UnitPrice": amount, "Qty": 1})
        row["Line"][1]["Amount"] = amount
        self.invoices.append(row)
        return row

    def issue_tokens(self, expires_at: Any) -> TokenSet:
        """A connected company's first tokens (what the connect flow stores)."""
        access, refresh = self._new_access(), f"rt-{secrets.token_hex(8)}"
        self._refresh.add(refresh)
        return TokenSet(access_token=access, refresh_token=refresh, expires_at=expires_at,
                        tenant_id=REALM, tenant_name="Fake Company")

    # ---- test controls --------------------------------------------------------------------------

    def throttle_next(self, times: int = 1, *, retry_after: float = 1.0, path: str | None = None,
                      status: int = 429) -> None:
        """Fault 3001 ThrottleExceeded; `status=403` is how older QBO answered (no Retry-After)."""
        self._injected.append(_Injected("throttle", times, path, retry_after=retry_after, status=status))

    def drop_next_response(self, path: str, *, hang: float = 3.0) -> None:
        """Commit the next request to `path`, then answer only after `hang` seconds (a lost response)."""
        self._injected.append(_Injected("drop", 1, path, hang=hang))

    def conflict_next_update(self, path: str = "/payment") -> None:
        """The next update to `path` loses to a concurrent edit: its SyncToken moves on, 5010."""
        self._injected.append(_Injected("conflict", 1, path))

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access.clear()

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._refresh.clear()

    def delete_payment(self, payment_id: str) -> None:
        """A bookkeeper deletes the Payment in QBO: its invoices reopen, queries stop listing it."""
        with self._lock:
            payment = self._live(self.payments, payment_id, "Payment")
            if payment.get("_deposit"):
                raise ValueError("the fake keeps deposited payments")
            self._unapply(payment)
            payment["status"] = "Deleted"

    def live(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [_public(i) for i in items if i.get("status") != "Deleted"]

    def invoice(self, number: str) -> dict[str, Any]:
        return next(i for i in self.invoices if i["DocNumber"] == number)

    # ---- request handling -----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path == TOKEN_PATH:
            return self._token(method, headers, body)
        prefix = f"/v3/company/{REALM}"
        path = url.path[len(prefix):] if url.path.startswith(prefix) else url.path
        seen = Seen(method, path, query, headers)
        hang = 0.0
        with self._lock:
            self.requests.append(seen)
            try:
                if not url.path.startswith(prefix):
                    raise Fault(404, "610", "Object Not Found", f"no company at {url.path}", violation=True)
                self._check_request(method, path, query, headers)
                if headers.get("authorization", "").removeprefix("Bearer ") not in self._access:
                    return 401, {}, {"Fault": {"Error": [{
                        "Message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                        "Detail": "Token expired", "code": "3200"}], "type": "AUTHENTICATION"}}
                injected = self._take(method, path)
                if injected and injected.kind == "throttle" and injected.status == 403:
                    body = copy.deepcopy(self.throttle_body)
                    body["Fault"]["Error"][0]["Message"] = "message=ThrottleExceeded; errorCode=003001; " \
                                                           "statusCode=403"
                    return 403, {}, body
                if injected and injected.kind == "throttle":
                    return 429, {"Retry-After": f"{injected.retry_after:g}"}, self.throttle_body
                if method == "POST":
                    seen.body = self._parse(path, headers, body)
                    rid = query["requestid"]
                    if rid in self._replay:  # QBO answers a repeated requestid with its first response
                        return 200, {}, _dumps(self._replay[rid])
                    if injected and injected.kind == "conflict":
                        self._conflict(seen.body)
                    answer = self._post(path, seen.body)
                    self._replay[rid] = answer
                else:
                    answer = self._get(path, query)
                if injected and injected.kind == "drop":
                    hang = injected.hang
                else:
                    return 200, {}, _dumps(answer)
            except Fault as exc:
                if exc.violation:
                    self.violations.append(f"{method} {path}: {exc.message}: {exc.detail}")
                return exc.status, {}, _dumps(exc.body())
        time.sleep(hang)  # committed; the client gave up waiting before this
        return 200, {}, _dumps(answer)

    def _check_request(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> None:
        if query.get("minorversion") != "75":
            raise Fault(400, "4000", "minorversion", "send minorversion=75", violation=True)
        allowed = {"minorversion", "query"} if path == "/query" else {"minorversion", "requestid"}
        extra = set(query) - allowed
        if extra:
            raise Fault(400, "4000", "Unsupported parameter", f"{sorted(extra)}", violation=True)
        if "json" not in headers.get("accept", ""):
            raise Fault(400, "4000", "Accept", "Accept: application/json expected", violation=True)
        if method == "POST":
            rid = query.get("requestid", "")
            if not rid or len(rid) > 50:
                raise Fault(400, "4000", "requestid", f"requestid of 1..50 characters, got {rid!r}",
                            violation=True)
            if "application/json" not in headers.get("content-type", ""):
                raise Fault(400, "4000", "Content-Type", "application/json expected", violation=True)

    def _parse(self, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        entity = _POSTED.get(path.strip("/"))
        if entity is None:
            raise Fault(400, "4000", "Unsupported operation", f"POST {path}", violation=True)
        try:
            data = json.loads(body, parse_float=Decimal)
        except ValueError:
            raise Fault(400, "4000", "Request has invalid or unsupported property", "not JSON",
                        violation=True) from None
        problems = self.xsd.check(entity, data)
        if problems:
            raise Fault(400, "2010", "Request has invalid or unsupported property", "; ".join(problems),
                        violation=True)
        return data

    def _take(self, method: str, path: str) -> _Injected | None:
        found = next((i for i in self._injected if (i.path is None or path.startswith(i.path))
                      and (i.kind == "throttle" or method == "POST")), None)
        if found is not None:
            found.times -= 1
            if found.times <= 0:
                self._injected.remove(found)
        return found

    # ---- OAuth2 ---------------------------------------------------------------------------------

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        with self._lock:
            self.requests.append(Seen(method, TOKEN_PATH, {}, headers, form))
            if method != "POST" or headers.get("authorization") != f"Basic {expected}":
                return 401, {}, {"error": "invalid_client"}
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") not in self._refresh:
                return 400, {}, {"error": "invalid_grant"}
            self._refresh.discard(form["refresh_token"])  # rotated: the old one stops working
            refresh = f"rt-{secrets.token_hex(8)}"
            self._refresh.add(refresh)
            return 200, {}, {"token_type": "bearer", "access_token": self._new_access(), "expires_in": 3600,
                             "refresh_token": refresh, "x_refresh_token_expires_in": 8726400}

    def _new_access(self) -> str:
        token = f"at-{secrets.token_hex(12)}"
        self._access.add(token)
        return token

    # ---- reads ----------------------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/query":
            return self._query(query.get("query", ""))
        if path == "/preferences":
            return {"Preferences": {"Id": "1", "SyncToken": "0", "CurrencyPrefs": {
                "MultiCurrencyEnabled": self.multicurrency, "HomeCurrency": {"value": self.home_currency}}}}
        found = re.fullmatch(r"/(payment|invoice|deposit|journalentry)/(\d+)", path)
        if not found:
            raise Fault(400, "4000", "Unsupported operation", f"GET {path}", violation=True)
        entity = _POSTED.get(found.group(1), "Invoice")
        table = {"Payment": self.payments, "Invoice": self.invoices, "Deposit": self.deposits,
                 "JournalEntry": self.journal_entries}[entity]
        return {entity: _public(self._live(table, found.group(2), entity)), "time": _now()}

    def _query(self, text: str) -> dict[str, Any]:
        def invalid(detail: str) -> Fault:
            return Fault(400, "4001", "Invalid query", f"QueryValidationError: {detail}", violation=True)

        match = _QUERY.match(text.strip())
        if not match or match.group("entity") not in FILTERS:
            raise invalid(f"unsupported query {text!r}")
        entity = match.group("entity")
        start, size = int(match.group("start") or 1), int(match.group("max") or 100)
        if start < 1:
            raise invalid(f"value {start} is too small. Min allowed value is 1")
        if size > 1000:
            raise invalid(f"value {size} is too large. Max allowed value is 1000")
        conds, where, pos = [], match.group("where") or "", 0
        while where and pos < len(where):
            cond = _COND.match(where, pos)
            if not cond or FILTERS[entity].get(cond.group("field")) is None or \
                    cond.group("op") not in FILTERS[entity][cond.group("field")]:
                raise invalid(f"unsupported condition in {where!r}")
            value = re.sub(r"\\(.)", r"\1", cond.group("value"))
            conds.append((cond.group("field"), cond.group("op"), value))
            pos = cond.end()
            if pos < len(where):
                sep = re.compile(r" and ", re.I).match(where, pos)
                if not sep:
                    raise invalid(f"expected AND in {where!r}")
                pos = sep.end()
        table = {"Invoice": self.invoices, "Customer": self.customers, "Account": self.accounts,
                 "Payment": self.payments, "Deposit": self.deposits,
                 "JournalEntry": self.journal_entries}[entity]
        rows = [r for r in self.live(table) if all(_holds(r, f, op, v) for f, op, v in conds)]
        page = rows[start - 1:start - 1 + size]
        found: dict[str, Any] = {}
        if page:  # QBO leaves an empty QueryResponse when nothing matched
            found = {entity: page, "startPosition": start, "maxResults": len(page)}
        return {"QueryResponse": found, "time": _now()}

    # ---- writes ---------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        entity = _POSTED[path.strip("/")]
        if entity == "Payment":
            row = self._update_payment(body) if body.get("Id") else self._create_payment(body)
        elif entity == "Deposit":
            row = self._create_deposit(body)
        else:
            row = self._create_journal_entry(body)
        return {entity: _public(row), "time": _now()}

    def _currency(self, body: dict[str, Any]) -> str:
        currency = str((body.get("CurrencyRef") or {}).get("value") or self.home_currency)
        if currency != self.home_currency and not self.multicurrency:
            raise Fault(400, "6000", "Multicurrency is off", f"{currency} in a {self.home_currency} company")
        return currency

    def _create_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer(str((body.get("CustomerRef") or {}).get("value")))
        self._account(body.get("DepositToAccountRef"))
        currency = self._currency(body)
        row = {**copy.deepcopy(body), "Id": self._next_id(), "SyncToken": "0", "domain": "QBO",
               "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
               "CurrencyRef": {"value": currency}, "TxnDate": body.get("TxnDate") or date.today().isoformat()}
        row["TotalAmt"] = _amount(body.get("TotalAmt", 0), currency, "TotalAmt")
        self._apply(row, row.get("Line") or [])
        self.payments.append(row)
        return row

    def _update_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        row = self._live(self.payments, str(body["Id"]), "Payment")
        if body.get("sparse") is not True:
            raise Fault(400, "4000", "Full update", "the connector must send sparse updates", violation=True)
        if str(body.get("SyncToken")) != row["SyncToken"]:
            raise Fault(400, "5010", "Stale Object Error",
                        "Stale Object Error : You and another user were working on this at the same time.")
        old_lines = row.get("Line") or []
        self._unapply(row)
        try:
            self._apply(row, body.get("Line", old_lines))
        except Fault:
            self._apply(row, old_lines)
            raise
        row["SyncToken"] = str(int(row["SyncToken"]) + 1)
        return row

    def _conflict(self, body: dict[str, Any]) -> None:
        if body.get("Id"):
            row = self._live(self.payments, str(body["Id"]), "Payment")
            row["SyncToken"] = str(int(row["SyncToken"]) + 1)

    def _apply(self, payment: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        """Apply the Payment's lines: invoices and debit JournalEntries count +, credit ones -."""
        currency, customer_id = payment["CurrencyRef"]["value"], payment["CustomerRef"]["value"]
        applied, changes = Decimal(0), []
        for i, line in enumerate(lines):
            amount = _amount(line.get("Amount", 0), currency, f"Line[{i}].Amount")
            links = line.get("LinkedTxn") or []
            if len(links) != 1 or amount <= 0:
                raise Fault(400, "6000", "Invalid line", f"Line[{i}] needs one LinkedTxn and an amount > 0")
            kind, txn_id = links[0].get("TxnType"), str(links[0].get("TxnId"))
            if kind == "Invoice":
                target = self._live(self.invoices, txn_id, "Invoice")
                owner = (target["CustomerRef"]["value"], target["CurrencyRef"]["value"])
                if owner != (customer_id, currency):
                    raise Fault(400, "6000", "Invalid line", f"invoice {txn_id}: other customer or currency")
                open_amount, sign = target["Balance"], 1
            elif kind == "JournalEntry":
                target = self._live(self.journal_entries, txn_id, "JournalEntry")
                signed = target["_ar"].get(customer_id)
                if signed is None:
                    raise Fault(400, "6000", "Invalid line", f"entry {txn_id}: no A/R of {customer_id}")
                open_amount, sign = target["_open"][customer_id], 1 if signed > 0 else -1
            else:
                raise Fault(400, "6000", "Invalid line", f"cannot link {kind} from a Payment")
            if amount > open_amount:
                raise Fault(400, "6000", "Amount exceeds balance",
                            f"Line[{i}] applies {amount} to {kind} {txn_id}, open {open_amount}")
            applied += sign * amount
            changes.append((kind, target, amount))
        if applied > payment["TotalAmt"]:
            raise Fault(400, "6000", "Applied amount exceeds TotalAmt", f"{applied} > {payment['TotalAmt']}")
        for kind, target, amount in changes:
            if kind == "Invoice":
                target["Balance"] -= amount
                link = {"TxnId": payment["Id"], "TxnType": "Payment"}
                if link not in target["LinkedTxn"]:
                    target["LinkedTxn"].append(link)
            else:
                target["_open"][payment["CustomerRef"]["value"]] -= amount
        payment["Line"] = copy.deepcopy(lines)
        payment["UnappliedAmt"] = payment["TotalAmt"] - applied

    def _unapply(self, payment: dict[str, Any]) -> None:
        for line in payment.get("Line") or []:
            link = line["LinkedTxn"][0]
            amount = Decimal(line["Amount"])
            if link["TxnType"] == "Invoice":
                inv = self._live(self.invoices, str(link["TxnId"]), "Invoice")
                inv["Balance"] += amount
                inv["LinkedTxn"] = [lt for lt in inv["LinkedTxn"] if lt["TxnId"] != payment["Id"]]
            else:
                je = self._live(self.journal_entries, str(link["TxnId"]), "JournalEntry")
                je["_open"][payment["CustomerRef"]["value"]] += amount
        payment["Line"] = []

    def _create_deposit(self, body: dict[str, Any]) -> dict[str, Any]:
        self._account(body.get("DepositToAccountRef"))
        currency = self._currency(body)
        total, linked = Decimal(0), []
        for i, line in enumerate(body.get("Line") or []):
            amount = _amount(line.get("Amount", 0), currency, f"Line[{i}].Amount")
            if line.get("LinkedTxn"):
                link = line["LinkedTxn"][0]
                payment = self._live(self.payments, str(link.get("TxnId")), "Payment")
                held = self._account(payment.get("DepositToAccountRef"))
                if link.get("TxnType") != "Payment" or held["AccountSubType"] != "UndepositedFunds":
                    raise Fault(400, "6000", "Invalid link", f"Line[{i}]: only Undeposited Funds payments")
                if payment.get("_deposit") or payment in linked:
                    raise Fault(400, "6000", "Already deposited", f"payment {payment['Id']}")
                if amount != payment["TotalAmt"]:
                    raise Fault(400, "6000", "Amount mismatch", f"Line[{i}]: {amount}")
                linked.append(payment)
            elif line.get("DetailType") == "DepositLineDetail":
                self._account((line.get("DepositLineDetail") or {}).get("AccountRef"))
            else:
                raise Fault(400, "6000", "Invalid line", f"Line[{i}] links nothing and has no account")
            total += amount
        if total < 0:
            raise Fault(400, "6000", "Negative deposit", f"total {total}")
        row = {**copy.deepcopy(body), "Id": self._next_id(), "SyncToken": "0", "domain": "QBO",
               "CurrencyRef": {"value": currency}, "TotalAmt": total}
        for payment in linked:
            payment["_deposit"] = row["Id"]
        self.deposits.append(row)
        return row

    def _create_journal_entry(self, body: dict[str, Any]) -> dict[str, Any]:
        currency = self._currency(body)
        sides = {"Debit": Decimal(0), "Credit": Decimal(0)}
        ar: dict[str, Decimal] = {}
        for i, line in enumerate(body.get("Line") or []):
            amount = _amount(line.get("Amount", 0), currency, f"Line[{i}].Amount")
            detail = line.get("JournalEntryLineDetail") or {}
            side = detail.get("PostingType")
            if line.get("DetailType") != "JournalEntryLineDetail" or side not in sides:
                raise Fault(400, "6000", "Invalid line", f"Line[{i}] needs a JournalEntryLineDetail")
            account = self._account(detail.get("AccountRef"))
            sides[side] += amount
            if account["AccountType"] == "Accounts Receivable":
                entity = detail.get("Entity") or {}
                if entity.get("Type") != "Customer":
                    raise Fault(400, "6000", "Customer required",
                                "A/R lines of a journal entry must name a customer")
                cid = self._customer(str((entity.get("EntityRef") or {}).get("value")))["Id"]
                ar[cid] = ar.get(cid, Decimal(0)) + (amount if side == "Debit" else -amount)
        if sides["Debit"] != sides["Credit"]:
            raise Fault(400, "6000", "Transaction must balance", f"{sides['Debit']} != {sides['Credit']}")
        row = {**copy.deepcopy(body), "Id": self._next_id(), "SyncToken": "0", "domain": "QBO",
               "CurrencyRef": {"value": currency}, "TotalAmt": sides["Debit"],
               "_ar": ar, "_open": {cid: abs(v) for cid, v in ar.items()}}
        self.journal_entries.append(row)
        return row

    # ---- lookups --------------------------------------------------------------------------------

    def _live(self, table: list[dict[str, Any]], obj_id: str, entity: str) -> dict[str, Any]:
        found = next((r for r in table if r["Id"] == obj_id and r.get("status") != "Deleted"), None)
        if found is None:
            raise Fault(400, "610", "Object Not Found",
                        f"Object Not Found : Something you're trying to use has been made inactive or "
                        f"deleted: {entity} {obj_id}")
        return found

    def _customer(self, customer_id: str) -> dict[str, Any]:
        return self._live(self.customers, customer_id, "Customer")

    def _account(self, ref: Any) -> dict[str, Any]:
        return self._live(self.accounts, str((ref or {}).get("value")), "Account")


def _holds(row: dict[str, Any], name: str, op: str, value: str) -> bool:
    have: Any = row.get(name)
    if isinstance(have, dict):
        have = have.get("value")
    if name == "Balance":
        have, value = Decimal(have), Decimal(value)  # type: ignore[assignment]
    return {"=": have == value, ">": have > value, "<": have < value,
            ">=": have >= value, "<=": have <= value}[op]


def _amount(value: Any, currency: str, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Fault(400, "2010", "Invalid number", f"{where} = {value!r}", violation=True)
    amount = Decimal(value)
    if amount != amount.quantize(Decimal(1).scaleb(-_PLACES.get(currency, 2))):
        raise Fault(400, "6000", "Too many decimal places", f"{where} = {value} in {currency}")
    return amount


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in row.items() if not k.startswith("_")}


def _now() -> str:
    return "2026-12-04T08:00:00.000-08:00"


def _dumps(value: Any) -> bytes:
    """JSON with Decimal amounts as numbers, the way QBO sends them."""
    def enc(v: Any) -> str:
        if isinstance(v, Decimal):
            return format(v, "f")
        if isinstance(v, dict):
            return "{" + ",".join(f"{json.dumps(str(k))}:{enc(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        return json.dumps(v)
    return enc(value).encode()


@dataclass
class Connected:
    """A QuickBooks connector wired to a fake the way the app wires it (tokens in a vault)."""

    qbo: Any  # sync.accounting.quickbooks.QuickBooks
    vault: Any  # tests.fakes.oauth_vault.MemoryVault
    clock: Any  # app.core.clock.FrozenClock
    sleeps: list[float]


def connect(fake: QboFake, *, timeout: float = 5.0, max_retries: int = 2, **settings: Any) -> Connected:
    """The connector under test against `fake`: HttpClient with a recording `sleep`, a FrozenClock,
    first tokens valid for an hour, and QuickBooksSettings with `settings` overriding the defaults."""
    from datetime import UTC, datetime, timedelta

    from app.config import QuickBooksSettings, Secret
    from app.core.clock import FrozenClock
    from sync.accounting.oauth import OAuthClient, RefreshingTokens
    from sync.accounting.quickbooks import QuickBooks
    from sync.http import HttpClient
    from tests.fakes.oauth_vault import MemoryVault

    clock = FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))
    sleeps: list[float] = []
    http = HttpClient(timeout=timeout, max_retries=max_retries, sleep=sleeps.append)
    vault = MemoryVault(fake.issue_tokens(clock.utc_now() + timedelta(hours=1)))
    cfg = QuickBooksSettings(**{"client_id": fake.client_id, "client_secret": Secret(fake.client_secret),
                                "api_base": fake.api_base, "token_url": fake.token_url,
                                "bank_account": "Checking", **settings})
    oauth = OAuthClient(authorize_url=cfg.authorize_url, token_url=cfg.token_url, client_id=cfg.client_id,
                        client_secret=cfg.client_secret, scope="com.intuit.quickbooks.accounting",
                        http=http, clock=clock)
    tokens = RefreshingTokens(oauth, vault, clock)
    return Connected(QuickBooks(cfg, tokens, http, clock), vault, clock, sleeps)
