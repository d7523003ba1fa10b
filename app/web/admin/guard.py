"""Who may see and do what in the admin console.

The admin's session is its own cookie (`cashloop_admin`, a random token backed by a row in
admin_sessions), never the portal's flask-login session: a portal sign-in reaches no admin page
and an admin sign-in is no portal login. Every admin endpoint except the sign-in steps needs a
session that passed the second factor; every request that is not a GET needs a role that may
write (owner or finance). Owner-only pages say so with `owner_only`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from flask import Response, abort, g, redirect, request, url_for

from app.core import admin_sessions
from app.core.admin_sessions import AdminSession
from app.web import services

COOKIE = "cashloop_admin"
# The sign-in steps themselves: reachable before (or without) a full sign-in, and POSTable by
# every role. Tests assert this set exactly, so a new entry here is a deliberate decision.
SIGN_IN_ENDPOINTS = frozenset({"admin.login", "admin.second_factor", "admin.logout"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY = "Your admin role is read-only: you can look at everything but change nothing."

F = TypeVar("F", bound=Callable[..., Any])


def session_from_cookie() -> AdminSession | None:
    """The admin session of this request (cached on `g`), whatever its stage."""
    if "admin_session" not in g:
        svc = services()
        idle = timedelta(minutes=svc.config.admin.session_idle_minutes)
        g.admin_session = admin_sessions.load(
            svc.store.db, svc.clock, request.cookies.get(COOKIE, ""), idle=idle
        )
    return cast(AdminSession | None, g.admin_session)


def current_admin() -> AdminSession:
    """The fully signed-in admin; only call behind the guard."""
    sess = session_from_cookie()
    assert sess is not None and sess.has_second_factor
    return sess


def set_cookie(response: Response, token: str) -> Response:
    svc = services()
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=svc.config.cashloop.base_url.startswith("https://"),
        path="/",
    )
    return response


def clear_cookie(response: Response) -> Response:
    response.delete_cookie(COOKIE, path="/")
    return response


def guard() -> Any:
    """before_request of the admin blueprint."""
    endpoint = request.endpoint or ""
    if endpoint in SIGN_IN_ENDPOINTS:
        return None  # each step checks its own stage
    sess = session_from_cookie()
    if sess is None:
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    if not sess.has_second_factor:
        return redirect(url_for("admin.second_factor"))
    if request.method not in READ_METHODS and not sess.can_write:
        abort(403, description=READ_ONLY)
    svc = services()
    with svc.store.write() as db:
        admin_sessions.touch(db, svc.clock, sess.id)
    return None


def owner_only(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_admin().role != "owner":
            abort(403, description="Only an owner may do this.")
        return view(*args, **kwargs)

    return cast(F, wrapper)
