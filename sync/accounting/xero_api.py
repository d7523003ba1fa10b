"""The one way to Xero's Accounting API: the organisation's tenant header, a Bearer token (refreshed
once after a 401), JSON with exact decimals, the per-tenant rate limiter, and Xero's paging.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sync.accounting.oauth import RefreshingTokens
from sync.accounting.xero_limits import RateLimiter
from sync.accounting.xero_wire import from_json, to_json
from sync.base import AccountingAuthError, ConnectorError
from sync.http import HttpClient

PAGE_SIZE = 100  # Xero's page when pageSize is not given
_PAGED = frozenset({"/Invoices", "/Payments", "/BankTransactions", "/Contacts"})  # take `page=N`


class XeroApi:
    def __init__(
        self, api_base: str, tokens: RefreshingTokens, http: HttpClient, limiter: RateLimiter
    ) -> None:
        self._api_base = api_base
        self._tokens = tokens
        self._http = http
        self._limiter = limiter

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        key: str | None = None,
    ) -> Any:
        """One API call as the connected organisation; a 401 refreshes the token and retries once."""
        tenant = self._tokens.tenant_id()
        if not tenant:
            raise AccountingAuthError(
                "Xero is connected without an organisation: an admin must reconnect "
                "it on the Accounting page and pick one"
            )
        token = self._tokens.access_token()
        data = None if body is None else to_json(body)
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {token}",
                "xero-tenant-id": tenant,
                "Accept": "application/json",
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            if key:
                headers["Idempotency-Key"] = key
            try:
                with self._limiter.slot(tenant):
                    resp = self._http.request(
                        method, self._api_base + path, headers=headers, params=params, data=data
                    )
            except ConnectorError as exc:
                if exc.status == 401 and attempt == 1:
                    token = self._tokens.refresh_after_401(token)
                    continue
                if exc.status in (401, 403):
                    raise AccountingAuthError(
                        f"Xero refused access to the organisation ({exc}): an admin "
                        f"must reconnect it on the Accounting page"
                    ) from exc
                if exc.status == 429 and exc.retry_after is not None:
                    self._limiter.pause(tenant, exc.retry_after)
                raise
            self._limiter.note_remaining(tenant, resp.headers.get("X-MinLimit-Remaining"))
            try:
                return from_json(resp.text) if resp.text.strip() else None
            except ValueError as exc:  # an HTML page with 200 (a proxy, a maintenance page)
                raise ConnectorError(
                    f"{method} {path}: Xero answered HTTP {resp.status_code} with something that is "
                    f"not JSON: {resp.text[:120]!r}", retryable=True, status=resp.status_code
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def pages(self, path: str, root: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every record of a list, page by page where Xero pages it."""
        if path not in _PAGED:
            yield from (self.call("GET", path, params=params) or {}).get(root) or []
            return
        page, previous = 1, None
        while True:
            body = self.call("GET", path, params={**params, "page": str(page)}) or {}
            items = body.get(root) or []
            if items and items == previous:  # the same full page again would never end
                raise ConnectorError(
                    f"GET {path}: Xero answered page {page} with the previous page again", retryable=True
                )
            previous = items
            yield from items
            count = (body.get("pagination") or {}).get("pageCount")
            if (
                not items
                or (count is not None and page >= int(count))
                or (count is None and len(items) < PAGE_SIZE)
            ):
                return
            page += 1


def connected_tenants(http: HttpClient, connections_url: str, access_token: str) -> list[tuple[str, str]]:
    """(tenantId, tenantName) of every organisation the token may use, for the connect flow."""
    resp = http.request(
        "GET",
        connections_url,
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    rows = from_json(resp.text) or []
    return [
        (str(r["tenantId"]), str(r.get("tenantName") or ""))
        for r in rows
        if r.get("tenantType", "ORGANISATION") == "ORGANISATION"
    ]
