"""Security headers on every response and the small URL checks the views share."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import Flask, Response, request

from app.config import Config

STATIC_ENDPOINTS = {"static", "theme_css"}


def origin(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, else None (relative paths, junk)."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return f"{parsed.scheme}://{parsed.netloc}"
    return None


def content_security_policy(config: Config) -> str:
    """Only this origin and Stripe's may run script, be framed or be fetched; no inline script or style.

    Stripe.js loads from `stripe.js_url` and calls `stripe.api_base`; the real one also frames
    hooks.stripe.com for 3-D Secure (https://docs.stripe.com/security/guide#content-security-policy).
    localstripe's fake serves the script and its API from one origin.
    """
    # Every entity's Stripe and logo: a page is served in the signed-in client's entity's.
    stripes = [config.stripe, *(e.stripe for e in config.entities)]
    js_all = [origin(s.js_url) for s in stripes]
    script = ["'self'", *js_all]
    frame = list(js_all)
    connect = ["'self'", *js_all, *(origin(s.api_base) for s in stripes)]
    if any(j and urlparse(j).hostname == "js.stripe.com" for j in js_all):
        script.append("https://*.js.stripe.com")
        frame += ["https://*.js.stripe.com", "https://hooks.stripe.com"]
    img = ["'self'", "data:", origin(config.branding.logo_url),
           *(origin(e.branding.logo_url) for e in config.entities)]

    def src(values: list[str | None]) -> str:
        return " ".join(dict.fromkeys(v for v in values if v)) or "'none'"

    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {src(script)}",
            f"frame-src {src(frame)}",
            f"connect-src {src(connect)}",
            f"img-src {src(img)}",
            "style-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    def __init__(self, config: Config, *, is_https: bool) -> None:
        self.csp = content_security_policy(config)
        self.is_https = is_https

    def init_app(self, app: Flask) -> None:
        app.after_request(self.apply)

    def apply(self, response: Response) -> Response:
        h = response.headers
        # A view may narrow the policy for its own response (the email previews do).
        h["Content-Security-Policy"] = getattr(response, "cashloop_csp", None) or self.csp
        h["X-Frame-Options"] = "DENY"
        h["X-Content-Type-Options"] = "nosniff"
        # Full URLs (which may hold invitation tokens) never leave the origin.
        h["Referrer-Policy"] = "strict-origin-when-cross-origin"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if self.is_https:
            h["Strict-Transport-Security"] = "max-age=31536000"
        if request.endpoint not in STATIC_ENDPOINTS:
            # Balances and receipts must not linger in a shared computer's cache.
            h["Cache-Control"] = "no-store"
        return response


def safe_next(target: str | None, default: str) -> str:
    """`target` if it is a path on this site, else `default` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc:
        return default
    return target
