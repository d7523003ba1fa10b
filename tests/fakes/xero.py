"""A Xero fake on loopback: identity (token endpoint, connections) and the Accounting API endpoints
Cashloop uses, checking every API request against tests/specs/xero-accounting-subset.yaml.

Identity: `POST /connect/token` takes HTTP Basic client authentication and the authorization-code
or refresh grant, issues 30-minute access tokens (`expires_in` 1800) and rotates the refresh token
on every refresh (the old one stops working); after `revoke()` a refresh answers 400
`invalid_grant`. `GET /connections` lists the one organisation.

Accounting (`/api.xro/2.0/...`): the operation must exist in the spec, query parameters be declared,
`xero-tenant-id` name the organisation, bodies fit the schema (a property the schema does not
define is a violation). Lists come in Xero's envelope (plural root key, `pagination` when paged
with `page=N`), dates as `/Date(ms+0000)/`, amounts as JSON numbers. Payments reduce their invoice's
AmountDue (more than is due is refused with Xero's ValidationException shape); a deleted payment
or batch gives the amount back and stays in its list with Status DELETED, as in Xero. A bank
transaction's line may not be coded to a bank account (Xero refuses it: money between two bank
accounts is a bank transfer); a bank transfer moves its Amount out of one bank account into
another and shows in /BankTransactions as its two legs (SPEND-TRANSFER, RECEIVE-TRANSFER).
Payments and batches keep a history: notes added through `.../History`, and Xero's own line
when one is deleted. A used Idempotency-Key replays its first response, even when that object
was deleted since (what B11's variant is about).

Faults: `fail_next()` (e.g. 429 with Retry-After and X-Rate-Limit-Problem), `drop_next()` (the
request is carried out, the response comes too late: the client sees a timeout),
`expire_access_tokens()` (401), `revoke()`. Every request is kept in `requests`; calls are
counted per tenant and minute of the fake's clock and the 61st in a minute is a violation.
Tests assert `fake.violations == []`.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.fakes._spec import Failure, Failures, LoopbackServer, Reject, Spec
from tests.fakes.connectwise import spec_path

API = "/api.xro/2.0"
PER_MINUTE = 60
_METHODS = frozenset({"get", "put", "post", "delete", "patch"})
_EXPONENT = {"JPY": 0, "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3}


class XeroSpec(Spec):
    """The Xero OpenAPI YAML, with `$ref` parameters and request bodies resolved and path-level
    parameters (the required `xero-tenant-id`) merged into each operation, so Spec's checks see them."""

    def __init__(self, path: Path) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
        shared = doc["components"]["parameters"]
        bodies = doc["components"].get("requestBodies", {})

        def resolve(p: dict[str, Any]) -> dict[str, Any]:
            return shared[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p

        for ops in doc["paths"].values():
            common = ops.get("parameters", [])
            for method, op in ops.items():
                if method in _METHODS:
                    op["parameters"] = [resolve(p) for p in [*common, *op.get("parameters", [])]]
                    if "$ref" in op.get("requestBody", {}):  # e.g. the History notes' shared body
                        op["requestBody"] = bodies[op["requestBody"]["$ref"].rsplit("/", 1)[1]]
        self.doc, self.is_swagger, self.ignore_case, self.lenient = doc, False, False, frozenset()
        self._ops = [
            (re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p) + "$"), p, ops)
            for p, ops in sorted(doc["paths"].items(), key=lambda kv: kv[0].count("{"))
        ]


@functools.lru_cache(maxsize=2)
def _spec(path: str) -> XeroSpec:
    """Parsed once per run: the YAML is large and read-only after loading."""
    return XeroSpec(Path(path))


def xero_date(day: date) -> str:
    ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return f"/Date({ms}+0000)/"


def _to_json(payload: Any) -> bytes:
    """Decimals as JSON numbers with their digits, like Xero's own `100.00`."""
    mark = "\x1fnum:"

    def walk(v: Any) -> Any:
        if isinstance(v, Decimal):
            return f"{mark}{v:f}"
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, date):
            return xero_date(v)
        return v

    text = json.dumps(walk(payload))
    return re.sub(r'"\\u001fnum:(-?[\d.]+)"', r"\1", text).encode()


def validation_error(message: str, **element: Any) -> tuple[int, dict[str, str], Any]:
    """Xero's 400 for a refused document."""
    return (
        400,
        {},
        {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": "A validation exception occurred",
            "Elements": [{**element, "ValidationErrors": [{"Message": message}]}],
        },
    )


# ---- `where` filters: Field=="x", Field!="x", Field.StartsWith("x"), Field>=DateTime(y,m,d) ... ----

_CLAUSE = re.compile(
    r"""^\s*(?P<field>[A-Za-z][\w.]*?)\s*(?:
          \.(?P<fn>StartsWith|EndsWith|Contains)\(\s*"(?P<arg>(?:[^"\\]|\\.)*)"\s*\)
        | (?P<op>==|!=|>=|<=|>|<)\s*(?:"(?P<text>(?:[^"\\]|\\.)*)"|DateTime\((?P<dt>[\d,\s]+)\)|(?P<bare>\w+))
        )\s*$""",
    re.X,
)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split(where: str, word: str) -> list[str]:
    """Split on AND/OR outside string literals."""
    parts, depth_quote, current, i = [], False, "", 0
    token = f" {word} "
    while i < len(where):
        ch = where[i]
        if ch == "\\" and depth_quote:
            current += where[i : i + 2]
            i += 2
            continue
        if ch == '"':
            depth_quote = not depth_quote
        if not depth_quote and where.startswith(token, i):
            parts.append(current)
            current, i = "", i + len(token)
            continue
        current += ch
        i += 1
    parts.append(current)
    return parts


def where_matches(where: str, record: dict[str, Any]) -> bool:
    """Does `record` (fake-internal values: str, Decimal, date) pass Xero's `where` filter?"""
    return any(all(_clause(c, record) for c in _split(alt, "AND")) for alt in _split(where, "OR"))


def _clause(text: str, record: dict[str, Any]) -> bool:
    m = _CLAUSE.match(text)
    if not m:
        raise Reject(400, f"where clause {text.strip()!r} is not understood by the fake")
    value: Any = record
    for part in m["field"].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if m["fn"]:
        arg, have = _unescape(m["arg"]), str(value or "")
        return {"StartsWith": have.startswith, "EndsWith": have.endswith, "Contains": have.__contains__}[
            m["fn"]
        ](arg)
    if m["dt"]:
        y, mo, d = (int(x) for x in m["dt"].split(","))
        want: Any = date(y, mo, d)
    elif m["text"] is not None:
        want = _unescape(m["text"])
    else:
        want = {"true": True, "false": False, "null": None}.get(m["bare"], m["bare"])
    if value is None or want is None:
        same = value is None and want is None
        return same if m["op"] == "==" else not same if m["op"] == "!=" else False
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
    }
    return ops[m["op"]](value, want)


class _Exact(Failure):
    """A failure for one path only (`/Payments`, not `/Payments/{id}/History`)."""

    def applies(self, method: str, path: str) -> bool:
        return self.method in (None, method) and path == self.path


@dataclass
class Seen:
    method: str
    path: str  # relative to the API base, or /connect/token, /connections
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    at: datetime | None = None


class XeroFake:
    """`with XeroFake(now=clock.utc_now) as xero:`; settings point at `xero.api_base` etc."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime] | None = None,
        client_id: str = "XERO-CLIENT-FAKE-0001",
        client_secret: str = "xero-secret-fake-0001",  # noqa: S107 - the fake's own test credential
        tenant_id: str = "7d2c8b6e-0c38-4a57-9d0e-6b1f3c4a9e21",
        tenant_name: str = "Cashloop Demo MSP",
    ) -> None:
        self.now = now or (lambda: datetime.now(UTC))
        self.client_id, self.client_secret = client_id, client_secret
        self.tenant_id, self.tenant_name = tenant_id, tenant_name
        self.spec = _spec(str(spec_path("xero-accounting-subset.yaml")))
        self.accounts: list[dict[str, Any]] = []
        self.contacts: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.payments: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.bank_transactions: list[dict[str, Any]] = []
        self.bank_transfers: list[dict[str, Any]] = []
        self.history: dict[str, list[dict[str, Any]]] = {}  # PaymentID / BatchPaymentID -> records
        self.access_tokens: dict[str, datetime] = {}
        self.refresh_tokens: set[str] = set()
        self.codes: set[str] = set()
        self.revoked = False
        self.violations: list[str] = []
        self.requests: list[Seen] = []
        self.calls_per_minute: dict[tuple[str, str], int] = {}
        self.failures = Failures()
        self._drops: list[tuple[str | None, str | None, float]] = []
        self._replay: dict[tuple[str, str], tuple[int, dict[str, str], Any]] = {}
        self._lock = threading.RLock()
        self._server = LoopbackServer(self.handle)
        self._port = 0
        for code, name, kind in (
            ("090", "Stripe clearing", "BANK"),
            ("091", "Business bank", "BANK"),
            ("404", "Bank fees", "EXPENSE"),
            ("260", "Card surcharge income", "REVENUE"),
            ("200", "Sales", "REVENUE"),
        ):
            self.add_account(code, name, kind)

    # ---- lifecycle, URLs, seeding -----------------------------------------------------------------

    def start(self) -> XeroFake:
        self._port = self._server.start()
        server = self._server._server  # a dropped response's late write meets a closed socket: expected
        if server is not None:
            report = server.handle_error

            def quiet(request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                    report(request, client_address)

            server.handle_error = quiet  # type: ignore[method-assign]
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> XeroFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API

    @property
    def token_url(self) -> str:
        return self.base_url + "/connect/token"

    @property
    def connections_url(self) -> str:
        return self.base_url + "/connections"

    def add_account(self, code: str, name: str, kind: str) -> dict[str, Any]:
        account = {
            "AccountID": str(uuid.uuid4()),
            "Code": code,
            "Name": name,
            "Type": kind,
            "Status": "ACTIVE",
        }
        self.accounts.append(account)
        return account

    def add_contact(self, name: str) -> dict[str, Any]:
        with self._lock:
            contact = {"ContactID": str(uuid.uuid4()), "Name": name, "ContactStatus": "ACTIVE"}
            self.contacts.append(contact)
            return contact

    def add_invoice(
        self,
        number: str,
        total: str,
        *,
        contact: str = "Acme Dental",
        currency: str = "USD",
        status: str = "AUTHORISED",
        paid: str = "0",
        kind: str = "ACCREC",
    ) -> dict[str, Any]:
        with self._lock:
            who = next((c for c in self.contacts if c["Name"] == contact), None) or self.add_contact(contact)
            total_d, paid_d = Decimal(total), Decimal(paid)
            invoice = {
                "InvoiceID": str(uuid.uuid4()),
                "Type": kind,
                "InvoiceNumber": number,
                "Contact": {"ContactID": who["ContactID"], "Name": who["Name"]},
                "Status": status,
                "CurrencyCode": currency,
                "LineAmountTypes": "NoTax",
                "SubTotal": total_d,
                "TotalTax": Decimal(0),
                "Total": total_d,
                "AmountPaid": paid_d,
                "AmountCredited": Decimal(0),
                "AmountDue": total_d - paid_d,
                "Date": date(2026, 11, 1),
                "DueDate": date(2026, 12, 1),
                "UpdatedDateUTC": self.now(),
            }
            self.invoices.append(invoice)
            return invoice

    def invoice(self, number: str) -> dict[str, Any]:
        return next(i for i in self.invoices if i["InvoiceNumber"] == number)

    def live_payments(self) -> list[dict[str, Any]]:
        return [p for p in self.payments if p["Status"] == "AUTHORISED"]

    def live_batches(self) -> list[dict[str, Any]]:
        return [b for b in self.batches if b["Status"] == "AUTHORISED"]

    def live_bank_transactions(self) -> list[dict[str, Any]]:
        return [t for t in self.bank_transactions if t["Status"] == "AUTHORISED"]

    def live_bank_transfers(self) -> list[dict[str, Any]]:
        return [t for t in self.bank_transfers if t["Status"] == "AUTHORISED"]

    def balance(self, code: str) -> Decimal:
        """Money in the bank account `code` (or booked to account `code`): + in, - out."""
        total = Decimal(0)
        for transfer in self.live_bank_transfers():
            if transfer["ToBankAccount"]["Code"] == code:
                total += transfer["Amount"]
            if transfer["FromBankAccount"]["Code"] == code:
                total -= transfer["Amount"]
        for p in self.live_payments():
            if p["Account"]["Code"] == code:
                total += p["Amount"]
        for t in self.live_bank_transactions():
            sign = 1 if t["Type"] == "RECEIVE" else -1
            if t["BankAccount"]["Code"] == code:
                total += sign * t["Total"]
            for line in t["LineItems"]:
                if line.get("AccountCode") == code:
                    total -= sign * line["LineAmount"]
        return total

    # ---- knobs ------------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        retry_after: float | None = None,
        times: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        exact: bool = False,
    ) -> None:
        """The next `times` API requests (optionally only `method`, paths starting with `path`, or
        equal to it when `exact`) are answered `status` without being carried out; 429s carry
        Xero's rate-limit headers."""
        self.failures.add((_Exact if exact else Failure)(status, retry_after, times, method, path))

    def drop_next(self, *, method: str | None = None, path: str | None = None, seconds: float = 1.5) -> None:
        """Carry out the next matching request, then answer only after `seconds` (a client timeout)."""
        with self._lock:
            self._drops.append((method, path, seconds))

    def expire_access_tokens(self) -> None:
        with self._lock:
            for token in self.access_tokens:
                self.access_tokens[token] = self.now() - timedelta(seconds=1)

    def revoke(self) -> None:
        """The organisation disconnected the app: every token stops working."""
        with self._lock:
            self.revoked = True
            self.refresh_tokens.clear()
            self.access_tokens.clear()

    def grant(self) -> dict[str, Any]:
        """Tokens as the authorization-code exchange hands them out (what a connect flow stores)."""
        with self._lock:
            return self._issue()

    def authorization_code(self) -> str:
        code = secrets.token_urlsafe(12)
        self.codes.add(code)
        return code

    def api_requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            r
            for r in self.requests
            if r.path.startswith("/")
            and r.path not in ("/connect/token", "/connections")
            and (method is None or r.method == method)
            and (path is None or r.path == path)
        ]

    # ---- HTTP -------------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        url = urlsplit(target)
        raw_query = parse_qs(url.query, keep_blank_values=True)
        query = {k: v[0] for k, v in raw_query.items()}
        delay = 0.0
        with self._lock:
            try:
                if url.path == "/connect/token":
                    self.requests.append(Seen(method, url.path, {}, headers, at=self.now()))
                    return self._token(method, headers, body)
                if url.path.lower() == "/connections":
                    self.requests.append(Seen(method, "/connections", query, headers, at=self.now()))
                    self._check_token(headers)
                    return (
                        200,
                        {},
                        _to_json(
                            [
                                {
                                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.tenant_id)),
                                    "tenantId": self.tenant_id,
                                    "tenantType": "ORGANISATION",
                                    "tenantName": self.tenant_name,
                                    "createdDateUtc": "2026-11-01T09:00:00.0000000",
                                    "updatedDateUtc": "2026-11-01T09:00:00.0000000",
                                }
                            ]
                        ),
                    )
                if not url.path.startswith(API + "/"):
                    raise Reject(404, f"{url.path} is not a Xero URL")
                path = url.path[len(API) :]
                seen = Seen(method, path, query, headers, at=self.now())
                self.requests.append(seen)
                template, op, params = self.spec.operation(method, path)
                self.spec.check_query(op, raw_query)
                self.spec.check_headers(op, headers)
                if method in ("PUT", "POST"):
                    seen.body = self.spec.check_body(op, headers, body)
                self._check_token(headers)
                if headers.get("xero-tenant-id") != self.tenant_id:
                    return (
                        403,
                        {},
                        {
                            "Type": None,
                            "Title": "Forbidden",
                            "Status": 403,
                            "Detail": "AuthorizationUnsuccessful",
                        },
                    )
                limits = self._count(headers["xero-tenant-id"])
                failure = self.failures.take(method, path)
                if failure is not None:
                    extra = dict(limits)
                    if failure.retry_after is not None:
                        extra["Retry-After"] = f"{failure.retry_after:g}"
                    if failure.status == 429:
                        extra["X-Rate-Limit-Problem"] = "minute"
                    return (
                        failure.status,
                        extra,
                        {
                            "Title": "Too Many Requests" if failure.status == 429 else "Service Unavailable",
                            "Status": failure.status,
                        },
                    )
                key = headers.get("idempotency-key")
                if key is not None and len(key) > 128:
                    raise Reject(400, "Idempotency-Key is longer than 128 characters")
                if key and (self.tenant_id, key) in self._replay:
                    status, extra, payload = self._replay[(self.tenant_id, key)]
                else:
                    status, extra, payload = self._route(method, template, params, query, seen.body)
                    payload = _to_json(payload) if not isinstance(payload, bytes) else payload
                    if key and status < 500:
                        self._replay[(self.tenant_id, key)] = (status, extra, payload)
                drop = next(
                    (
                        d
                        for d in self._drops
                        if d[0] in (None, method) and (d[1] is None or path.startswith(d[1]))
                    ),
                    None,
                )
                if drop is not None:
                    self._drops.remove(drop)
                    delay = drop[2]
                answer = (status, {**extra, **limits}, payload)
            except Reject as exc:
                if exc.violation:
                    self.violations.append(f"{method} {url.path}: {exc}")
                title = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(exc.status, "Error")
                return (
                    exc.status,
                    {},
                    {"Type": None, "Title": title, "Status": exc.status, "Detail": str(exc)},
                )
        if delay:
            time.sleep(delay)  # outside the lock: the fake keeps serving other requests meanwhile
        return answer

    def _count(self, tenant: str) -> dict[str, str]:
        minute = self.now().strftime("%Y-%m-%dT%H:%M")
        count = self.calls_per_minute.get((tenant, minute), 0) + 1
        self.calls_per_minute[(tenant, minute)] = count
        if count > PER_MINUTE:
            self.violations.append(f"tenant {tenant} made call {count} in the minute {minute}")
        return {
            "X-MinLimit-Remaining": str(max(0, PER_MINUTE - count)),
            "X-DayLimit-Remaining": "4900",
            "X-AppMinLimit-Remaining": "9900",
        }

    # ---- identity ---------------------------------------------------------------------------------

    def _issue(self) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = self.now() + timedelta(seconds=1800)
        self.refresh_tokens.add(refresh)
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 1800,
            "token_type": "Bearer",
            "scope": "offline_access accounting.transactions",
        }

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        if method != "POST":
            raise Reject(405, "the token endpoint takes POST")
        if "application/x-www-form-urlencoded" not in headers.get("content-type", ""):
            raise Reject(400, "the token request must be form-encoded")
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if headers.get("authorization") != f"Basic {expected}":
            return 401, {}, {"error": "invalid_client"}
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if self.revoked or form.get("refresh_token") not in self.refresh_tokens:
                return 400, {}, {"error": "invalid_grant"}
            self.refresh_tokens.discard(form["refresh_token"])  # rotated: the old one is spent
            return 200, {}, self._issue()
        if grant == "authorization_code":
            if form.get("code") not in self.codes or not form.get("redirect_uri"):
                return 400, {}, {"error": "invalid_grant"}
            self.codes.discard(form["code"])
            self.revoked = False
            return 200, {}, self._issue()
        raise Reject(400, f"unsupported grant_type {grant!r}")

    def _check_token(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        expires = self.access_tokens.get(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else None
        if expires is None or self.now() >= expires:
            raise Reject(401, "TokenExpired: token expired or unknown", violation=False)

    # ---- accounting -------------------------------------------------------------------------------

    def _route(
        self, method: str, template: str, params: dict[str, str], query: dict[str, str], body: Any
    ) -> tuple[int, dict, Any]:
        if method == "GET" and template in _LISTS:
            return self._list(template, query)
        if method == "PUT" and template == "/Payments":
            return self._put_payments(body)
        if method == "PUT" and template == "/BatchPayments":
            return self._put_batches(body)
        if method == "PUT" and template == "/BankTransactions":
            return self._put_bank_transactions(body)
        if method == "PUT" and template == "/BankTransfers":
            return self._put_bank_transfers(body)
        if method == "GET" and template == "/BankTransfers":
            where, deleted = query.get("where"), query.get("includeDeleted") == "true"
            rows = [
                r
                for r in self.bank_transfers
                if (deleted or r["Status"] != "DELETED") and (not where or where_matches(where, r))
            ]
            return 200, {}, self._envelope("BankTransfers", [self._render_transfer(t) for t in rows])
        if template in ("/Payments/{PaymentID}/History", "/BatchPayments/{BatchPaymentID}/History"):
            return self._history(method, params.get("PaymentID") or params["BatchPaymentID"], body)
        if method == "POST" and template == "/Payments/{PaymentID}":
            return self._delete_payment(params["PaymentID"], body)
        if method == "POST" and template == "/BatchPayments/{BatchPaymentID}":
            return self._delete_batch(params["BatchPaymentID"], body)
        if method == "GET" and template == "/Accounts":
            return 200, {}, self._envelope("Accounts", copy.deepcopy(self.accounts))
        raise Reject(501, f"the fake does not implement {method} {template}", violation=False)

    def _envelope(
        self, root: str, items: list[Any], pagination: dict[str, int] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": "Cashloop",
            "DateTimeUTC": f"/Date({int(self.now().timestamp() * 1000)})/",
        }
        if pagination is not None:
            out["pagination"] = pagination
        out[root] = items
        return out

    def _list(self, template: str, query: dict[str, str]) -> tuple[int, dict, Any]:
        root, rows, render = {
            "/Invoices": ("Invoices", self.invoices, self._render_invoice),
            "/Contacts": ("Contacts", self.contacts, copy.deepcopy),
            "/Payments": ("Payments", self.payments, self._render_payment),
            "/BatchPayments": ("BatchPayments", self.batches, self._render_batch),
            "/BankTransactions": (
                "BankTransactions",
                [*self.live_bank_transactions(), *self._transfer_legs()],
                self._render_txn,
            ),
        }[template]
        if template == "/Invoices":
            rows = [i for i in rows if i["Status"] != "DELETED"]
            for param, field in (
                ("IDs", "InvoiceID"),
                ("InvoiceNumbers", "InvoiceNumber"),
                ("Statuses", "Status"),
            ):
                if param in query:
                    wanted = {v.strip() for v in query[param].split(",")}
                    rows = [i for i in rows if i[field] in wanted]
            if "ContactIDs" in query:
                wanted = {v.strip() for v in query["ContactIDs"].split(",")}
                rows = [i for i in rows if i["Contact"]["ContactID"] in wanted]
        if "where" in query:
            rows = [r for r in rows if where_matches(query["where"], r)]
        if "page" not in query:
            return 200, {}, self._envelope(root, [render(r) for r in rows])
        size = int(query.get("pageSize", "100"))
        number = int(query["page"])
        if size < 1 or number < 1:
            raise Reject(400, "page and pageSize start at 1")
        page = rows[(number - 1) * size : number * size]
        info = {
            "page": number,
            "pageSize": size,
            "pageCount": max(1, -(-len(rows) // size)),
            "itemCount": len(rows),
        }
        return 200, {}, self._envelope(root, [render(r) for r in page], info)

    # -- payments --

    def _find_invoice(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        if ref.get("InvoiceID"):
            return next((i for i in self.invoices if i["InvoiceID"] == ref["InvoiceID"]), None)
        if ref.get("InvoiceNumber"):
            return next((i for i in self.invoices if i["InvoiceNumber"] == ref["InvoiceNumber"]), None)
        return None

    def _account(self, ref: dict[str, Any] | None) -> dict[str, Any] | None:
        ref = ref or {}
        return next(
            (
                a
                for a in self.accounts
                if (ref.get("Code") and a["Code"] == ref["Code"])
                or (ref.get("AccountID") and a["AccountID"] == ref["AccountID"])
            ),
            None,
        )

    def _payment_problem(self, item: dict[str, Any], account: dict[str, Any] | None) -> str | None:
        invoice = self._find_invoice(item.get("Invoice") or {})
        amount = item.get("Amount")
        if invoice is None:
            return "Invoice could not be found"
        if account is None or not (account["Type"] == "BANK" or account.get("EnablePaymentsToAccount")):
            return "Account must be a bank account or have payments enabled"
        if invoice["Status"] != "AUTHORISED":
            return f"Invoice not of valid status for modification (status {invoice['Status']})"
        if not isinstance(amount, Decimal | int) or amount <= 0:
            return "Payment amount must be greater than zero"
        places = _EXPONENT.get(invoice["CurrencyCode"], 2)
        if Decimal(amount) != Decimal(amount).quantize(Decimal(1).scaleb(-places)):
            return f"Amount has more than {places} decimal places"
        if Decimal(amount) > invoice["AmountDue"]:
            return "Payment amount exceeds the amount outstanding on this document"
        return None

    def _apply(
        self, item: dict[str, Any], account: dict[str, Any], day: date, reference: str, batch_id: str | None
    ) -> dict[str, Any]:
        invoice = self._find_invoice(item["Invoice"])
        assert invoice is not None
        amount = Decimal(item["Amount"])
        invoice["AmountPaid"] += amount
        invoice["AmountDue"] -= amount
        invoice["Status"] = "PAID" if invoice["AmountDue"] == 0 else "AUTHORISED"
        invoice["UpdatedDateUTC"] = self.now()
        payment = {
            "PaymentID": str(uuid.uuid4()),
            "InvoiceID": invoice["InvoiceID"],
            "Account": {"AccountID": account["AccountID"], "Code": account["Code"]},
            "Date": day,
            "Amount": amount,
            "Reference": reference,
            "Status": "AUTHORISED",
            "PaymentType": "ACCRECPAYMENT",
            "IsReconciled": False,
            "UpdatedDateUTC": self.now(),
        }
        if batch_id:
            payment["BatchPaymentID"] = batch_id
        self.payments.append(payment)
        return payment

    def _put_payments(self, body: dict[str, Any]) -> tuple[int, dict, Any]:
        items = body.get("Payments") or []
        for item in items:
            account = self._account(item.get("Account"))
            problem = self._payment_problem(item, account) or (
                None if item.get("Date") else "Date is required"
            )
            if problem:
                return validation_error(
                    problem, **{"InvoiceID": (item.get("Invoice") or {}).get("InvoiceID")}
                )
        made = [
            self._apply(
                i,
                self._account(i["Account"]),
                date.fromisoformat(i["Date"]),  # type: ignore[arg-type]
                str(i.get("Reference") or ""),
                None,
            )
            for i in items
        ]
        return 200, {}, self._envelope("Payments", [self._render_payment(p) for p in made])

    def _put_batches(self, body: dict[str, Any]) -> tuple[int, dict, Any]:
        out = []
        for batch in body.get("BatchPayments") or []:
            account = self._account(batch.get("Account"))
            if not batch.get("Date") or not batch.get("Payments"):
                return validation_error("A batch payment needs a Date and Payments")
            for item in batch["Payments"]:
                problem = self._payment_problem(item, account)
                if problem:
                    return validation_error(problem)
            invoices = [self._find_invoice(i["Invoice"]) for i in batch["Payments"]]
            if len({i["InvoiceID"] for i in invoices if i}) != len(invoices):
                return validation_error("An invoice appears more than once in the batch")
            batch_id = str(uuid.uuid4())
            day = date.fromisoformat(batch["Date"])
            reference = str(batch.get("Reference") or "")
            made = [self._apply(i, account, day, reference, batch_id) for i in batch["Payments"]]  # type: ignore[arg-type]
            record = {
                "BatchPaymentID": batch_id,
                "Account": {
                    "AccountID": account["AccountID"],  # type: ignore[index]
                    "Code": account["Code"],
                },  # type: ignore[index]
                "Reference": reference,
                "Details": str(batch.get("Details") or ""),
                "Date": day,
                "Type": "RECBATCH",
                "Status": "AUTHORISED",
                "PaymentIDs": [p["PaymentID"] for p in made],
                "TotalAmount": sum((p["Amount"] for p in made), Decimal(0)),
                "IsReconciled": False,
                "UpdatedDateUTC": self.now(),
            }
            self.batches.append(record)
            out.append(record)
        return 200, {}, self._envelope("BatchPayments", [self._render_batch(b) for b in out])

    def _unapply(self, payment: dict[str, Any]) -> None:
        invoice = next(i for i in self.invoices if i["InvoiceID"] == payment["InvoiceID"])
        invoice["AmountPaid"] -= payment["Amount"]
        invoice["AmountDue"] += payment["Amount"]
        invoice["Status"] = "AUTHORISED"
        payment["Status"] = "DELETED"
        payment["UpdatedDateUTC"] = self.now()
        if not payment.get("BatchPaymentID"):
            self._system_note(payment["PaymentID"], "Deleted", f"Payment deleted: {payment['Amount']}")

    def _delete_payment(self, payment_id: str, body: dict[str, Any]) -> tuple[int, dict, Any]:
        payment = next((p for p in self.payments if p["PaymentID"] == payment_id), None)
        if payment is None:
            raise Reject(404, f"payment {payment_id} not found", violation=False)
        if body.get("Status") != "DELETED":
            return validation_error("Only Status DELETED can be set on a payment")
        if payment["Status"] == "DELETED":
            return validation_error("This payment has already been deleted")
        if payment.get("BatchPaymentID"):
            return validation_error("Payments in a batch are deleted with their batch payment")
        self._unapply(payment)
        return 200, {}, self._envelope("Payments", [self._render_payment(payment)])

    def _delete_batch(self, batch_id: str, body: dict[str, Any]) -> tuple[int, dict, Any]:
        batch = next((b for b in self.batches if b["BatchPaymentID"] == batch_id), None)
        if batch is None:
            raise Reject(404, f"batch payment {batch_id} not found", violation=False)
        if body.get("Status") != "DELETED":
            return validation_error("Only Status DELETED can be set on a batch payment")
        if batch["Status"] == "DELETED":
            return validation_error("This batch payment has already been deleted")
        for payment in self.payments:
            if payment["PaymentID"] in batch["PaymentIDs"]:
                self._unapply(payment)
        batch["Status"] = "DELETED"
        batch["UpdatedDateUTC"] = self.now()
        self._system_note(
            batch["BatchPaymentID"], "Deleted", f"Batch payment deleted: {batch['TotalAmount']}"
        )
        return 200, {}, self._envelope("BatchPayments", [self._render_batch(batch)])

    def delete_payment_in_xero(self, remote_ref: str) -> None:
        """A bookkeeper deletes a booking in Xero's UI (B11's variant)."""
        kind, _, remote_id = remote_ref.partition(":")
        with self._lock:
            if kind == "BatchPayment":
                self._delete_batch(remote_id, {"Status": "DELETED"})
            else:
                self._delete_payment(remote_id, {"Status": "DELETED"})

    # -- bank transactions --

    def _put_bank_transactions(self, body: dict[str, Any]) -> tuple[int, dict, Any]:
        out = []
        for item in body.get("BankTransactions") or []:
            account = self._account(item.get("BankAccount"))
            if item.get("Type") not in ("RECEIVE", "SPEND"):
                return validation_error(f"Type {item.get('Type')} cannot be created here")
            if account is None or account["Type"] != "BANK":
                return validation_error("BankAccount must be a bank account")
            lines = []
            for line in item.get("LineItems") or []:
                if self._account({"Code": line.get("AccountCode")}) is None:
                    return validation_error(f"Account code {line.get('AccountCode')!r} is not a valid code")
                qty, unit = Decimal(line.get("Quantity", 1)), Decimal(line.get("UnitAmount", 0))
                amount = Decimal(line["LineAmount"]) if "LineAmount" in line else qty * unit
                if amount != qty * unit:
                    return validation_error("LineAmount must equal Quantity times UnitAmount")
                if amount <= 0:
                    return validation_error("A bank transaction line must be greater than zero")
                lines.append({**line, "LineAmount": amount, "LineItemID": str(uuid.uuid4())})
            if not lines:
                return validation_error("A bank transaction needs at least one line item")
            coded_to_bank = next(
                (
                    ln
                    for ln in lines
                    if (self._account({"Code": ln.get("AccountCode")}) or {}).get("Type") == "BANK"
                ),
                None,
            )
            if coded_to_bank is not None:
                return validation_error(
                    f"Account code {coded_to_bank.get('AccountCode')!r} is a bank account and cannot be "
                    f"used on a line item; use a bank transfer to move money between bank accounts"
                )
            total = sum((ln["LineAmount"] for ln in lines), Decimal(0))
            record = {
                "BankTransactionID": str(uuid.uuid4()),
                "Type": item["Type"],
                "BankAccount": {"AccountID": account["AccountID"], "Code": account["Code"]},
                "Contact": {"Name": (item.get("Contact") or {}).get("Name", "")},
                "Date": date.fromisoformat(item["Date"]) if item.get("Date") else self.now().date(),
                "Reference": str(item.get("Reference") or ""),
                "CurrencyCode": item.get("CurrencyCode", "USD"),
                "LineAmountTypes": "NoTax",
                "LineItems": lines,
                "SubTotal": total,
                "TotalTax": Decimal(0),
                "Total": total,
                "Status": "AUTHORISED",
                "IsReconciled": False,
                "UpdatedDateUTC": self.now(),
            }
            self.bank_transactions.append(record)
            out.append(record)
        return 200, {}, self._envelope("BankTransactions", [self._render_txn(t) for t in out])

    # -- bank transfers --

    def _put_bank_transfers(self, body: dict[str, Any]) -> tuple[int, dict, Any]:
        out = []
        for item in body.get("BankTransfers") or []:
            source = self._account(item.get("FromBankAccount"))
            target = self._account(item.get("ToBankAccount"))
            if source is None or target is None or source["Type"] != "BANK" or target["Type"] != "BANK":
                return validation_error("FromBankAccount and ToBankAccount must be bank accounts")
            if source["AccountID"] == target["AccountID"]:
                return validation_error("FromBankAccount and ToBankAccount cannot be the same account")
            amount = item.get("Amount")
            if not isinstance(amount, Decimal | int) or isinstance(amount, bool) or amount <= 0:
                return validation_error("Amount must be greater than zero")
            record = {
                "BankTransferID": str(uuid.uuid4()),
                "FromBankAccount": {k: source[k] for k in ("AccountID", "Code", "Name")},
                "ToBankAccount": {k: target[k] for k in ("AccountID", "Code", "Name")},
                "Amount": Decimal(amount),
                "Date": date.fromisoformat(item["Date"]) if item.get("Date") else self.now().date(),
                "Reference": str(item.get("Reference") or ""),
                "Status": "AUTHORISED",
                "FromBankTransactionID": str(uuid.uuid4()),
                "ToBankTransactionID": str(uuid.uuid4()),
                "FromIsReconciled": False,
                "ToIsReconciled": False,
                "CurrencyRate": Decimal("1.000000"),
                "HasAttachments": False,
                "CreatedDateUTC": self.now(),
            }
            self.bank_transfers.append(record)
            out.append(record)
        return 200, {}, self._envelope("BankTransfers", [self._render_transfer(t) for t in out])

    def _transfer_legs(self) -> list[dict[str, Any]]:
        """Each transfer as Xero lists it among bank transactions: money out of one, into the other."""
        legs = []
        for t in self.live_bank_transfers():
            for kind, side, txn_id in (
                ("SPEND-TRANSFER", "FromBankAccount", t["FromBankTransactionID"]),
                ("RECEIVE-TRANSFER", "ToBankAccount", t["ToBankTransactionID"]),
            ):
                legs.append(
                    {
                        "BankTransactionID": txn_id,
                        "Type": kind,
                        "BankAccount": {"AccountID": t[side]["AccountID"], "Code": t[side]["Code"]},
                        "Contact": {"Name": ""},
                        "Date": t["Date"],
                        "Reference": t["Reference"],
                        "CurrencyCode": "USD",
                        "LineAmountTypes": "NoTax",
                        "LineItems": [],
                        "SubTotal": t["Amount"],
                        "TotalTax": Decimal(0),
                        "Total": t["Amount"],
                        "Status": "AUTHORISED",
                        "IsReconciled": False,
                        "UpdatedDateUTC": t["CreatedDateUTC"],
                    }
                )
        return legs

    def _render_transfer(self, t: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy({k: v for k, v in t.items() if k != "CreatedDateUTC"})
        out["DateString"] = t["Date"].isoformat() + "T00:00:00"
        out["CreatedDateUTC"] = f"/Date({int(t['CreatedDateUTC'].timestamp() * 1000)}+0000)/"
        return out

    # -- history and notes --

    def _system_note(self, object_id: str, changes: str, details: str) -> None:
        self.history.setdefault(object_id, []).append(
            {"Changes": changes, "User": "System Generated", "Details": details, "DateUTC": self.now()}
        )

    def _history(self, method: str, object_id: str, body: Any) -> tuple[int, dict, Any]:
        known = any(p["PaymentID"] == object_id for p in self.payments) or any(
            b["BatchPaymentID"] == object_id for b in self.batches
        )
        if not known:
            raise Reject(404, f"no payment or batch payment {object_id}", violation=False)
        if method == "PUT":
            records = (body or {}).get("HistoryRecords") or []
            if not records or not all(str(r.get("Details") or "").strip() for r in records):
                return validation_error("A history note needs Details")
            made = [
                {"Changes": "Note", "User": "Cashloop", "Details": str(r["Details"]), "DateUTC": self.now()}
                for r in records
            ]
            self.history.setdefault(object_id, []).extend(made)
            return 200, {}, self._envelope("HistoryRecords", [self._render_note(r) for r in made])
        records = self.history.get(object_id, [])
        return 200, {}, self._envelope("HistoryRecords", [self._render_note(r) for r in records])

    def _render_note(self, r: dict[str, Any]) -> dict[str, Any]:
        return {
            "Changes": r["Changes"],
            "DateUTCString": r["DateUTC"].strftime("%Y-%m-%dT%H:%M:%S"),
            "DateUTC": f"/Date({int(r['DateUTC'].timestamp() * 1000)}+0000)/",
            "User": r["User"],
            "Details": r["Details"],
        }

    # -- rendering (what Xero sends back) --

    def _render_invoice(self, inv: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(inv)
        out["DateString"] = inv["Date"].isoformat() + "T00:00:00"
        out["DueDateString"] = inv["DueDate"].isoformat() + "T00:00:00"
        out["UpdatedDateUTC"] = f"/Date({int(inv['UpdatedDateUTC'].timestamp() * 1000)}+0000)/"
        out["Payments"] = [
            {
                "PaymentID": p["PaymentID"],
                "Date": p["Date"],
                "Amount": p["Amount"],
                "Reference": p["Reference"],
            }
            for p in self.live_payments()
            if p["InvoiceID"] == inv["InvoiceID"]
        ]
        return out

    def _invoice_stub(self, invoice_id: str) -> dict[str, Any]:
        inv = next(i for i in self.invoices if i["InvoiceID"] == invoice_id)
        return {
            "InvoiceID": inv["InvoiceID"],
            "InvoiceNumber": inv["InvoiceNumber"],
            "Type": inv["Type"],
            "CurrencyCode": inv["CurrencyCode"],
            "Contact": dict(inv["Contact"]),
            "AmountDue": inv["AmountDue"],
            "Status": inv["Status"],
        }

    def _render_payment(self, p: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in p.items() if k not in ("InvoiceID", "UpdatedDateUTC")}
        out["Invoice"] = self._invoice_stub(p["InvoiceID"])
        out["BankAmount"] = p["Amount"]
        out["UpdatedDateUTC"] = f"/Date({int(p['UpdatedDateUTC'].timestamp() * 1000)}+0000)/"
        return out

    def _render_batch(self, b: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in b.items() if k not in ("PaymentIDs", "UpdatedDateUTC")}
        out["DateString"] = b["Date"].isoformat() + "T00:00:00"
        out["Payments"] = [
            {
                "PaymentID": p["PaymentID"],
                "Amount": p["Amount"],
                "BankAmount": p["Amount"],
                "Invoice": self._invoice_stub(p["InvoiceID"]),
            }
            for p in self.payments
            if p["PaymentID"] in b["PaymentIDs"]
        ]
        out["UpdatedDateUTC"] = f"/Date({int(b['UpdatedDateUTC'].timestamp() * 1000)}+0000)/"
        return out

    def _render_txn(self, t: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy({k: v for k, v in t.items() if k != "UpdatedDateUTC"})
        out["DateString"] = t["Date"].isoformat() + "T00:00:00"
        out["UpdatedDateUTC"] = f"/Date({int(t['UpdatedDateUTC'].timestamp() * 1000)}+0000)/"
        return out


_LISTS = frozenset({"/Invoices", "/Contacts", "/Payments", "/BatchPayments", "/BankTransactions"})


@dataclass
class Wired:
    """A Xero connector on a fake, with everything a test looks at."""

    xero: Any  # sync.accounting.xero.Xero
    vault: Any  # tests.fakes.oauth_vault.MemoryVault
    http_sleeps: list[float]
    limiter: Any  # sync.accounting.xero_limits.RateLimiter


def wire(fake: XeroFake, clock: Any, *, timeout: float = 5.0, max_retries: int = 2, **settings: Any) -> Wired:
    """Build `Xero` against `fake`: tokens from a completed connect flow in a MemoryVault, an
    HttpClient whose sleeps are recorded (not slept), and a limiter on the fake's clock whose
    waits move that clock (so a test of the 60-a-minute limit runs at once)."""
    from app.config import Secret, XeroSettings
    from sync.accounting.oauth import OAuthClient, RefreshingTokens, TokenSet
    from sync.accounting.xero import Xero
    from sync.accounting.xero_limits import RateLimiter
    from sync.http import HttpClient
    from tests.fakes.oauth_vault import MemoryVault

    config = XeroSettings(
        **{
            "client_id": fake.client_id,
            "client_secret": Secret(fake.client_secret),
            "api_base": fake.api_base,
            "connections_url": fake.connections_url,
            "token_url": fake.token_url,
            "authorize_url": fake.base_url + "/identity/connect/authorize",
            "clearing_account": "090",
            "bank_account": "091",
            "fee_account": "404",
            "surcharge_account": "260",
            **settings,
        }
    )
    sleeps: list[float] = []
    http = HttpClient(timeout=timeout, max_retries=max_retries, sleep=sleeps.append)
    oauth = OAuthClient(
        authorize_url=config.authorize_url,
        token_url=config.token_url,
        client_id=config.client_id,
        client_secret=str(config.client_secret),
        scope="offline_access accounting.transactions",
        http=http,
        clock=clock,
    )
    granted = fake.grant()
    vault = MemoryVault(
        TokenSet(
            access_token=granted["access_token"],
            refresh_token=granted["refresh_token"],
            expires_at=clock.utc_now() + timedelta(seconds=granted["expires_in"]),
            tenant_id=fake.tenant_id,
            tenant_name=fake.tenant_name,
        )
    )
    limiter = RateLimiter(
        now=lambda: clock.utc_now().timestamp(), sleep=lambda s: clock.advance(timedelta(seconds=s))
    )
    tokens = RefreshingTokens(oauth, vault, clock)
    return Wired(Xero(config, tokens, http, clock, limiter=limiter), vault, sleeps, limiter)
