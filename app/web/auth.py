"""Sign-in: password, emailed single-use links (magic sign-in, invitation, reset) and sign-out.

Answers never reveal whether an address is known. Links open a page with a button rather than
signing in on GET, so mail scanners that prefetch links cannot use them up.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from flask_login import current_user, login_required

from app.core import logins
from app.web import services
from app.web.ratelimit import RateLimiter
from app.web.security import safe_next
from app.web.session import portal_user, sign_in, sign_out

bp = Blueprint("auth", __name__)
BAD_LOGIN = "That email and password do not match. Check both, or email yourself a sign-in link."
TOO_MANY = "Too many attempts. Wait 15 minutes, or email yourself a sign-in link."
LINK_SENT = (
    "If that address belongs to a billing contact, a link is on its way. "
    "It works once and expires in {minutes} minutes."
)


@bp.record_once
def _limiters(state: BlueprintSetupState) -> None:
    clock = state.app.extensions["cashloop"].clock
    state.app.extensions["cashloop_limits"] = {"login": RateLimiter(clock), "links": RateLimiter(clock)}


def _limiter(name: str) -> RateLimiter:
    return current_app.extensions["cashloop_limits"][name]


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _email_field() -> str:
    email = logins.normalize_email(request.form.get("email", ""))
    return email if "@" in email and len(email) <= 254 else ""


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    next_url = safe_next(request.values.get("next"), url_for("portal.home"))
    if current_user.is_authenticated:
        return redirect(next_url)
    if request.method == "GET":
        return render_template("login.html", next=next_url, email="")
    email = _email_field()
    keys = (f"email:{email}", f"ip:{_client_ip()}")
    limiter = _limiter("login")
    if limiter.is_blocked(*keys):
        return render_template("login.html", next=next_url, email=email, error=TOO_MANY), 429
    svc = services()
    with svc.store.write() as db:
        ok = bool(email) and logins.authenticate(db, email, request.form.get("password", ""))
    if ok and sign_in(email):
        limiter.reset(keys[0])
        return redirect(next_url)
    limiter.hit(*keys)
    return render_template("login.html", next=next_url, email=email, error=BAD_LOGIN), 401


@bp.post("/logout")
def logout() -> Any:
    sign_out()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.post("/logout-everywhere")
@login_required
def logout_everywhere() -> Any:
    with services().store.write() as db:
        logins.bump_session_epoch(db, portal_user().email)
    sign_out()
    flash("You are signed out on every device.", "info")
    return redirect(url_for("auth.login"))


def _request_link(purpose: Literal["magic", "reset"]) -> Any:
    svc = services()
    minutes = svc.config.portal.magic_link_minutes
    if request.method == "GET":
        return render_template("request_link.html", purpose=purpose)
    email = _email_field()
    keys = (f"email:{email}", f"ip:{_client_ip()}")
    limiter = _limiter("links")
    # NOTE: past the limit nothing is sent, but the answer is the same, so it reveals nothing.
    if email and not limiter.is_blocked(*keys):
        limiter.hit(*keys)
        with svc.store.write() as db:
            logins.issue_magic_link(
                db,
                svc.clock,
                email=email,
                base_url=svc.config.cashloop.base_url,
                minutes=minutes,
                purpose=purpose,
            )
    return render_template(
        "message.html", title="Check your email", message=LINK_SENT.format(minutes=minutes)
    )


def _link_invalid() -> Any:
    return render_template(
        "message.html",
        title="This link has expired or was already used",
        message="Links work once and for a limited time. Ask for a new one below.",
        link=url_for("auth.magic_request"),
        link_text="Email me a new sign-in link",
    ), 400


@bp.route("/magic", methods=["GET", "POST"])
def magic_request() -> Any:
    return _request_link("magic")


@bp.route("/reset", methods=["GET", "POST"])
def reset_request() -> Any:
    return _request_link("reset")


@bp.route("/magic/<token>", methods=["GET", "POST"])
def magic_sign_in(token: str) -> Any:
    svc = services()
    if request.method == "GET":
        if logins.peek_token(svc.store.db, svc.clock, token, "magic") is None:
            return _link_invalid()
        return render_template("magic_confirm.html", token=token, company=request.args.get("company"))
    with svc.store.write() as db:
        email = logins.consume_token(db, svc.clock, token, "magic")
    if email is None or not sign_in(email, request.args.get("company")):
        return _link_invalid()
    return redirect(url_for("portal.home"))


def _set_password(token: str, purpose: Literal["invite", "reset"]) -> Any:
    svc = services()
    email = logins.peek_token(svc.store.db, svc.clock, token, purpose)
    if email is None:
        return _link_invalid()
    if request.method == "GET":
        return render_template("set_password.html", purpose=purpose, email=email)
    password = request.form.get("password", "")
    error = None
    try:
        logins.check_password(password)
    except logins.PasswordError as exc:
        error = str(exc)
    if error is None and password != request.form.get("password_confirm", ""):
        error = "The two passwords do not match."
    if error:
        return render_template("set_password.html", purpose=purpose, email=email, error=error), 400
    with svc.store.write() as db:
        # The token is used up in the same transaction that sets the password: both or neither.
        email = logins.consume_token(db, svc.clock, token, purpose)
        if email is not None:
            logins.set_password(db, svc.clock, email, password)
    if email is None or not sign_in(email):
        return _link_invalid()
    flash("Your password is set.", "info")
    return redirect(url_for("portal.home"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def invite(token: str) -> Any:
    return _set_password(token, "invite")


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset(token: str) -> Any:
    return _set_password(token, "reset")
