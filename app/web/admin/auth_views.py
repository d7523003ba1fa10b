"""Admin sign-in in two steps: password (/admin/login), then a TOTP or recovery code (/admin/code).

Wrong passwords are rate-limited in memory per email and per address; wrong codes are counted
in the database and lock the account for `admin.lockout_minutes` after `admin.lockout_threshold`
in a row. The answer to a wrong password never says whether the email is an admin.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, redirect, render_template, request, url_for

from app.core import admin_auth, admin_sessions
from app.core.audit import audit
from app.web import services
from app.web.admin import bp
from app.web.admin.guard import clear_cookie, session_from_cookie, set_cookie
from app.web.ratelimit import RateLimiter
from app.web.security import safe_next

BAD_LOGIN = "That email and password do not match an admin."
TOO_MANY = "Too many attempts. Wait {minutes} minutes and try again."
NO_SECOND_FACTOR = (
    "Two-factor sign-in is not set up for this admin, so the console stays closed. "
    "On the server, run: cashloop admin-2fa --email {email}"
)


def _limiter(kind: str = "login") -> RateLimiter:
    """Failed sign-ins ("login"), and codes sent again after they were used ("replay")."""
    svc = services()
    limits = current_app.extensions.setdefault("cashloop_admin_limits", {})
    if kind not in limits:
        minutes = timedelta(minutes=svc.config.admin.lockout_minutes)
        # Replays are a person's double submits far more often than an attack: more of them pass.
        limit = svc.config.admin.lockout_threshold * (4 if kind == "replay" else 1)
        limits[kind] = RateLimiter(svc.clock, limit=limit, window=minutes, lockout=minutes)
    return limits[kind]


def _locked_message(until) -> str:
    svc = services()
    local = until.astimezone(svc.config.tz)
    return (
        f"Too many wrong codes: this admin is locked until {local:%H:%M} ({svc.config.cashloop.timezone}). "
        "An owner can unlock it sooner."
    )


def _next() -> str:
    return safe_next(request.values.get("next"), url_for("admin.dashboard"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    sess = session_from_cookie()
    if sess is not None and sess.has_second_factor:
        return redirect(_next())
    if request.method == "GET":
        return render_template("admin/login.html", next=_next(), email="")
    svc = services()
    email = request.form.get("email", "").strip()[:254]
    keys = (f"admin-email:{email.lower()}", f"admin-ip:{request.remote_addr or 'unknown'}")
    limiter = _limiter()
    if limiter.is_blocked(*keys):
        error = TOO_MANY.format(minutes=svc.config.admin.lockout_minutes)
        return render_template("admin/login.html", next=_next(), email=email, error=error), 429
    with svc.store.write() as db:
        admin = admin_auth.check_password(db, email, request.form.get("password", "")) if email else None
        if admin is None:
            limiter.hit(*keys)
            return render_template("admin/login.html", next=_next(), email=email, error=BAD_LOGIN), 401
        limiter.reset(keys[0])
        if not admin["totp_secret"]:
            error = NO_SECOND_FACTOR.format(email=admin["email"])
            return render_template("admin/login.html", next=_next(), email=email, error=error), 403
        until = admin_auth.locked_until(admin, svc.clock)
        if until is not None:
            return render_template(
                "admin/login.html", next=_next(), email=email, error=_locked_message(until)
            ), 429
        token = admin_sessions.start(db, svc.clock, admin["id"])
    return set_cookie(redirect(url_for("admin.second_factor", next=_next())), token)


@bp.route("/code", methods=["GET", "POST"])
def second_factor() -> Any:
    sess = session_from_cookie()
    if sess is None:
        return redirect(url_for("admin.login", next=_next()))
    if sess.has_second_factor:
        return redirect(_next())
    if request.method == "GET":
        return render_template("admin/code.html", next=_next())
    svc = services()
    cfg = svc.config.admin
    # A spent code does not count toward the lockout (a double submit must not lock anyone out),
    # but one sent again and again is throttled: each is an audit row.
    replays = _limiter("replay")
    replay_keys = (f"admin-replay:{sess.admin_id}", f"admin-replay-ip:{request.remote_addr or 'unknown'}")
    if replays.is_blocked(*replay_keys):
        error = TOO_MANY.format(minutes=cfg.lockout_minutes)
        return render_template("admin/code.html", next=_next(), error=error), 429
    with svc.store.write() as db:
        result = admin_auth.check_code(
            db,
            svc.clock,
            sess.admin_id,
            request.form.get("code", ""),
            threshold=cfg.lockout_threshold,
            lockout=timedelta(minutes=cfg.lockout_minutes),
        )
        if result.locked_until is not None:
            # The half-signed-in session ends: after the lock, the password is asked again.
            admin_sessions.end(db, svc.clock, sess.id)
            response = render_template(
                "admin/login.html", next=_next(), email=sess.email, error=_locked_message(result.locked_until)
            )
            return clear_cookie(current_app.make_response((response, 429)))
        if result.is_replay:
            replays.hit(*replay_keys)
            error = (
                "That code was already used to sign in, so it cannot be used again. Wait for the next "
                "code in your authenticator app (a new one comes every 30 seconds) and type that one."
            )
            return render_template("admin/code.html", next=_next(), error=error), 401
        if not result.ok:
            failed = db.execute(
                "SELECT failed_codes FROM admin_users WHERE id = ?", (sess.admin_id,)
            ).fetchone()[0]
            left = cfg.lockout_threshold - failed
            error = (
                f"That code is not right. {left} more wrong code{'s' if left != 1 else ''} and this admin "
                f"is locked for {cfg.lockout_minutes} minutes."
            )
            return render_template("admin/code.html", next=_next(), error=error), 401
        token = admin_sessions.complete(db, svc.clock, sess.id)
        audit(
            db,
            svc.clock,
            actor=sess.actor,
            action="admin.signed_in",
            target=sess.email,
            detail={"recovery_code": result.used_recovery_code},
        )
    response = redirect(_next())
    if result.used_recovery_code:
        response = redirect(url_for("admin.dashboard", recovery_left=result.recovery_codes_left))
    return set_cookie(response, token)


@bp.post("/logout")
def logout() -> Any:
    sess = session_from_cookie()
    if sess is not None:
        svc = services()
        with svc.store.write() as db:
            admin_sessions.end(db, svc.clock, sess.id)
            audit(db, svc.clock, actor=sess.actor, action="admin.signed_out", target=sess.email)
    return clear_cookie(redirect(url_for("admin.login")))
