"""The admin console for the MSP's finance team, at /admin: one blueprint, routes split by page.

Importing this package builds the blueprint (its guard, the read-only "view as client" hook on
portal pages, the admin's template filters); `init_app(app)` registers it. Access rules are in
guard.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, render_template

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _error(exc: Any) -> Any:
    code = getattr(exc, "code", 500) or 500
    titles = {403: "Not allowed", 404: "Not found"}
    message = "" if code == 404 else exc.description
    return render_template(
        "admin/error.html", code=code, title=titles.get(code, "Error"), message=message
    ), code


bp.register_error_handler(403, _error)
bp.register_error_handler(404, _error)

# NOTE: imported after `bp` exists: each module adds its routes (and hooks) to it.
from app.web.admin import (  # noqa: E402,F401
    accounting,
    admins_views,
    auth_views,
    client_parent,
    clients,
    dashboard,
    email_previews,
    entity_filter,
    exceptions,
    exports,
    filters,
    guard,
    ops,
    payments,
    tieout,
    view_as,
)

bp.before_request(guard.guard)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(accounting.callback_bp)  # the OAuth callback checks the admin itself
