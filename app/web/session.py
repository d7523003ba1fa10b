"""Who is signed in: a person (login email) plus the company they are acting for right now.

The flask-login id is `<epoch>:<email>`; bumping the login's epoch ("sign out everywhere",
a password change) makes every older session fail to load. The company is `session["client_id"]`
and is re-checked against the person's active contacts on every request.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, jsonify, redirect, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from app.core import logins
from app.core.logins import ClientAccess

PAYING_ROLES = ("billing", "approver")


class PortalUser(UserMixin):
    def __init__(self, email: str, epoch: int, clients: list[ClientAccess], client: ClientAccess) -> None:
        self.email = email
        self.epoch = epoch
        self.clients = clients
        self.client = client

    def get_id(self) -> str:
        return f"{self.epoch}:{self.email}"

    @property
    def client_id(self) -> int:
        return self.client.client_id

    @property
    def can_pay(self) -> bool:
        """Viewers see invoices and payments; billing contacts and approvers may also pay."""
        return self.client.role in PAYING_ROLES


def portal_user() -> PortalUser:
    """The signed-in person; only call behind a login check."""
    return cast(PortalUser, current_user._get_current_object())  # type: ignore[attr-defined]


def _load_user(user_id: str) -> PortalUser | None:
    from app.web import services

    epoch_text, _, email = user_id.partition(":")
    db = services().store.db
    epoch = logins.session_epoch(db, email)
    if epoch is None or str(epoch) != epoch_text:
        return None
    clients = logins.clients_for_login(db, email)
    if not clients:
        return None
    chosen = session.get("client_id")
    client = next((c for c in clients if c.client_id == chosen), clients[0])
    return PortalUser(email, epoch, clients, client)


def unauthorized() -> Any:
    if request.is_json or request.accept_mimetypes.best == "application/json":
        return jsonify(status="failed", message="You are signed out. Sign in and try again."), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def init_login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.user_loader(_load_user)
    manager.unauthorized_handler(unauthorized)


def sign_in(email: str, company: str | None = None) -> bool:
    """Start a fresh session for `email`; False if it reaches no company.

    The session acts for the company whose public token is `company` when the person is a
    contact of it (a reminder's link names the company it is about), else for the first one.
    """
    from app.web import services

    svc = services()
    with svc.store.write() as db:
        clients = logins.clients_for_login(db, email)
        if not clients:
            return False
        epoch = logins.record_login(db, svc.clock, email)
        chosen = db.execute("SELECT id FROM clients WHERE token = ?", (company or "",)).fetchone()
    client = next((c for c in clients if chosen is not None and c.client_id == chosen[0]), clients[0])
    session.clear()
    session.permanent = True
    login_user(PortalUser(logins.normalize_email(email), epoch, clients, client))
    session["client_id"] = client.client_id
    return True


def sign_out() -> None:
    logout_user()
    session.clear()
