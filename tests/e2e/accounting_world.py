"""An MSP booking into QuickBooks Online or Xero through the real outbox, and the admin's
connect flow driven with the Flask test client.

`AuthorizationFront` is the vendor's authorization server as the browser and our token calls see
it: a consent step that hands back a one-time code for the registered redirect URI, and a token
endpoint that trades that code (authorization_code grant, HTTP Basic client authentication) for
the vendor fake's own tokens and passes refresh grants through to the fake. The vendor fakes in
tests/fakes/ implement the refresh grant only; the codes and their checks live here.
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
import stripe
from flask.testing import FlaskClient

from app import checkout
from app.core.clock import Clock
from app.services import Services
from sync.accounting.oauth import TokenSet
from tests.fakes._spec import LoopbackServer
from tests.web.admin.helpers import post

TOKEN_PATH = "/token"


@dataclass
class AuthorizationFront:
    client_id: str
    client_secret: str
    mint: Any  # () -> TokenSet: the vendor fake's first tokens for a fresh consent
    refresh_url: str  # the fake's own token endpoint, for refresh grants
    clock: Clock
    extra: dict[str, str] = field(default_factory=dict)  # added to the redirect (QBO: realmId)
    exchanges: list[dict[str, str]] = field(default_factory=list)
    consents: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._codes: dict[str, str] = {}  # code -> redirect_uri it was issued for
        self._lock = threading.Lock()
        self._server = LoopbackServer(self.handle)
        self.port = 0

    def __enter__(self) -> AuthorizationFront:
        self.port = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{TOKEN_PATH}"

    @property
    def authorize_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/authorize"

    def consent(self, consent_url: str) -> str:
        """The admin clicks "Allow" on the consent page: the callback URL with code and state."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(consent_url).query).items()}
        self.consents.append(query)
        assert query["client_id"] == self.client_id and query["response_type"] == "code"
        code = f"code-{secrets.token_hex(8)}"
        with self._lock:
            self._codes[code] = query["redirect_uri"]
        back = {"code": code, "state": query["state"], **self.extra}
        return f"{query['redirect_uri']}?{urlencode(back)}"

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        if urlsplit(target).path != TOKEN_PATH or method != "POST":
            return 404, {}, {"error": "not_found"}
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") == "refresh_token":
            resp = requests.post(
                self.refresh_url,
                data=form,
                timeout=10,
                headers={"Authorization": headers.get("authorization", ""), "Accept": "application/json"},
            )
            return resp.status_code, {}, resp.json()
        self.exchanges.append(form)
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if headers.get("authorization") != f"Basic {basic}":
            return 401, {}, {"error": "invalid_client"}
        with self._lock:
            issued_for = self._codes.pop(form.get("code", ""), None)  # a code works once
        if (
            form.get("grant_type") != "authorization_code"
            or issued_for is None
            or issued_for != form.get("redirect_uri")
        ):
            return 400, {}, {"error": "invalid_grant"}
        tokens: TokenSet = self.mint(self.clock.utc_now() + timedelta(hours=1))
        return (
            200,
            {},
            {
                "token_type": "bearer",
                "access_token": tokens.access_token,
                "expires_in": 3600,
                "refresh_token": tokens.refresh_token,
            },
        )


def connect(client: FlaskClient, front: AuthorizationFront) -> Any:
    """Connect on the Accounting page, allow at the vendor, come back: the callback's response."""
    start = post(client, "/admin/accounting/connect")
    assert start.status_code == 302, start.get_data(as_text=True)[:300]
    callback = urlsplit(front.consent(start.headers["Location"]))
    return client.get(f"{callback.path}?{callback.query}")


def card(double: Any) -> str:
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"},
        }
    )
    return str(pm.id)


def pay(
    services: Services,
    double: Any,
    client_id: int,
    items: list[tuple[str, int]],
    *,
    email: str = "ap@contoso.example",
) -> int:
    """A portal payment of `items` (invoice token, minor units) by card; returns the payment id."""
    co = checkout.begin_checkout(services, client_id=client_id, login_email=email, items=items)
    result = checkout.confirm_checkout(
        services, client_id=client_id, payment_token=co.payment_token, payment_method=card(double), save=False
    )
    assert result.status == "succeeded", result
    return int(services.store.scalar("SELECT id FROM payments WHERE token = ?", (co.payment_token,)))


def invoice_token(services: Services, number: str) -> str:
    return str(services.store.scalar("SELECT token FROM invoices WHERE number = ?", (number,)))


def accounting_entries(services: Services) -> list[Any]:
    return services.store.all(
        "SELECT id, kind, status, attempts, parked_at, last_error FROM outbox "
        "WHERE kind IN ('journal_payment', 'journal_reversal', 'accounting_deposit') ORDER BY id"
    )
