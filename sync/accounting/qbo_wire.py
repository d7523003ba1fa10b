"""QuickBooks Online on the wire: URLs, minorversion, the Bearer token, queries, Faults, amounts.

Every call goes to `{api_base}/company/{realmId}/...?minorversion=75` with the current access
token; a 401 refreshes the token once and repeats the call. Amounts travel as JSON numbers
written from exact decimals and are read back with `parse_float=Decimal`, so yen (0 places) and
dinars (3 places) never pass through a float. QBO's Faults reach us through HttpClient as
ConnectorError text (its `Message`); the few we act on are recognised by that text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from app.config import QuickBooksSettings
from app.core.money import Money, MoneyError
from sync.accounting.oauth import RefreshingTokens
from sync.base import AccountingAuthError, ConnectorError
from sync.http import HttpClient

MINOR_VERSION = "75"
PAGE_SIZE = 1000  # QBO's maximum maxresults
REQUEST_ID_MAX = 50  # QBO refuses longer requestid values (36 in batch, which we do not use)
REF_NUM_MAX = 21  # PaymentRefNum and DocNumber hold at most 21 characters
THROTTLE_WAIT = 60.0  # older QBO answered throttling with 403 and no Retry-After


def api_base(settings: QuickBooksSettings) -> str:
    if settings.api_base:
        return settings.api_base.rstrip("/")
    host = "sandbox-quickbooks.api.intuit.com" if settings.environment == "sandbox" else \
        "quickbooks.api.intuit.com"
    return f"https://{host}/v3"


def request_id(key: str, *parts: str) -> str:
    """A requestid unique per (outbox key, what is being sent): 43 characters, within QBO's 50."""
    digest = hashlib.sha256("|".join((key, *parts)).encode()).hexdigest()
    return f"cl-{digest[:40]}"


def literal(value: str) -> str:
    """A quoted string for a QBO query (a quote or backslash inside is escaped with a backslash)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def decimal_of(minor: int, currency: str) -> Decimal:
    return Money(minor, currency).to_decimal()


def minor_of(value: Any, currency: str, what: str) -> int:
    """An amount QBO sent (a Decimal from our parser) in minor units; more places than the currency
    has is an error, not a rounding."""
    try:
        return Money.from_decimal(value if isinstance(value, Decimal) else str(value), currency).amount_minor
    except MoneyError as exc:
        raise ConnectorError(f"QuickBooks sent {what} = {value!r}: {exc}", retryable=False) from exc


def to_json(value: Any) -> str:
    """JSON with Decimals written as exact numbers (the json module would refuse or float them)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def is_stale_object(exc: ConnectorError) -> bool:
    """Fault 5010: the SyncToken we sent is no longer the object's current one."""
    return exc.status == 400 and "stale object" in str(exc).lower()


def is_not_found(exc: ConnectorError) -> bool:
    """Fault 610: the object was deleted (or made inactive)."""
    return exc.status == 400 and "object not found" in str(exc).lower()


class QboApi:
    """One QBO company (realm) reached through the shared HttpClient and the connection's tokens."""

    def __init__(self, settings: QuickBooksSettings, tokens: RefreshingTokens, http: HttpClient) -> None:
        self.base = api_base(settings)
        self._tokens = tokens
        self._http = http

    def get(self, path: str) -> dict[str, Any]:
        return self._send("GET", path, {}, None)

    def post(self, path: str, body: Mapping[str, Any], *, request_id: str) -> dict[str, Any]:
        """Create or update; `request_id` makes QBO answer a repeat with the first response."""
        if len(request_id) > REQUEST_ID_MAX:
            raise ValueError(f"requestid {request_id!r} is longer than {REQUEST_ID_MAX} characters")
        return self._send("POST", path, {"requestid": request_id}, body)

    def query(self, entity: str, where: str = "") -> list[dict[str, Any]]:
        """Every row of `select * from {entity} [where ...]`, page by page (1000 a page)."""
        return list(self.query_pages(entity, where))

    def query_pages(self, entity: str, where: str = "") -> Iterator[dict[str, Any]]:
        start, previous = 1, None
        while True:
            text = f"select * from {entity}{' where ' + where if where else ''} " \
                   f"startposition {start} maxresults {PAGE_SIZE}"
            found = self._send("GET", "/query", {"query": text}, None).get("QueryResponse") or {}
            rows = found.get(entity) or []
            if rows and rows == previous:  # the same full page again would never end
                raise ConnectorError(f"QuickBooks answered the {entity} query at position {start} with "
                                     "the previous page again", retryable=True)
            previous = rows
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            start += PAGE_SIZE

    def _send(self, method: str, path: str, params: dict[str, str], body: Mapping[str, Any] | None
              ) -> dict[str, Any]:
        realm = self._tokens.tenant_id()
        if not realm:
            raise AccountingAuthError("the QuickBooks connection has no company (realmId): an admin "
                                      "must reconnect it on the Accounting page")
        url = f"{self.base}/company/{realm}{path}"
        query = {**params, "minorversion": MINOR_VERSION}
        data = None if body is None else to_json(body).encode()
        token = self._tokens.access_token()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                resp = self._http.request(method, url, headers=headers, params=query, data=data,
                                          idempotent=method == "GET")
            except ConnectorError as exc:
                if exc.status == 401 and attempt == 1:
                    token = self._tokens.refresh_after_401(token)
                    continue
                if exc.status == 401:
                    raise AccountingAuthError("QuickBooks refused a freshly refreshed access token: an "
                                              "admin must reconnect on the Accounting page") from exc
                if exc.status == 403 and "throttleexceeded" in str(exc).lower():
                    raise ConnectorError(str(exc), retryable=True, status=429,
                                         retry_after=THROTTLE_WAIT) from exc
                raise
            try:
                parsed = json.loads(resp.text, parse_float=Decimal)
            except ValueError as exc:  # an HTML page with 200 (a proxy, Intuit's maintenance page)
                raise ConnectorError(f"{method} {path}: QuickBooks answered HTTP {resp.status_code} with "
                                     f"something that is not JSON: {resp.text[:120]!r}", retryable=True,
                                     status=resp.status_code) from exc
            if isinstance(parsed, dict) and "Fault" in parsed:  # a Fault inside a 200 (rare, batch-like)
                fault = json.dumps(parsed["Fault"], default=str)[:300]
                raise ConnectorError(f"{method} {path}: QuickBooks Fault {fault}", retryable=False,
                                     status=resp.status_code)
            return parsed if isinstance(parsed, dict) else {}
        raise AssertionError("unreachable")  # the loop returns or raises
