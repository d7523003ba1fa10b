"""Headers, cookies, CSRF and the health and webhook endpoints."""

from __future__ import annotations

import json
from dataclasses import replace

from app.services import build_services
from app.web import create_app
from tests.web.conftest import csrf_token, sign_in, web_config


def test_every_response_carries_the_security_headers(client, signed_in):
    for url in ("/login", "/", "/invoices", "/healthz", "/static/portal.css", "/no-such-page"):
        headers = signed_in.get(url).headers
        assert headers["X-Frame-Options"] == "DENY", url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin", url
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self' http://127.0.0.1:9;" in csp, url
        assert "frame-src http://127.0.0.1:9;" in csp
        assert "connect-src 'self' http://127.0.0.1:9;" in csp
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "Strict-Transport-Security" not in headers  # plain http base_url
    assert signed_in.get("/invoices").headers["Cache-Control"] == "no-store"


def test_https_base_url_adds_hsts_and_secure_cookies(tmp_path, clock):
    svc = build_services(web_config(tmp_path, base_url="https://pay.northwind.example"), clock=clock)
    client = create_app(svc).test_client()
    response = client.get("/login", base_url="https://pay.northwind.example")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_real_stripe_js_origins_are_allowed_by_the_csp(tmp_path, clock):
    cfg = web_config(tmp_path)
    cfg = replace(
        cfg, stripe=replace(cfg.stripe, js_url="https://js.stripe.com/v3/", api_base="https://api.stripe.com")
    )
    client = create_app(build_services(cfg, clock=clock)).test_client()
    csp = client.get("/login").headers["Content-Security-Policy"]
    assert "script-src 'self' https://js.stripe.com https://*.js.stripe.com;" in csp
    assert "frame-src https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com;" in csp
    assert "connect-src 'self' https://js.stripe.com https://api.stripe.com;" in csp


def test_session_cookie_is_httponly_and_lax(client):
    cookie = client.get("/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_forms_without_a_csrf_token_are_refused(client, dana):
    assert client.post("/login", data={"email": dana, "password": "correct horse battery"}).status_code == 400
    assert client.post("/magic", data={"email": dana}).status_code == 400
    sign_in(client, dana)
    assert client.post("/logout").status_code == 400
    assert client.post("/logout-everywhere").status_code == 400
    assert client.post("/pay", data={"invoice": "x", "action": "checkout"}).status_code == 400
    assert client.get("/").status_code == 200  # still signed in


def test_json_calls_need_the_csrf_header(signed_in):
    body = json.dumps({"payment_method": "pm_123", "save": False})
    refused = signed_in.post("/pay/some-token/confirm", data=body, content_type="application/json")
    assert refused.status_code == 400
    assert refused.get_json()["status"] == "failed"
    accepted = signed_in.post(
        "/pay/some-token/confirm",
        data=body,
        content_type="application/json",
        headers={"X-CSRFToken": csrf_token(signed_in)},
    )
    assert accepted.status_code == 404  # past CSRF; the token names no payment of this client


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["db"], body["problems"]) == (
        "ok",
        "ok",
        [],
    )  # the rest: tests/ops/test_health.py


def test_the_stripe_webhook_is_csrf_exempt_and_rejects_a_bad_signature(client):
    response = client.post(
        "/stripe/webhook",
        data=b'{"id": "evt_1"}',
        content_type="application/json",
        headers={"Stripe-Signature": "t=1,v1=bad"},
    )
    assert response.status_code == 400
    assert "error" in response.get_json()
    missing = client.post("/stripe/webhook", data=b"{}", content_type="application/json")
    assert missing.status_code == 400


def test_theme_css_carries_the_brand_colour(client):
    response = client.get("/theme.css")
    assert response.mimetype == "text/css"
    assert "--primary: #1f4f8b" in response.get_data(as_text=True)


def test_pages_need_a_session(client):
    for url in ("/", "/invoices", "/payments", "/pay?invoice=x", "/invoices/x", "/payments/x", "/pay/x"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next="), url
    confirm = client.post(
        "/pay/x/confirm",
        data="{}",
        content_type="application/json",
        headers={"X-CSRFToken": csrf_token(client)},
    )
    assert confirm.status_code == 401
    assert confirm.get_json()["status"] == "failed"


def test_an_unexpected_error_is_a_plain_500_page_with_the_headers(svc):
    app = create_app(svc)

    def boom() -> str:
        raise RuntimeError("secret detail")

    app.add_url_rule("/boom", "boom", boom)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "secret detail" not in body and "Traceback" not in body
    assert response.headers["X-Frame-Options"] == "DENY"
