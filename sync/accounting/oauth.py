"""OAuth2 for the accounting connectors (QuickBooks Online and Xero use the same shape).

`OAuthClient` speaks to the vendor's token endpoint (authorization-code exchange, refresh grant,
HTTP Basic client authentication). `RefreshingTokens` is what a connector holds: it hands out a
current access token, refreshes it shortly before expiry or right after a 401, and saves every
refresh response, because both vendors may rotate the refresh token and the old one then stops
working. Where the tokens live (encrypted, in the store) is the `TokenVault`'s business.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlencode

from app.core.clock import Clock
from sync.base import AccountingAuthError, ConnectorError
from sync.http import HttpClient

REFRESH_MARGIN = timedelta(minutes=5)
MAX_TOKEN_SECONDS = 366 * 24 * 3600  # both vendors' access tokens live an hour; a year is surely junk


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_at: datetime  # UTC instant the access token stops working
    tenant_id: str = ""  # QBO realmId, Xero tenantId; empty until the connect flow learns it
    tenant_name: str = ""


class TokenVault(Protocol):
    """Persistence of one connection's tokens."""

    def load(self) -> TokenSet | None:
        """The stored tokens, or None when never connected (or disconnected)."""
        ...

    def save(self, tokens: TokenSet) -> None:
        """Store `tokens` in place of the previous ones, durably, before they are used."""
        ...

    def mark_revoked(self, reason: str) -> None:
        """The vendor refused the refresh token: the connection needs a person to reconnect."""
        ...


class OAuthClient:
    """The vendor's authorization and token endpoints for one app registration."""

    def __init__(self, *, authorize_url: str, token_url: str, client_id: str, client_secret: str,
                 scope: str, http: HttpClient, clock: Clock) -> None:
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self._http = http
        self._clock = clock

    def consent_url(self, *, redirect_uri: str, state: str) -> str:
        """Where the admin's browser goes to grant access."""
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                 "scope": self.scope, "state": state}
        return f"{self.authorize_url}?{urlencode(query)}"

    def exchange_code(self, code: str, *, redirect_uri: str) -> TokenSet:
        """Trade the callback's code for the first token set (tenant not known yet)."""
        return self._grant({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """A new token set from the refresh token; keeps the tenant. Raises AccountingAuthError when
        the vendor refuses the refresh token (revoked, expired), ConnectorError when it cannot answer."""
        fresh = self._grant({"grant_type": "refresh_token", "refresh_token": tokens.refresh_token})
        return replace(fresh, tenant_id=tokens.tenant_id, tenant_name=tokens.tenant_name)

    def _grant(self, form: dict[str, str]) -> TokenSet:
        try:
            resp = self._http.request("POST", self.token_url, data=form, auth=(self.client_id, self._secret),
                                      headers={"Accept": "application/json"}, idempotent=False)
        except ConnectorError as exc:
            if exc.status in (400, 401):  # invalid_grant / invalid_client: no retry will fix it
                raise AccountingAuthError(f"the accounting system refused the sign-in: {exc}") from exc
            raise
        try:
            body = resp.json()  # an HTML page with 200 (a proxy, a maintenance page) is no answer
            access, seconds = str(body["access_token"]), int(body["expires_in"])
            refresh = str(body.get("refresh_token") or form.get("refresh_token") or "")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConnectorError(f"token endpoint answered without access_token/expires_in: {exc}",
                                 retryable=True) from exc
        if not access or not refresh:
            raise ConnectorError("token endpoint answered with an empty token", retryable=True)
        if not 0 < seconds <= MAX_TOKEN_SECONDS:
            raise ConnectorError(f"token endpoint answered with expires_in {seconds}, not 1-"
                                 f"{MAX_TOKEN_SECONDS} seconds", retryable=True)
        return TokenSet(access_token=access, refresh_token=refresh,
                        expires_at=self._clock.utc_now() + timedelta(seconds=seconds))


class RefreshingTokens:
    """A connector's access token: refreshed before expiry, after a 401, and saved every time."""

    def __init__(self, client: OAuthClient, vault: TokenVault, clock: Clock, *,
                 margin: timedelta = REFRESH_MARGIN) -> None:
        self._client = client
        self._vault = vault
        self._clock = clock
        self._margin = margin
        self._lock = threading.Lock()  # one refresh at a time: a rotated refresh token is single-use

    def current(self) -> TokenSet:
        """The stored tokens, refreshed first when they expire within the margin."""
        with self._lock:
            tokens = self._loaded()
            if tokens.expires_at - self._margin <= self._clock.utc_now():
                tokens = self._refresh(tokens)
            return tokens

    def access_token(self) -> str:
        return self.current().access_token

    def tenant_id(self) -> str:
        return self.current().tenant_id

    def refresh_after_401(self, rejected_access_token: str) -> str:
        """The vendor said 401 to `rejected_access_token`: refresh unless another thread already did."""
        with self._lock:
            tokens = self._loaded()
            if tokens.access_token == rejected_access_token:
                tokens = self._refresh(tokens)
            return tokens.access_token

    def _loaded(self) -> TokenSet:
        tokens = self._vault.load()
        if tokens is None:
            raise AccountingAuthError("the accounting system is not connected: an admin must connect "
                                      "it on the Accounting page")
        return tokens

    def _refresh(self, tokens: TokenSet) -> TokenSet:
        try:
            fresh = self._client.refresh(tokens)
        except AccountingAuthError as exc:
            self._vault.mark_revoked(str(exc))
            raise
        self._vault.save(fresh)
        return fresh
