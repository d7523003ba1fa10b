"""Admin sign-in: password then TOTP, recovery codes, lockout, sessions apart from the portal's."""

from __future__ import annotations

from datetime import timedelta

from app.core.admin_sessions import PENDING_FOR
from app.web.admin.guard import COOKIE, SIGN_IN_ENDPOINTS
from tests.web.admin.helpers import csrf, make_admin, password_step, post, sign_in
from tests.web.conftest import sign_in as portal_sign_in


def _get_routes(app) -> list[str]:
    """Every GET page of the admin blueprint, with 1 for each integer id in its URL."""
    urls = []
    for rule in app.url_map.iter_rules():
        if (
            rule.endpoint.startswith("admin.")
            and "GET" in rule.methods
            and rule.endpoint not in SIGN_IN_ENDPOINTS
        ):
            urls.append(
                rule.rule.replace("<int:client_id>", "1")
                .replace("<int:payment_id>", "1")
                .replace("<name>", "receipt")
            )
    assert len(urls) >= 14 and all("<" not in u for u in urls), urls
    return urls


def test_an_admin_signs_in_with_password_then_a_totp_code_and_reaches_the_dashboard(app, svc, owner, clock):
    client = app.test_client()
    first = password_step(client, owner)
    assert first.status_code == 302 and first.headers["Location"].startswith("/admin/code")
    assert client.get("/admin/").headers["Location"].startswith("/admin/code")
    second = post(client, "/admin/code", {"code": owner.code(clock)})
    assert second.status_code == 302 and second.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200 and "owner@northwind.example (owner)" in page.get_data(as_text=True)
    actions = [
        r["action"]
        for r in svc.store.all(
            "SELECT action FROM audit_log WHERE actor = ?", ("admin:owner@northwind.example",)
        )
    ]
    assert actions == ["admin.signed_in"]


def test_a_wrong_password_says_nothing_about_the_email_and_starts_no_session(app, svc, owner):
    client = app.test_client()
    wrong = password_step(client, owner, password="not the passphrase")
    unknown = post(
        client, "/admin/login", {"email": "nobody@northwind.example", "password": "whatever it is"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert "That email and password do not match an admin." in wrong.get_data(as_text=True)
    assert wrong.get_data(as_text=True).count("do not match") == unknown.get_data(as_text=True).count(
        "do not match"
    )
    assert svc.store.scalar("SELECT COUNT(*) FROM admin_sessions") == 0
    assert client.get("/admin/").status_code == 302


def test_every_admin_page_needs_a_signed_in_admin(app):
    client = app.test_client()
    for url in _get_routes(app):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/admin/login"), url


def test_a_password_without_the_code_reaches_no_admin_page(app, owner):
    client = app.test_client()
    password_step(client, owner)
    for url in _get_routes(app):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/admin/code"), url


def test_an_admin_without_totp_cannot_reach_any_admin_page(app, svc):
    bare = make_admin(svc, "legacy@northwind.example", "owner", with_totp=False)
    client = app.test_client()
    response = password_step(client, bare)
    assert response.status_code == 403
    assert "cashloop admin-2fa --email legacy@northwind.example" in response.get_data(as_text=True)
    assert svc.store.scalar("SELECT COUNT(*) FROM admin_sessions") == 0
    for url in _get_routes(app):
        assert client.get(url).headers["Location"].startswith("/admin/login"), url


def test_five_wrong_codes_lock_the_admin_for_fifteen_minutes_even_against_the_right_code(
    app, svc, owner, clock
):
    client = app.test_client()
    password_step(client, owner)
    for n in range(4):
        wrong = post(client, "/admin/code", {"code": "000000"})
        assert wrong.status_code == 401
        assert f"{4 - n} more wrong code" in wrong.get_data(as_text=True)
    locked = post(client, "/admin/code", {"code": "000000"})
    assert locked.status_code == 429 and "locked until 10:15" in locked.get_data(as_text=True)
    # The half-done session is over, and the password (even right) leads nowhere while locked.
    again = password_step(client, owner)
    assert again.status_code == 429 and "locked until 10:15" in again.get_data(as_text=True)
    clock.advance(timedelta(minutes=14, seconds=59))
    assert password_step(client, owner).status_code == 429
    assert client.get("/admin/").status_code == 302
    clock.advance(timedelta(seconds=2))
    sign_in(client, owner, clock)
    assert client.get("/admin/").status_code == 200
    actions = [r["action"] for r in svc.store.all("SELECT action FROM audit_log ORDER BY id")]
    assert actions.count("admin.locked_out") == 1 and actions[-1] == "admin.signed_in"


def test_a_totp_code_works_once(app, owner, clock):
    first = sign_in(app.test_client(), owner, clock)
    assert first.get("/admin/").status_code == 200
    replay = app.test_client()
    password_step(replay, owner)
    assert post(replay, "/admin/code", {"code": owner.code(clock)}).status_code == 401
    clock.advance(timedelta(seconds=30))
    assert post(replay, "/admin/code", {"code": owner.code(clock)}).status_code == 302


def test_a_replayed_code_is_refused_as_already_used_and_not_counted_toward_the_lockout(
    app, svc, owner, clock
):
    sign_in(app.test_client(), owner, clock)
    client = app.test_client()
    password_step(client, owner)
    for _ in range(6):  # more than the five wrong codes that lock an admin
        replayed = post(client, "/admin/code", {"code": owner.code(clock)})
        page = replayed.get_data(as_text=True)
        assert replayed.status_code == 401
        assert "That code was already used to sign in" in page and "Wait for the next code" in page
        assert "not right" not in page and "wrong code" not in page
    assert svc.store.scalar("SELECT failed_codes FROM admin_users WHERE id = ?", (owner.id,)) == 0
    assert svc.store.scalar("SELECT locked_until FROM admin_users WHERE id = ?", (owner.id,)) is None
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'admin.code_reused'") == 6
    # A wrong code still counts from zero, and the next step's code signs in.
    wrong = post(client, "/admin/code", {"code": "000000"})
    assert "That code is not right. 4 more wrong codes" in wrong.get_data(as_text=True)
    clock.advance(timedelta(seconds=30))
    assert post(client, "/admin/code", {"code": owner.code(clock)}).status_code == 302


def test_a_recovery_code_signs_in_once_and_says_how_many_are_left(app, svc, owner):
    client = app.test_client()
    password_step(client, owner)
    code = owner.recovery_codes[0].upper().replace("-", " ")  # typed loosely from paper
    used = post(client, "/admin/code", {"code": code})
    assert used.status_code == 302 and "recovery_left=9" in used.headers["Location"]
    assert "9 left" in client.get(used.headers["Location"]).get_data(as_text=True)
    other = app.test_client()
    password_step(other, owner)
    assert post(other, "/admin/code", {"code": owner.recovery_codes[0]}).status_code == 401
    stored = [r[0] for r in svc.store.all("SELECT code_hash FROM admin_recovery_codes")]
    assert len(stored) == 10 and not any(
        c.replace("-", "") in h for c in owner.recovery_codes for h in stored
    )


def test_the_session_token_changes_when_the_code_is_accepted(app, owner, clock):
    client = app.test_client()
    password_step(client, owner)
    half = client.get_cookie(COOKIE).value
    post(client, "/admin/code", {"code": owner.code(clock)})
    full = client.get_cookie(COOKIE).value
    assert half != full
    stale = app.test_client()
    stale.set_cookie(COOKIE, half)
    assert stale.get("/admin/").headers["Location"].startswith("/admin/login")


def test_a_half_signed_in_session_expires_after_five_minutes(app, owner, clock):
    client = app.test_client()
    password_step(client, owner)
    clock.advance(PENDING_FOR + timedelta(seconds=1))
    assert client.get("/admin/code").headers["Location"].startswith("/admin/login")


def test_an_idle_admin_is_signed_out_after_the_configured_minutes(app, owner, clock):
    client = sign_in(app.test_client(), owner, clock)
    clock.advance(timedelta(minutes=29))
    assert client.get("/admin/").status_code == 200
    clock.advance(timedelta(minutes=29))  # each request restarts the idle time
    assert client.get("/admin/").status_code == 200
    clock.advance(timedelta(minutes=30, seconds=1))
    assert client.get("/admin/").headers["Location"].startswith("/admin/login")


def test_signing_out_ends_the_session_for_its_cookie(app, svc, owner, clock):
    client = sign_in(app.test_client(), owner, clock)
    token = client.get_cookie(COOKIE).value
    assert post(client, "/admin/logout").headers["Location"] == "/admin/login"
    thief = app.test_client()
    thief.set_cookie(COOKIE, token)
    assert thief.get("/admin/").status_code == 302
    assert svc.store.scalar("SELECT COUNT(*) FROM admin_sessions WHERE ended_at IS NULL") == 0


def test_a_portal_session_never_reaches_the_admin(app, svc, dana):
    client = app.test_client()
    portal_sign_in(client, dana)
    assert client.get("/").status_code == 200
    response = client.get("/admin/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login")
    assert client.get_cookie(COOKIE) is None


def test_an_admin_session_is_no_portal_sign_in(app, owner, clock):
    client = sign_in(app.test_client(), owner, clock)
    assert client.get("/").headers["Location"].startswith("/login")


def test_repeated_wrong_passwords_are_refused_for_a_while_even_when_right(app, owner, clock):
    client = app.test_client()
    for _ in range(5):
        assert password_step(client, owner, password="wrong wrong wrong").status_code == 401
    assert password_step(client, owner).status_code == 429
    clock.advance(timedelta(minutes=16))
    assert password_step(client, owner).status_code == 302


def test_the_login_form_needs_its_csrf_token(app, owner):
    client = app.test_client()
    csrf(client)
    response = client.post("/admin/login", data={"email": owner.email, "password": "a long admin passphrase"})
    assert response.status_code == 400
