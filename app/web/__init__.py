"""The client portal as a Flask app: `create_app(services)` wires blueprints, CSRF, sessions and headers.

Views reach the database, clock and config through `services()` (stored on
`app.extensions["cashloop"]`), never through globals, so tests build an app per database.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlparse

from flask import Flask, Response, current_app, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from app.core.clock import local_today
from app.services import Services
from app.web.security import SecurityHeaders

log = logging.getLogger(__name__)
SESSION_IDLE = timedelta(hours=12)


def services() -> Services:
    """The `Services` of the app handling the current request: for a portal request, the view of
    the signed-in client's billing entity (its Stripe account, books and branding)."""
    base: Services = current_app.extensions["cashloop"]
    if not base.config.entities:
        return base
    # flask-login's loaded user (never loaded from here: the user loader itself calls services()).
    client_id = getattr(g.get("_login_user"), "client_id", None)
    if client_id is None:
        return base
    from app.entity_services import for_client

    return for_client(base, client_id)


def today() -> date:
    """The MSP's calendar date now: "due today" and "overdue" are decided in its time zone."""
    svc = services()
    return local_today(svc.clock, svc.config.tz)


def create_app(services: Services) -> Flask:
    """Build the portal app for `services`; does no I/O beyond reading config."""
    from app.web import admin, auth, entity_branding, health, portal, session, webhooks
    from app.web.filters import register_filters

    config = services.config
    is_https = urlparse(config.cashloop.base_url).scheme == "https"
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=str(config.cashloop.secret_key),
        SESSION_COOKIE_NAME="cashloop_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=is_https,
        # Sessions are permanent with a sliding lifetime: idle for 12 hours means signed out.
        PERMANENT_SESSION_LIFETIME=SESSION_IDLE,
        # A pay form left open over lunch must still submit; the token is bound to the session.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=1024 * 1024,
        PREFERRED_URL_SCHEME="https" if is_https else "http",
    )
    app.extensions["cashloop"] = services
    if config.cashloop.trusted_proxies > 0:
        from app.web.proxy import TrustedProxyFix

        app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, hops=config.cashloop.trusted_proxies, addresses=config.ops.proxy_addresses
        )

    csrf = CSRFProtect(app)
    session.init_login(app)
    register_filters(app, config)
    entity_branding.init_app(app)
    SecurityHeaders(config, is_https=is_https).init_app(app)

    app.register_blueprint(auth.bp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(webhooks.bp)
    csrf.exempt(webhooks.bp)
    admin.init_app(app)  # the finance console at /admin (app/web/admin)

    health.init_app(app)  # /healthz (app/web/health.py)
    app.add_url_rule("/theme.css", "theme_css", _theme_css)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _theme_css() -> Response:
    # NOTE: the brand colour lives in its own stylesheet so the CSP can forbid inline styles;
    # config validation guarantees it is a #rrggbb value.
    from app.web import entity_branding
    from app.web.theme import theme_css

    body = theme_css(entity_branding.theme_branding(request.args.get("entity")))
    return Response(body, mimetype="text/css", headers={"Cache-Control": "public, max-age=300"})


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _csrf_error(exc: CSRFError) -> Any:
    if _wants_json():
        return jsonify(status="failed", message="Your session expired. Reload the page and try again."), 400
    return render_template(
        "error.html", code=400, title="This form expired", message="Reload the page and try again."
    ), 400


_ERROR_TITLES = {403: "Not allowed", 404: "Page not found", 405: "Not allowed", 429: "Too many attempts"}


def _http_error(exc: HTTPException) -> Any:
    code = exc.code or 500
    if request.path.startswith("/stripe/") or _wants_json():
        return jsonify(error=exc.name), code
    title = _ERROR_TITLES.get(code, exc.name)
    message = "" if code == 404 else exc.description
    return render_template("error.html", code=code, title=title, message=message), code
