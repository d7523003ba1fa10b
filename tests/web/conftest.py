"""A portal app per test over a real SQLite file, with a frozen clock and the MSP in Chicago.

Stripe points at a closed loopback port: these tests never reach a processor, and a view that
tried would show its "processor unavailable" answer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.config import Config, parse_config
from app.core.clock import FrozenClock
from app.services import Services, build_services
from app.web import create_app
from tests.web import factories

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def web_config(tmp_path: Path, *, base_url: str = "http://portal.test", extra: str = "") -> Config:
    (tmp_path / "psa").mkdir(exist_ok=True)
    text = f"""
[cashloop]
base_url = "{base_url}"
secret_key = "web-test-secret-key-0123456789abcdef"
data_dir = "{tmp_path / "data"}"
timezone = "America/Chicago"

[entity]
name = "Northwind MSP LLC"

[branding]
name = "Northwind IT"
support_email = "billing@northwind.example"
support_phone = "+1 312 555 0100"
footer = "Northwind IT, 1 Main St, Chicago"

[stripe]
secret_key = "sk_test_web"
publishable_key = "pk_test_web"
webhook_secret = "whsec_test_web"
api_base = "http://127.0.0.1:9"
js_url = "http://127.0.0.1:9/js.stripe.com/v3/"

[email]
host = "127.0.0.1"
from_address = "billing@northwind.example"

[psa]
kind = "files"

[psa.files]
path = "{tmp_path / "psa"}"
{extra}
"""
    return parse_config(text, source="web-test.toml")


@pytest.fixture
def clock() -> FrozenClock:
    # 10:00 in Chicago (CDT, UTC-5) on Tuesday, March 10, 2026.
    return FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))


@pytest.fixture
def svc(tmp_path: Path, clock: FrozenClock) -> Services:
    return build_services(web_config(tmp_path), clock=clock)


@pytest.fixture
def app(svc: Services) -> Flask:
    return create_app(svc)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def acme(svc: Services) -> factories.Ref:
    return factories.make_client(svc, "Acme Dental LLC")


@pytest.fixture
def globex(svc: Services) -> factories.Ref:
    return factories.make_client(svc, "Globex Corporation")


@pytest.fixture
def dana(svc: Services, acme: factories.Ref) -> str:
    """A billing contact of Acme with a password."""
    return factories.make_person(svc, acme, "dana@acme.example")


def csrf_token(client: FlaskClient) -> str:
    """The CSRF token of the client's current session, read from a page like a browser would."""
    page = client.get("/magic").get_data(as_text=True)
    match = CSRF_META.search(page)
    assert match, "no csrf meta tag"
    return match.group(1)


def post(client: FlaskClient, url: str, data: dict[str, object] | None = None, **kw: object):
    """POST a form with the session's CSRF token, as the rendered form would."""
    return client.post(url, data={**(data or {}), "csrf_token": csrf_token(client)}, **kw)


def sign_in(client: FlaskClient, email: str, password: str = factories.PASSWORD):
    response = post(client, "/login", {"email": email, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


@pytest.fixture
def signed_in(client: FlaskClient, dana: str) -> FlaskClient:
    sign_in(client, dana)
    return client
