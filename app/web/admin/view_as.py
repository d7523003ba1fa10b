"""An admin looks at a client's portal exactly as its contacts see it, read-only and audited.

While an admin session has `view_as_client_id`, portal pages are served for that client to a
stand-in user with the viewer role (so no pay buttons), under a banner; any request other than
GET/HEAD outside /admin is refused (403), and every page shown is written to the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import abort, g, redirect, request, url_for

from app.core import admin_sessions
from app.core.audit import audit
from app.core.logins import ClientAccess
from app.web import services
from app.web.admin import bp
from app.web.admin.guard import READ_METHODS, current_admin, session_from_cookie
from app.web.session import PortalUser

_NOT_PORTAL = frozenset({"static", "theme_css", "healthz"})


@bp.post("/clients/<int:client_id>/view-as")
def start_view_as(client_id: int) -> Any:
    svc, admin = services(), current_admin()
    with svc.store.write() as db:
        client = db.execute("SELECT id, name FROM clients WHERE id = ?", (client_id,)).fetchone()
        if client is None:
            abort(404)
        admin_sessions.set_view_as(db, admin.id, client_id)
        audit(
            db,
            svc.clock,
            actor=admin.actor,
            action="client.view_as_started",
            target=f"client:{client_id}",
            detail={"client": client["name"]},
        )
    return redirect(url_for("portal.home"))


@bp.post("/view-as/stop")
def stop_view_as() -> Any:
    svc, admin = services(), current_admin()
    client_id = admin.view_as_client_id
    with svc.store.write() as db:
        admin_sessions.set_view_as(db, admin.id, None)
        if client_id is not None:
            audit(
                db,
                svc.clock,
                actor=admin.actor,
                action="client.view_as_stopped",
                target=f"client:{client_id}",
            )
    if client_id is None:
        return redirect(url_for("admin.clients"))
    return redirect(url_for("admin.client", client_id=client_id))


@bp.before_app_request
def _serve_portal_as_client() -> Any:
    if request.blueprint == "admin" or request.endpoint in _NOT_PORTAL or request.path.startswith("/stripe/"):
        return None
    sess = session_from_cookie()
    if sess is None or not sess.has_second_factor or sess.view_as_client_id is None:
        return None
    if request.method not in READ_METHODS:
        abort(403, description="You are viewing a client's portal read-only; nothing can be changed here.")
    svc = services()
    client = svc.store.one("SELECT id, name FROM clients WHERE id = ?", (sess.view_as_client_id,))
    if client is None:
        return None
    access = ClientAccess(client["id"], client["name"], "viewer")
    # NOTE: flask-login keeps the request's user on g._login_user; setting it here makes every
    # portal view (and its company scoping) see the stand-in without a portal session existing.
    g._login_user = PortalUser(f"view-as:{sess.email}", -1, [access], access)
    g.admin_view_as = {"client_id": client["id"], "client_name": client["name"], "admin": sess.email}
    with svc.store.write() as db:
        audit(
            db,
            svc.clock,
            actor=sess.actor,
            action="client.view_as_page",
            target=f"client:{client['id']}",
            detail={"path": request.full_path.rstrip("?")},
        )
    return None


@bp.app_context_processor
def _banner() -> dict[str, Any]:
    return {"admin_view_as": g.get("admin_view_as")}
