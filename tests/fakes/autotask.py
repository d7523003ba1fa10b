"""A Datto Autotask REST v1.0 fake on loopback that checks every request against the shared spec.

Two roots on one server: `/ATServicesRest` answers zone discovery only (as webservices.autotask.net
does), `/<zone>/ATServicesRest` is the API user's zone. Every request is checked against
tests/specs/autotask-rest-subset.json (operation, query parameters, the three auth headers, the
QueryModel body; field names compared without case as Autotask's JSON binding does), and filters
are evaluated strictly: unknown fields or operators, more than 500 records a page, an `in` with
more than 500 values or IncludeFields without `id` over a multi-page result are refused. Query
results come 500 (or MaxRecords) at a time in `{items, pageDetails}` with a `nextPageUrl` that
must be re-POSTed with the very same body. A violation is recorded in `fake.violations` and
answered 400 `{"errors": [...]}`; `fail_next()` injects 429/503/401 and friends.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes._spec import Failure, Failures, LoopbackServer, Reject, Spec
from tests.fakes.connectwise import Rewrites, spec_path

ROOT = "/ATServicesRest"
# Entity path segment -> (table attribute, swagger model)
ENTITIES = {
    "Companies": ("companies", "CompanyModel"),
    "Contacts": ("contacts", "ContactModel"),
    "Invoices": ("invoices", "InvoiceModel"),
    "BillingItems": ("billing_items", "BillingItemModel"),
    "Contracts": ("contracts", "ContractModel"),
    "Currencies": ("currencies", "CurrencyModel"),
}
_OPS = {
    "eq",
    "noteq",
    "gt",
    "gte",
    "lt",
    "lte",
    "beginswith",
    "endswith",
    "contains",
    "exist",
    "notexist",
    "in",
    "notin",
}
MAX_RECORDS = 500


def at_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Seen:
    method: str
    path: str  # relative to the zone's ATServicesRest, e.g. /V1.0/Invoices/query
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


class AutotaskFake:
    """`with AutotaskFake() as at:`; discovery_url = `at.discovery_url` (or zone_url = `at.zone_url`)."""

    def __init__(
        self,
        *,
        username: str = "cashloop-api@fake-msp.example",
        secret: str = "at-secret-fake-0001",  # noqa: S107 - the fake's own test credential
        integration_code: str = "FAKE-TRACKING-0001",
        zone: str = "zone5",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.username, self.secret, self.integration_code = username, secret, integration_code
        self.zone = zone
        self.now = now or (lambda: datetime.now(UTC))
        self.spec = Spec(
            spec_path("autotask-rest-subset.json"), ignore_case=True, lenient=frozenset({"ValueItem"})
        )
        self.companies: list[dict[str, Any]] = []
        self.contacts: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.billing_items: list[dict[str, Any]] = []
        self.contracts: list[dict[str, Any]] = []
        self.currencies: list[dict[str, Any]] = [
            {
                "id": 1,
                "name": "USD",
                "description": "US Dollar",
                "isActive": True,
                "isInternalCurrency": True,
                "exchangeRate": 1.0,
            }
        ]
        self.violations: list[str] = []
        self.requests: list[Seen] = []
        self.failures = Failures()
        self.rewrites = Rewrites()
        self._pages: dict[
            str, tuple[str, bytes, dict[str, Any], int]
        ] = {}  # token -> (entity, body, query, offset)
        self._next_id = 5_000_000
        self._lock = threading.RLock()
        self._server = LoopbackServer(self.handle)
        self._port = 0

    # ---- lifecycle and knobs --------------------------------------------------------------------

    def start(self) -> AutotaskFake:
        self._port = self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def latency(self) -> float:
        """Seconds every answer takes (0: at once)."""
        return self._server.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._server.latency = seconds

    def __enter__(self) -> AutotaskFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def discovery_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{ROOT}"

    @property
    def zone_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/{self.zone}{ROOT}/"

    def fail_next(
        self,
        status: int,
        retry_after: float | None = None,
        times: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next `times` zone requests (optionally only `method` / paths starting with `path`) fail."""
        self.failures.add(Failure(status, retry_after, times, method, path))

    def add(self, table: str, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            stored = copy.deepcopy(record)
            stored.setdefault("id", self._new_id())
            getattr(self, table).append(stored)
            return stored

    def remove_invoice(self, invoice_id: int) -> None:
        with self._lock:
            self.invoices[:] = [i for i in self.invoices if i["id"] != invoice_id]
            self.billing_items[:] = [b for b in self.billing_items if b.get("invoiceID") != invoice_id]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ---- request handling -----------------------------------------------------------------------

    def rewrite_next(self, path: str, edit: Callable[[bytes], bytes]) -> None:
        """The next 200 answer to a path ending in `path` goes out as `edit(body)` (see Rewrites)."""
        self.rewrites.add(path, edit)

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        return self.rewrites.apply(urlsplit(target).path, self._handle(method, target, headers, body))

    def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, Any]:
        url = urlsplit(target)
        raw_query = parse_qs(url.query, keep_blank_values=True)
        zone_root = f"/{self.zone}{ROOT}"
        with self._lock:
            try:
                if url.path.startswith(zone_root + "/"):
                    path = url.path[len(zone_root) :]
                    seen = Seen(method, path, {k: v[0] for k, v in raw_query.items()}, headers)
                    self.requests.append(seen)
                    return self._zone_request(method, path, raw_query, headers, body, seen)
                path = url.path[len(ROOT) :] if url.path.startswith(ROOT + "/") else url.path
                seen = Seen(method, path, {k: v[0] for k, v in raw_query.items()}, headers)
                self.requests.append(seen)
                if path != "/V1.0/ZoneInformation":
                    raise Reject(400, f"{url.path} is not on the API user's zone ({self.zone_url})")
                _, op, _ = self.spec.operation(method, path)
                self.spec.check_query(op, raw_query)
                self.spec.check_headers(op, headers)
                if raw_query["user"][0] != self.username:
                    raise Reject(404, f"no API user {raw_query['user'][0]!r}", violation=False)
                return (
                    200,
                    {},
                    {
                        "zoneName": "Fake Zone",
                        "url": self.zone_url,
                        "webUrl": f"http://127.0.0.1:{self._port}/web/",
                        "ci": 1,
                    },
                )
            except Reject as exc:
                if exc.violation:
                    self.violations.append(f"{method} {url.path}: {exc}")
                return exc.status, {}, {"errors": [str(exc)]}

    def _zone_request(
        self,
        method: str,
        path: str,
        raw_query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        seen: Seen,
    ) -> tuple[int, dict, Any]:
        if path.endswith("/query/next"):  # our own nextPageUrl: not in the spec, but the API's to give
            entity = path.split("/")[2]
            token = (raw_query.get("paging") or [""])[0]
            if token not in self._pages:
                raise Reject(400, "nextPageUrl is not one this fake handed out")
            want_entity, want_body, query, offset = self._pages[token]
            if method != "POST" or entity != want_entity or body != want_body:
                raise Reject(400, "a nextPageUrl must be re-POSTed with the same body as the first page")
            seen.body = query
            self._check_auth(headers)
            return self._answer(method, path, entity, query, offset, body)
        _, op, params = self.spec.operation(method, path)
        self.spec.check_query(op, raw_query)
        self.spec.check_headers(op, headers)
        if method in ("POST", "PUT", "PATCH"):
            seen.body = self.spec.check_body(op, headers, body)
        self._check_auth(headers)
        parts = path.split("/")
        entity = parts[2]
        if entity not in ENTITIES:
            raise Reject(501, f"the fake does not implement {entity}", violation=False)
        if method == "POST" and path.endswith("/query"):
            return self._answer(method, path, entity, seen.body, 0, body)
        if method == "POST" and path.endswith("/query/count"):
            matched = self._matching(entity, seen.body)
            return self._failed_or(method, path, 200, {}, {"queryCount": len(matched)})
        if method == "GET" and "id" in params:
            table, _ = ENTITIES[entity]
            found = next((r for r in getattr(self, table) if r["id"] == int(params["id"])), None)
            return self._failed_or(method, path, 200, {}, {"item": copy.deepcopy(found)})
        raise Reject(501, f"the fake does not implement {method} {path}", violation=False)

    def _check_auth(self, headers: dict[str, str]) -> None:
        given = (headers.get("username"), headers.get("secret"), headers.get("apiintegrationcode"))
        if given != (self.username, self.secret, self.integration_code):
            raise Reject(401, "Unauthorized", violation=False)

    def _failed_or(
        self, method: str, path: str, status: int, extra: dict, payload: Any
    ) -> tuple[int, dict, Any]:
        failure = self.failures.take(method, path)
        if failure is None:
            return status, extra, payload
        wait = _retry_after_header(failure.retry_after)
        return failure.status, wait, {"errors": [f"fake {failure.status}"]}

    def _answer(
        self, method: str, path: str, entity: str, query: dict[str, Any], offset: int, body: bytes
    ) -> tuple[int, dict, Any]:
        failure = self.failures.take(method, path)
        if failure is not None:
            wait = _retry_after_header(failure.retry_after)
            return failure.status, wait, {"errors": [f"fake {failure.status}"]}
        size = _key(query, "MaxRecords") or MAX_RECORDS
        if not isinstance(size, int) or not 1 <= size <= MAX_RECORDS:
            raise Reject(400, f"MaxRecords must be 1-{MAX_RECORDS}, got {size!r}")
        matched = self._matching(entity, query)
        include = _key(query, "IncludeFields")
        if include and len(matched) > size and "id" not in [f.lower() for f in include]:
            raise Reject(400, "IncludeFields must include id when the result has more than one page")
        page = matched[offset : offset + size]
        next_url = None
        if offset + size < len(matched):
            token = secrets.token_urlsafe(8)
            self._pages[token] = (entity, body, query, offset + size)
            next_url = f"{self.zone_url}V1.0/{entity}/query/next?paging={token}"
        items = [self._pick(r, include) for r in page]
        details = {"count": len(items), "requestCount": size, "prevPageUrl": None, "nextPageUrl": next_url}
        return 200, {}, {"items": items, "pageDetails": details}

    def _pick(self, record: dict[str, Any], include: list[str] | None) -> dict[str, Any]:
        if not include:
            return copy.deepcopy(record)
        wanted = {f.lower() for f in include}
        return {k: copy.deepcopy(v) for k, v in record.items() if k.lower() in wanted}

    def _matching(self, entity: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        table, model = ENTITIES[entity]
        filters = _key(query, "filter")
        if not isinstance(filters, list) or not filters:
            raise Reject(400, "a query needs at least one filter item")
        checked = [self._condition(f, model) for f in filters]
        rows = [r for r in getattr(self, table) if all(c(r) for c in checked)]
        return sorted(rows, key=lambda r: r["id"])

    def _condition(self, item: Any, model: str) -> Callable[[dict[str, Any]], bool]:
        if not isinstance(item, dict):
            raise Reject(400, f"filter item {item!r} is not an object")
        op = str(_key(item, "op") or "").lower()
        if op not in _OPS | {"and", "or"}:
            raise Reject(400, f"unknown filter operator {_key(item, 'op')!r}")
        if op in ("and", "or"):
            subs = _key(item, "items")
            if not isinstance(subs, list) or not subs:
                raise Reject(400, f"an {op!r} group needs items")
            if op == "or" and len(subs) > 500:
                raise Reject(400, "more than 500 OR conditions")
            parts = [self._condition(s, model) for s in subs]
            return (
                (lambda r: all(p(r) for p in parts)) if op == "and" else (lambda r: any(p(r) for p in parts))
            )
        name = _key(item, "field")
        if not isinstance(name, str) or self.spec.field_schema(model, name) is None:
            raise Reject(400, f"{model}: unknown filter field {name!r}")
        schema = self.spec.field_schema(model, name) or {}
        value = _key(item, "value")
        if op in ("in", "notin"):
            if not isinstance(value, list) or not value or len(value) > 500:
                raise Reject(400, f"{op} needs a list of 1-500 values, got {value!r}")
            wanted = [_typed(v, schema, name) for v in value]
        elif op not in ("exist", "notexist"):
            if isinstance(value, list | dict) or value is None:
                raise Reject(400, f"{name}: {op} needs one value, got {value!r}")
            want = _typed(value, schema, name)

        def test(record: dict[str, Any]) -> bool:
            have = _field(record, name)
            if op == "exist":
                return have not in (None, "")
            if op == "notexist":
                return have in (None, "")
            if have is None:
                return op == "noteq"
            try:
                have_t = _typed(have, schema, name)
            except Reject:  # a stored value the filter's type cannot hold matches no condition on it
                return False
            if op in ("in", "notin"):
                return (have_t in wanted) == (op == "in")
            if isinstance(want, str) and isinstance(have_t, str):
                h, w = have_t.lower(), want.lower()
                return {
                    "eq": h == w,
                    "noteq": h != w,
                    "beginswith": h.startswith(w),
                    "endswith": h.endswith(w),
                    "contains": w in h,
                    "gt": h > w,
                    "gte": h >= w,
                    "lt": h < w,
                    "lte": h <= w,
                }[op]
            return {
                "eq": have_t == want,
                "noteq": have_t != want,
                "gt": have_t > want,
                "gte": have_t >= want,
                "lt": have_t < want,
                "lte": have_t <= want,
            }.get(op, False)

        return test


def _key(obj: dict[str, Any], name: str) -> Any:
    """A body key, matched without case (Autotask's JSON binding ignores case)."""
    for k, v in obj.items():
        if k.lower() == name.lower():
            return v
    return None


def _field(record: dict[str, Any], name: str) -> Any:
    return _key(record, name)


def _typed(value: Any, schema: dict[str, Any], name: str) -> Any:
    kind = schema.get("type")
    try:
        if schema.get("format") == "date-time":
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "number":
            return Decimal(str(value))
        if kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError
            return value
    except (ValueError, TypeError, ArithmeticError):
        raise Reject(400, f"{name}: {value!r} is not a valid {schema.get('format') or kind}") from None
    return str(value)


def _retry_after_header(value: float | str | None) -> dict[str, str]:
    """A number as delay-seconds; a string as sent (an HTTP-date, or what a confused server writes)."""
    if value is None:
        return {}
    return {"Retry-After": value if isinstance(value, str) else f"{value:g}"}
