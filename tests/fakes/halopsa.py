"""A HaloPSA fake on loopback: the OAuth2 token endpoint and the resource server, checking every API
request against tests/specs/halopsa-subset.json.

`/auth/token` takes the client-credentials form (the token endpoint is not in the spec: the
shape follows API_NOTES section 4) and hands out bearer tokens that expire after `token_seconds`
of the fake's `now()`. `/api/...` requests must carry a live token and fit the spec: the
operation exists, query parameters are declared and typed (Halo's own "int", "bool",
"List<int>"), `order` names a field of the listed schema, bodies fit their schema. Lists page with
`pageinate/page_size/page_no` into `{page_no, page_size, record_count, <plural>}`. A violation is
recorded in `fake.violations` and answered 400; `fail_next()` injects 429/503/401 and friends.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes._spec import Failure, Failures, LoopbackServer, Reject, Spec
from tests.fakes.connectwise import Rewrites, spec_path

# list path -> (table attribute, envelope key, schema of one record)
LISTS = {
    "/Invoice": ("invoices", "invoices", "InvoiceHeader"),
    "/Client": ("clients", "clients", "Area"),
    "/Users": ("users", "users", "Users"),
    "/InvoicePayment": ("payments", "payments", "InvoicePayment_List"),
}
# Filters the fake evaluates (others it accepts, as declared, and ignores).
_FILTERS = {"client_id": "client_id", "invoice_id": "invoice_id"}


def halo_time(dt: datetime) -> str:
    """Halo writes UTC times without an offset."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Seen:
    method: str
    path: str  # relative to /api (or /auth/token)
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


class HaloFake:
    """`with HaloFake() as halo:`; point base_url at `halo.base_url` (the auth URL is derived from it)."""

    def __init__(
        self,
        *,
        client_id: str = "halo-client-fake-0001",
        client_secret: str = "halo-secret-fake-0001",  # noqa: S107 - the fake's own test credential
        tenant: str = "fakemsp",
        token_seconds: int = 3600,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.client_id, self.client_secret, self.tenant = client_id, client_secret, tenant
        self.token_seconds = token_seconds
        self.now = now or (lambda: datetime.now(UTC))
        self.spec = Spec(spec_path("halopsa-subset.json"))
        self.invoices: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.payments: list[dict[str, Any]] = []
        self.tokens: dict[str, datetime] = {}
        self.violations: list[str] = []
        self.requests: list[Seen] = []
        self.failures = Failures()
        self.rewrites = Rewrites()
        self._next_id = 7_000_000
        self._lock = threading.RLock()
        self._server = LoopbackServer(self.handle)
        self._port = 0

    # ---- lifecycle and knobs --------------------------------------------------------------------

    def start(self) -> HaloFake:
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

    def __enter__(self) -> HaloFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api"

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
        """The next `times` API requests (optionally only `method` / paths starting with `path`) get
        `status`; with `after=True` the request is carried out and only its response is lost."""
        self.failures.add(Failure(status, retry_after, times, method, path, after))

    def add(self, table: str, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            stored = copy.deepcopy(record)
            stored.setdefault("id", self._new_id())
            getattr(self, table).append(stored)
            return stored

    def touch(self, record: dict[str, Any], **changes: Any) -> None:
        """An edit in Halo: new values and a new last_modified."""
        with self._lock:
            record.update(changes)
            record["last_modified"] = halo_time(self.now())

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
        query = {k: v[0] for k, v in raw_query.items()}
        with self._lock:
            try:
                if url.path == "/auth/token":
                    self.requests.append(Seen(method, "/auth/token", query, headers))
                    return self._token(method, query, headers, body)
                if not url.path.startswith("/api/"):
                    raise Reject(404, f"{url.path} is neither /auth nor /api")
                path = url.path[len("/api") :]
                seen = Seen(method, path, query, headers)
                self.requests.append(seen)
                template, op, params = self.spec.operation(method, path)
                self.spec.check_query(op, raw_query)
                if method == "POST":
                    seen.body = self.spec.check_body(op, headers, body)
                self._check_token(headers)
                failure = self.failures.take(method, path)
                if failure is not None and not failure.after:
                    wait = (
                        {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
                    )
                    return failure.status, wait, {"ClassName": "Error", "Message": f"fake {failure.status}"}
                answer = self._route(method, template, params, query, seen.body)
                if failure is not None:  # carried out; the response is lost
                    return failure.status, {}, {"Message": f"fake {failure.status}"}
                return answer
            except Reject as exc:
                if exc.violation:
                    self.violations.append(f"{method} {url.path}: {exc}")
                return exc.status, {}, {"ClassName": "Error", "Message": str(exc)}

    def _token(
        self, method: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, Any]:
        if method != "POST":
            raise Reject(405, "the token endpoint takes POST")
        if "application/x-www-form-urlencoded" not in headers.get("content-type", ""):
            raise Reject(400, "the token request must be form-encoded")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        missing = [k for k in ("grant_type", "client_id", "client_secret", "scope") if not form.get(k)]
        if missing:
            raise Reject(400, f"token request without {', '.join(missing)}")
        if form["grant_type"] != "client_credentials":
            raise Reject(400, f"unsupported grant_type {form['grant_type']!r}")
        if self.tenant and query.get("tenant") != self.tenant:
            raise Reject(400, f"the token request must name ?tenant={self.tenant}")
        failure = self.failures.take("POST", "/auth/token")
        if failure is not None:
            wait = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            return failure.status, wait, {"error": "fake"}
        if (form["client_id"], form["client_secret"]) != (self.client_id, self.client_secret):
            return 401, {}, {"error": "invalid_client"}
        token = secrets.token_urlsafe(16)
        self.tokens[token] = self.now() + timedelta(seconds=self.token_seconds)
        return (
            200,
            {},
            {
                "token_type": "Bearer",
                "access_token": token,
                "expires_in": self.token_seconds,
                "scope": form["scope"],
            },
        )

    def _check_token(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise Reject(401, "missing bearer token", violation=False)
        expires = self.tokens.get(auth[len("Bearer ") :])
        if expires is None or self.now() >= expires:
            raise Reject(401, "token expired or unknown", violation=False)

    def _route(
        self, method: str, template: str, params: dict[str, str], query: dict[str, str], body: Any
    ) -> tuple[int, dict, Any]:
        if method == "GET" and template in LISTS:
            return self._list(template, query)
        if method == "GET" and template == "/Invoice/{id}":
            found = next((i for i in self.invoices if i["id"] == int(params["id"])), None)
            if found is None:
                raise Reject(404, f"invoice {params['id']} not found", violation=False)
            answer = copy.deepcopy(found)
            if query.get("includedetails") != "true":
                # The spec offers includedetails on this GET; the stricter reading is that the
                # lines come only with it, so a client that leaves it out gets none.
                answer.pop("lines", None)
            return 200, {}, answer
        if method == "POST" and template == "/InvoicePayment":
            created = [self._post_payment(p) for p in body]
            return 201, {}, created[0] if len(created) == 1 else created
        raise Reject(501, f"the fake does not implement {method} {template}", violation=False)

    def _list(self, template: str, query: dict[str, str]) -> tuple[int, dict, Any]:
        table, key, schema = LISTS[template]
        rows = [
            r
            for r in getattr(self, table)
            if all(str(r.get(field)) == query[param] for param, field in _FILTERS.items() if param in query)
        ]
        order = query.get("order")
        if order is not None:
            if order not in self.spec.schema(schema).get("properties", {}):
                raise Reject(400, f"order: {order!r} is not a field of {schema}")
            descending = query.get("orderdesc") == "true"
            rows.sort(
                key=lambda r: (r.get(order) is not None, r.get(order) or 0, r["id"]), reverse=descending
            )
        if query.get("pageinate") == "true":
            if "page_size" not in query or "page_no" not in query:
                raise Reject(400, "pageinate=true needs page_size and page_no")
            size, number = int(query["page_size"]), int(query["page_no"])
            if size < 1 or number < 1:
                raise Reject(400, "page_size and page_no start at 1")
            page = rows[(number - 1) * size : number * size]
        else:
            size, number, page = len(rows), 1, rows
        if query.get("idonly") == "true":
            out = [{"id": r["id"]} for r in page]
        else:
            out = [copy.deepcopy(r) for r in page]
            if template == "/Invoice" and query.get("includelines") != "true":
                for r in out:
                    r.pop("lines", None)
        return 200, {}, {"page_no": number, "page_size": size, "record_count": len(rows), key: out}

    def _post_payment(self, item: dict[str, Any]) -> dict[str, Any]:
        invoice = next((i for i in self.invoices if i["id"] == item.get("invoice_id")), None)
        if invoice is None:
            raise Reject(400, f"invoice {item.get('invoice_id')} not found", violation=False)
        amount = Decimal(str(item.get("amount")))
        due = Decimal(str(invoice.get("amountdue", invoice.get("total", 0))))
        if amount <= 0 or amount > due:
            raise Reject(400, f"amount {amount} must be between 0 and the amount due {due}", violation=False)
        invoice["amountpaid"] = float(Decimal(str(invoice.get("amountpaid") or 0)) + amount)
        invoice["amountdue"] = float(due - amount)
        invoice["last_modified"] = halo_time(self.now())
        payment = {
            "id": self._new_id(),
            "invoice_id": invoice["id"],
            "amount": float(amount),
            "date": item.get("date"),
            "thirdpartyid": item.get("thirdpartyid"),
            "client_id": invoice.get("client_id"),
        }
        self.payments.append(payment)
        return payment
