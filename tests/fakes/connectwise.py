"""A ConnectWise PSA REST 3.0 fake on loopback that checks every request against the shared spec.

State lives in Python lists (add_company / add_contact / add_invoice). Every request is checked
against tests/specs/connectwise-psa-subset.json: the operation must exist, query parameters must
be declared (or be a documented query convention on a GET), clientId / Basic `company+public` /
versioned Accept headers must be present, and request bodies must fit the schema. A violation is
appended to `fake.violations` and answered 400 with a CW-style error body, so tests assert
`fake.violations == []`. `fail_next()` injects 429/503/401 and friends; `rewrite_next()` replaces one
answer's bytes with what a real server may send and json.dumps never writes.
"""

from __future__ import annotations

import base64
import bisect
import copy
import itertools
import json
import operator
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

API_PREFIX = "/v4_6_release/apis/3.0"
CONVENTION_PARAMS = frozenset(
    {
        "conditions",
        "childConditions",
        "customFieldConditions",
        "orderBy",
        "fields",
        "page",
        "pageSize",
        "pageId",
    }
)
_LISTS = {"/company/companies": "companies", "/company/contacts": "contacts", "/finance/invoices": "invoices"}
_CLAUSE = re.compile(
    r"""\s*(?P<field>[A-Za-z_][\w/]*)\s*(?P<op>!=|<=|>=|=|<|>|contains\b|like\b)\s*
                         (?P<value>\[[^\]]*\]|"(?:[^"\\]|\\.)*"|[^\s()]+)\s*""",
    re.X | re.I,
)


def spec_path(name: str = "connectwise-psa-subset.json") -> Path:
    """A vendor spec from tests/specs (or $CASHLOOP_SPECS); missing is an error, never a skip."""
    folder = Path(os.environ.get("CASHLOOP_SPECS") or Path(__file__).resolve().parents[1] / "specs")
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"vendor spec {path} is missing: the fakes cannot check requests without it")
    return path


def cw_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reject(Exception):
    def __init__(self, status: int, code: str, message: str, *, violation: bool = True) -> None:
        super().__init__(message)
        self.status, self.code, self.violation = status, code, violation


@dataclass
class Seen:
    method: str
    path: str  # relative to the API base, e.g. /finance/invoices
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class _Failure:
    status: int
    retry_after: float | None
    times: int
    body: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    path: str | None = None
    after: bool = False

    def applies(self, method: str, path: str) -> bool:
        return self.method in (None, method) and (self.path is None or path.startswith(self.path))


Answer = tuple[int, dict[str, str], Any]


@dataclass
class _Rewrite:
    path: str  # the end of the URL path it applies to
    edit: Callable[[bytes], bytes]
    content_type: str | None


class Rewrites:
    """`rewrite_next` for a fake: the next 200 answer to a path ending in `path` goes out as
    `edit(body)` (a byte order mark, another charset, bytes that are not UTF-8, nesting past
    Python's recursion limit, duplicate keys), optionally under another Content-Type."""

    def __init__(self) -> None:
        self._items: list[_Rewrite] = []
        self._lock = threading.Lock()

    def add(self, path: str, edit: Callable[[bytes], bytes], content_type: str | None = None) -> None:
        with self._lock:
            self._items.append(_Rewrite(path, edit, content_type))

    def apply(self, url_path: str, answer: Answer) -> Answer:
        status, extra, payload = answer
        if status != 200:
            return answer
        with self._lock:
            found = next((r for r in self._items if url_path.endswith(r.path)), None)
            if found is None:
                return answer
            self._items.remove(found)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if found.content_type:
            extra = {**extra, "Content-Type": found.content_type}
        return status, extra, found.edit(data)


class ConnectWiseFake:
    """Start with `with ConnectWiseFake() as cw:` or start()/stop(); point `base_url` at `cw.base_url`."""

    def __init__(
        self,
        *,
        company_id: str = "cwfake",
        public_key: str = "pub-fake-0001",
        private_key: str = "priv-fake-0001",
        client_id: str = "00000000-0000-4000-8000-00000000fake",
        now: Callable[[], datetime] | None = None,
        spec: Path | None = None,
    ) -> None:
        self.credentials = (f"{company_id}+{public_key}", private_key)
        self.client_id = client_id
        self.now = now or (lambda: datetime.now(UTC))
        self.spec = json.loads((spec or spec_path()).read_text(encoding="utf-8"))
        self._schemas = self.spec["components"]["schemas"]
        self._ops = [
            (re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p) + "$"), p, ops)
            for p, ops in sorted(self.spec["paths"].items(), key=lambda kv: kv[0].count("{"))
        ]
        self.companies: list[dict[str, Any]] = []
        self.contacts: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.payments: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.requests: list[Seen] = []
        self._failures: list[_Failure] = []
        self.rewrites = Rewrites()
        self._next_id = 1_000_000
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.latency = 0.0  # seconds every answer takes, as a real PSA's would
        # Or, when set, the seconds this request's answer takes (method, path): a PSA that slows down
        self.pace: Callable[[str, str], float] | None = None

    # ---- lifecycle and knobs --------------------------------------------------------------------

    def start(self) -> ConnectWiseFake:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ConnectWiseFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PREFIX}"

    def fail_next(
        self,
        status: int,
        retry_after: float | None = None,
        times: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
    ) -> None:
        """The next `times` requests (optionally only `method` / paths starting with `path`) get `status`.

        Checks still run first. With `after=True` the request is carried out and only its response
        is replaced: a lost response after CW committed the change.
        """
        code = {401: "Unauthorized", 403: "Forbidden", 429: "TooManyRequests"}.get(status, "ServerError")
        with self._lock:
            body = {"code": code, "message": f"fake {status}"}
            self._failures.append(_Failure(status, retry_after, times, body, method, path, after))

    def rewrite_next(
        self, path: str, edit: Callable[[bytes], bytes], *, content_type: str | None = None
    ) -> None:
        """The next 200 answer to `path` (relative to the API base) goes out as `edit(body)`."""
        self.rewrites.add(path, edit, content_type)

    def add_company(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._add(self.companies, record)

    def add_contact(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._add(self.contacts, record)

    def add_invoice(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._add(self.invoices, record)

    def touch(self, record: dict[str, Any], when: datetime | None = None, **changes: Any) -> None:
        """Change a stored record the way an edit in CW would: new values and a new lastUpdated."""
        with self._lock:
            record.update(changes)
            record.setdefault("_info", {})["lastUpdated"] = cw_time(when or self.now())

    def _add(self, table: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            stored = copy.deepcopy(record)
            if "id" not in stored:
                stored["id"] = self._new_id()
            stored.setdefault("_info", {}).setdefault("lastUpdated", cw_time(self.now()))
            table.append(stored)
            return stored

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ---- request handling -----------------------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(target)
        raw_query = parse_qs(url.query, keep_blank_values=True)
        query = {k: v[0] for k, v in raw_query.items()}
        path = url.path[len(API_PREFIX) :] if url.path.startswith(API_PREFIX) else url.path
        seen = Seen(method, path, query, headers)
        with self._lock:
            self.requests.append(seen)
            try:
                if not url.path.startswith(API_PREFIX):
                    raise Reject(404, "NotFound", f"{url.path} is not under {API_PREFIX}")
                template, op, params = self._operation(method, path)
                self._check_headers(headers)
                self._check_query(method, op, raw_query)
                if method in ("POST", "PUT", "PATCH"):
                    seen.body = self._check_body(op, headers, body)
                self._check_credentials(headers)
                failure = next((f for f in self._failures if f.applies(method, path)), None)
                if failure is None:
                    answer = self._route(method, template, params, query, headers, seen.body)
                    return self.rewrites.apply(path, answer)
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                if failure.after:
                    self._route(method, template, params, query, headers, seen.body)
                wait = failure.retry_after
                extra = {"Retry-After": f"{wait:g}"} if wait is not None else {}
                return failure.status, extra, failure.body
            except Reject as exc:
                if exc.violation:
                    self.violations.append(f"{method} {path}: {exc}")
                return exc.status, {}, {"code": exc.code, "message": str(exc), "errors": None}

    def _operation(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        for regex, template, ops in self._ops:
            match = regex.match(path)
            if match and method.lower() in ops:
                op = ops[method.lower()]
                for p in op.get("parameters", []):
                    if (
                        p["in"] == "path"
                        and p["schema"].get("type") == "integer"
                        and not match.group(p["name"]).isdigit()
                    ):
                        raise Reject(400, "InvalidObject", f"path parameter {p['name']} must be an integer")
                return template, op, match.groupdict()
        raise Reject(400, "InvalidObject", f"no operation {method} {path} in the spec")

    def _check_headers(self, headers: dict[str, str]) -> None:
        if not headers.get("clientid"):
            raise Reject(400, "InvalidObject", "missing clientId header")
        accept = headers.get("accept", "")
        if "application/vnd.connectwise.com+json" not in accept or "version=" not in accept:
            raise Reject(400, "InvalidObject", f"Accept must pin a version, got {accept!r}")
        auth = headers.get("authorization", "")
        if not auth.startswith("Basic "):
            raise Reject(400, "InvalidObject", "missing Basic authorization")
        try:
            user, _, _ = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            raise Reject(400, "InvalidObject", "undecodable Basic authorization") from None
        if "+" not in user:
            raise Reject(400, "InvalidObject", "Basic user must be companyId+publicKey")

    def _check_credentials(self, headers: dict[str, str]) -> None:
        user, _, password = base64.b64decode(headers["authorization"][6:]).decode().partition(":")
        if (user, password) != self.credentials or headers.get("clientid") != self.client_id:
            raise Reject(401, "Unauthorized", "invalid credentials", violation=False)

    def _check_query(self, method: str, op: dict[str, Any], query: dict[str, list[str]]) -> None:
        declared = {p["name"]: p["schema"] for p in op.get("parameters", []) if p["in"] == "query"}
        for name, values in query.items():
            if name not in declared and not (method == "GET" and name in CONVENTION_PARAMS):
                raise Reject(400, "InvalidObject", f"query parameter {name!r} is not declared")
            if len(values) > 1:
                raise Reject(400, "InvalidObject", f"query parameter {name!r} given {len(values)} times")
            paging = name in ("page", "pageSize", "pageId")
            schema = declared.get(name, {"type": "integer" if paging else "string"})
            if schema.get("type") == "integer" and not values[0].isdigit():
                raise Reject(400, "InvalidObject", f"{name} must be an integer, got {values[0]!r}")
        if int(query.get("pageSize", ["25"])[0]) > 1000:
            raise Reject(400, "InvalidObject", "pageSize may not exceed 1000")
        if int(query.get("page", ["1"])[0]) < 1:
            raise Reject(400, "InvalidObject", "page starts at 1")

    def _check_body(self, op: dict[str, Any], headers: dict[str, str], body: bytes) -> Any:
        if "application/json" not in headers.get("content-type", ""):
            raise Reject(400, "InvalidObject", "request body must be application/json")
        try:
            data = json.loads(body, parse_float=Decimal)  # Decimal keeps the literal for type checks
        except ValueError:
            raise Reject(400, "InvalidObject", "request body is not JSON") from None
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        problems: list[str] = []
        self._validate(data, schema, "body", problems)
        if problems:
            raise Reject(400, "InvalidObject", "; ".join(problems))
        return data

    def _validate(self, value: Any, schema: dict[str, Any], where: str, problems: list[str]) -> None:
        if "$ref" in schema:
            schema = self._schemas[schema["$ref"].rsplit("/", 1)[1]]
        if value is None:
            if not schema.get("nullable") and schema.get("type") not in (None, "object"):
                problems.append(f"{where} may not be null")
            return
        kind = schema.get("type", "object")
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | Decimal) and not isinstance(value, bool),
            "array": isinstance(value, list),
            "object": isinstance(value, dict),
        }[kind]
        if not ok:
            problems.append(f"{where} must be {kind}, got {type(value).__name__}")
            return
        if kind == "string":
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                problems.append(f"{where} longer than {schema['maxLength']}")
            if schema.get("format") == "date-time" and not ("T" in value and _parses(value)):
                problems.append(f"{where} is not a date-time")
            if "enum" in schema and value not in schema["enum"]:
                problems.append(f"{where} must be one of {schema['enum']}")
        elif kind == "array":
            for i, item in enumerate(value):
                self._validate(item, schema.get("items", {}), f"{where}[{i}]", problems)
        elif kind == "object" and "properties" in schema:
            for key, item in value.items():
                if key not in schema["properties"]:
                    problems.append(f"{where}.{key} is not a field of the schema")
                else:
                    self._validate(item, schema["properties"][key], f"{where}.{key}", problems)
            problems.extend(f"{where}.{k} is required" for k in schema.get("required", []) if k not in value)

    # ---- the implemented operations -------------------------------------------------------------

    def _route(
        self,
        method: str,
        template: str,
        params: dict[str, str],
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
    ) -> tuple[int, dict[str, str], Any]:
        if method == "GET" and template in _LISTS:
            return self._list(template, getattr(self, _LISTS[template]), query, headers)
        if method == "GET" and template.removesuffix("/count") in _LISTS:
            listed = template.removesuffix("/count")
            schema = {"companies": "Company", "contacts": "Contact", "invoices": "Invoice"}[_LISTS[listed]]
            clauses = _parse_conditions(query.get("conditions", ""), self._schemas[schema]["properties"])
            return 200, {}, {"count": len(_filter(getattr(self, _LISTS[listed]), clauses))}
        if method == "GET" and template == "/finance/invoices/{id}":
            return 200, {}, self._invoice(int(params["id"]))
        if template == "/finance/invoices/{parentId}/payments":
            invoice = self._invoice(int(params["parentId"]))
            if method == "GET":
                rows = [p for p in self.payments if p["invoice"]["id"] == invoice["id"]]
                return self._list(template, rows, query, headers, schema="InvoicePayment")
            return 201, {}, self._post_payment(invoice, body)
        raise Reject(501, "NotImplemented", f"the fake does not implement {method} {template}")

    def _invoice(self, invoice_id: int) -> dict[str, Any]:
        for invoice in self.invoices:
            if invoice["id"] == invoice_id:
                return invoice
        raise Reject(404, "NotFound", f"Invoice {invoice_id} not found", violation=False)

    def _post_payment(self, invoice: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in ("amount", "paymentDate", "type") if body.get(k) in (None, "")]
        if missing:
            raise Reject(400, "InvalidObject", f"missing {', '.join(missing)}", violation=False)
        amount = Decimal(body["amount"])
        balance = _dec(invoice.get("total")) - _dec(invoice.get("payments")) - _dec(invoice.get("credits"))
        if amount <= 0 or amount > balance:
            raise Reject(
                400,
                "InvalidObject",
                f"amount {amount} must be between 0 and the balance {balance}",
                violation=False,
            )
        paid = _dec(invoice.get("payments")) + amount
        invoice["payments"] = float(paid)  # CW sends doubles; the arithmetic above stayed in Decimal
        invoice["balance"] = float(balance - amount)
        invoice.setdefault("_info", {})["lastUpdated"] = cw_time(self.now())
        payment = {
            "id": self._new_id(),
            "type": body["type"],
            "source": body.get("source", ""),
            "invoice": {"id": invoice["id"], "identifier": invoice.get("invoiceNumber")},
            "amount": float(amount),
            "paymentDate": body["paymentDate"],
            "appliedBy": "fakeapi",
            "invoiceBalance": invoice["balance"],
            "invoiceTotal": invoice.get("total"),
            "_info": {"lastUpdated": cw_time(self.now()), "updatedBy": "fakeapi"},
        }
        self.payments.append(payment)
        return payment

    def _list(
        self,
        template: str,
        rows: list[dict[str, Any]],
        query: dict[str, str],
        headers: dict[str, str],
        schema: str | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        schema = (
            schema or {"companies": "Company", "contacts": "Contact", "invoices": "Invoice"}[_LISTS[template]]
        )
        props = self._schemas[schema]["properties"]
        clauses = _parse_conditions(query.get("conditions", ""), props)
        order = _parse_order(query.get("orderBy", ""), props)
        picked = _keyset(rows, clauses) if order == [("id", False)] else None
        if picked is None:
            picked = _filter(rows, clauses)
            for key, descending in reversed(order):
                picked.sort(key=lambda r, k=key: _sort_key(_get(r, k)), reverse=descending)
        size = int(query.get("pageSize", "25"))
        link_query = {k: v for k, v in query.items() if k not in ("page", "pageId")}
        if headers.get("pagination-type") == "forward-only":
            after = int(query.get("pageId", "0"))
            picked = sorted((r for r in picked if r["id"] > after), key=lambda r: r["id"])
            page, more = picked[:size], len(picked) > size
            links = []
            if more:
                links = [(f"{{base}}?{urlencode({**link_query, 'pageId': page[-1]['id']})}", "next")]
        else:
            number = int(query.get("page", "1"))
            last = max(1, -(-len(picked) // size))
            page = picked[(number - 1) * size : number * size]
            links = []
            if number < last:
                links = [
                    (f"{{base}}?{urlencode({**link_query, 'page': number + 1})}", "next"),
                    (f"{{base}}?{urlencode({**link_query, 'page': last})}", "last"),
                ]
        fields = [f.strip() for f in query.get("fields", "").split(",") if f.strip()]
        # Serialised here, under the fake's lock: the response is a snapshot even if a test edits a
        # record while it is being sent (and a 1,000-record page costs no deep copy).
        body = json.dumps([_pick(r, fields) for r in page] if fields else page).encode()
        base = self.base_url + template
        header = ", ".join(f'<{url.format(base=base)}>; rel="{rel}"' for url, rel in links)
        return 200, ({"Link": header} if header else {}), body


class _Handler(BaseHTTPRequestHandler):
    fake: ConnectWiseFake
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY every response waits out the
    # client's delayed ACK (~40 ms), which a real server does not make anyone wait.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        wait = self.fake.pace(self.command, self.path) if self.fake.pace else self.fake.latency
        if wait:
            time.sleep(wait)
        status, extra, payload = self.fake.handle(self.command, self.path, headers, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", extra.get("Content-Type", "application/json; charset=utf-8"))
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            if key != "Content-Type":
                self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


# ---- conditions / orderBy / fields (the subset our client uses, strictly parsed) ------------------


def _parse_conditions(text: str, props: dict[str, Any]) -> list[tuple[str, str, Any]]:
    clauses, pos = [], 0
    while text.strip() and pos < len(text):
        match = _CLAUSE.match(text, pos)
        if not match:
            raise Reject(400, "InvalidObject", f"cannot parse conditions at {text[pos:]!r} (fake: and-only)")
        key = match["field"]
        if key != "lastUpdated" and key.split("/")[0] not in props:
            raise Reject(400, "InvalidObject", f"conditions: unknown field {key!r}")
        clauses.append((key, match["op"].lower(), _literal(match["value"])))
        pos = match.end()
        joiner = re.compile(r"and\s+", re.I).match(text, pos)
        if joiner:
            pos = joiner.end()
        elif pos < len(text):
            raise Reject(400, "InvalidObject", f"conditions: the fake supports only 'and', at {text[pos:]!r}")
    return clauses


def _literal(token: str) -> Any:
    if token.startswith("["):
        try:
            return datetime.fromisoformat(token[1:-1].replace("Z", "+00:00"))
        except ValueError:
            raise Reject(400, "InvalidObject", f"conditions: bad date {token}") from None
    if token.startswith('"'):
        return token[1:-1].replace('\\"', '"')
    lowered = token.lower()
    if lowered in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[lowered]
    try:
        return Decimal(token)
    except InvalidOperation:
        raise Reject(400, "InvalidObject", f"conditions: bad value {token!r}") from None


_TEXT_OPS: dict[str, Callable[[str, str], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _filter(rows: list[dict[str, Any]], clauses: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    """The rows every clause holds for; a `lastUpdated` bound is compared as CW's text, once
    converted (an indexed server answers that in milliseconds: the fake is not to be the slow part
    of an idle poll)."""
    if not clauses:
        return list(rows)
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for key, op, want in clauses:
        if key == "lastUpdated" and isinstance(want, datetime) and want.tzinfo and op in _TEXT_OPS:
            tests.append(_text_bound(op, want))
        else:
            tests.append(lambda r, k=key, o=op, w=want: _compare(_get(r, k), o, w))
    return [r for r in rows if all(t(r) for t in tests)]


def _text_bound(op: str, want: datetime) -> Callable[[dict[str, Any]], bool]:
    text, compare = want.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), _TEXT_OPS[op]

    def test(record: dict[str, Any]) -> bool:
        info = record.get("_info")
        have = info.get("lastUpdated") if isinstance(info, dict) else None
        if type(have) is str and len(have) == 20 and _CW_TIME.fullmatch(have):
            return compare(have, text)
        return _compare(have, op, want)

    return test


_CW_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _keyset(rows: list[dict[str, Any]], clauses: list[tuple[str, str, Any]]) -> list[dict[str, Any]] | None:
    """`orderBy=id asc` over rows already in id order (as CW's index keeps them): an `id >` clause
    is a bisection, not a scan; the other clauses filter what follows. None when rows are unordered."""
    ids = [r.get("id") for r in rows]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or any(
        a >= b for a, b in itertools.pairwise(ids)
    ):
        return None
    start, rest = 0, []
    for clause in clauses:
        key, op, want = clause
        if key == "id" and op in (">", ">=") and isinstance(want, Decimal) and want == int(want):
            bound = int(want)
            found = bisect.bisect_right(ids, bound) if op == ">" else bisect.bisect_left(ids, bound)
            start = max(start, found)
        else:
            rest.append(clause)
    tail = rows[start:]
    return _filter(tail, rest) if rest else tail


def _compare(have: Any, op: str, want: Any) -> bool:
    if want is None or have is None:
        return (op == "=") == (have is want) if op in ("=", "!=") else False
    if isinstance(want, datetime) and want.tzinfo and isinstance(have, str) and _CW_TIME.fullmatch(have):
        # CW's own form, 2025-03-01T12:00:00Z: as text it sorts as it does in time.
        have, want = have, want.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"=": have == want, "!=": have != want, "<": have < want, "<=": have <= want,
                ">": have > want, ">=": have >= want}.get(op, False)
    if isinstance(want, datetime):
        if not _parses(str(have)):
            return False
        have = datetime.fromisoformat(str(have).replace("Z", "+00:00"))
    elif isinstance(want, Decimal):
        have = _dec(have)
    elif isinstance(want, str):
        have, want = str(have).lower(), want.lower()
        if op == "contains":
            return want in have
        if op == "like":
            return re.fullmatch(re.escape(want).replace("%", ".*"), have) is not None
    return {
        "=": have == want,
        "!=": have != want,
        "<": have < want,
        "<=": have <= want,
        ">": have > want,
        ">=": have >= want,
    }.get(op, False)


def _parse_order(text: str, props: dict[str, Any]) -> list[tuple[str, bool]]:
    order = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, direction = part.partition(" ")
        if key.split("/")[0] not in props or direction.strip().lower() not in ("", "asc", "desc"):
            raise Reject(400, "InvalidObject", f"orderBy: cannot sort by {part!r}")
        order.append((key, direction.strip().lower() == "desc"))
    return order


def _get(record: dict[str, Any], key: str) -> Any:
    value: Any = record
    for part in ["_info", "lastUpdated"] if key == "lastUpdated" else key.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _pick(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in fields:
        head, _, rest = key.partition("/")
        if rest and isinstance(record.get(head), dict):
            out.setdefault(head, {})[rest] = record[head].get(rest)
        elif head in record:
            out[head] = copy.deepcopy(record[head])
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value if isinstance(value, int | float | str) else str(value))


def _dec(value: Any) -> Decimal:
    return Decimal(repr(value) if isinstance(value, float) else str(value or 0))


def _parses(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
