"""Sign-in flows through the real app: password, sign-out, invitation, magic link, reset, rate limit."""

from __future__ import annotations

import re
from datetime import timedelta

from app.core import logins
from tests.web import factories
from tests.web.conftest import post, sign_in


def _link_token(svc, prefix: str) -> str:
    link = factories.outbox_emails(svc)[-1]["context"]["link"]
    match = re.search(rf"/{prefix}/([^/]+)$", link)
    assert match, link
    return match.group(1)


def test_sign_in_with_the_right_password_opens_home(client, dana):
    response = sign_in(client, dana)
    assert response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Acme Dental LLC" in page


def test_sign_in_is_case_insensitive_on_the_email(client, dana):
    sign_in(client, "DANA@Acme.Example")
    assert client.get("/").status_code == 200


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(client, dana):
    wrong = post(client, "/login", {"email": dana, "password": "not the password"})
    unknown = post(client, "/login", {"email": "nobody@acme.example", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert "do not match" in wrong.get_data(as_text=True)
    assert "do not match" in unknown.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_a_contact_deactivated_in_the_psa_cannot_sign_in_or_stay_signed_in(client, svc, dana):
    sign_in(client, dana)
    with svc.store.write() as db:
        db.execute("UPDATE contacts SET is_active = 0 WHERE email = ?", (dana,))
    assert client.get("/").status_code == 302
    assert post(client, "/login", {"email": dana, "password": factories.PASSWORD}).status_code == 401


def test_next_is_followed_only_within_the_site(client, dana):
    ok = post(
        client, "/login", {"email": dana, "password": factories.PASSWORD, "next": "/invoices?status=all"}
    )
    assert ok.headers["Location"] == "/invoices?status=all"
    post(client, "/logout")
    evil = post(client, "/login", {"email": dana, "password": factories.PASSWORD, "next": "//evil.example/x"})
    assert evil.headers["Location"] == "/"


def test_signing_out_ends_the_session(signed_in):
    response = post(signed_in, "/logout")
    assert response.headers["Location"] == "/login"
    assert signed_in.get("/invoices").status_code == 302


def test_sign_out_everywhere_ends_other_sessions_too(app, dana):
    phone, laptop = app.test_client(), app.test_client()
    sign_in(phone, dana)
    sign_in(laptop, dana)
    post(laptop, "/logout-everywhere")
    assert phone.get("/").status_code == 302
    assert laptop.get("/").status_code == 302
    sign_in(phone, dana)
    assert phone.get("/").status_code == 200


def test_invitation_sets_a_password_signs_in_and_works_once(client, svc, acme):
    factories.make_contact(svc, acme, "new@acme.example")
    with svc.store.write() as db:
        logins.issue_invitation(
            db,
            svc.clock,
            email="new@acme.example",
            first_name="Neo",
            client_name="Acme",
            base_url=svc.config.cashloop.base_url,
            days=7,
        )
    token = _link_token(svc, "invite")
    form = client.get(f"/invite/{token}")
    assert form.status_code == 200 and 'id="set-password-button"' in form.get_data(as_text=True)

    short = post(client, f"/invite/{token}", {"password": "short", "password_confirm": "short"})
    assert short.status_code == 400 and "at least 10" in short.get_data(as_text=True)
    mismatch = post(
        client, f"/invite/{token}", {"password": "long enough 1", "password_confirm": "long enough 2"}
    )
    assert mismatch.status_code == 400 and "do not match" in mismatch.get_data(as_text=True)

    done = post(
        client, f"/invite/{token}", {"password": "long enough 1", "password_confirm": "long enough 1"}
    )
    assert done.headers["Location"] == "/"
    assert client.get("/").status_code == 200

    post(client, "/logout")
    assert client.get(f"/invite/{token}").status_code == 400
    again = post(
        client, f"/invite/{token}", {"password": "other pass 22", "password_confirm": "other pass 22"}
    )
    assert again.status_code == 400
    sign_in(client, "new@acme.example", "long enough 1")


def test_an_expired_invitation_is_refused(client, svc, acme, clock):
    factories.make_contact(svc, acme, "new@acme.example")
    with svc.store.write() as db:
        logins.issue_invitation(
            db,
            svc.clock,
            email="new@acme.example",
            first_name="Neo",
            client_name="Acme",
            base_url=svc.config.cashloop.base_url,
            days=7,
        )
    token = _link_token(svc, "invite")
    clock.advance(timedelta(days=8))
    assert client.get(f"/invite/{token}").status_code == 400
    response = post(
        client, f"/invite/{token}", {"password": "long enough 1", "password_confirm": "long enough 1"}
    )
    assert response.status_code == 400
    assert svc.store.scalar("SELECT password_hash FROM logins WHERE email = 'new@acme.example'") is None


def test_magic_link_request_answers_the_same_for_known_and_unknown_addresses(client, svc, acme):
    factories.make_contact(svc, acme, "dana@acme.example")
    known = post(client, "/magic", {"email": "dana@acme.example"}).get_data(as_text=True)
    unknown = post(client, "/magic", {"email": "stranger@example.com"}).get_data(as_text=True)
    assert "If that address belongs to a billing contact" in known
    assert known.replace("dana@acme.example", "") == unknown.replace("stranger@example.com", "")
    assert [e["to"] for e in factories.outbox_emails(svc)] == [["dana@acme.example"]]


def test_magic_link_signs_in_once_and_only_on_post(client, svc, acme):
    factories.make_contact(svc, acme, "dana@acme.example")
    post(client, "/magic", {"email": "dana@acme.example"})
    token = _link_token(svc, "magic")
    # A mail scanner's GET must not use the link up.
    assert client.get(f"/magic/{token}").status_code == 200
    assert client.get(f"/magic/{token}").status_code == 200
    assert client.get("/").status_code == 302
    response = post(client, f"/magic/{token}")
    assert response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    post(client, "/logout")
    assert post(client, f"/magic/{token}").status_code == 400
    assert client.get("/").status_code == 302


def test_an_expired_magic_link_is_refused(client, svc, acme, clock):
    factories.make_contact(svc, acme, "dana@acme.example")
    post(client, "/magic", {"email": "dana@acme.example"})
    token = _link_token(svc, "magic")
    clock.advance(timedelta(minutes=svc.config.portal.magic_link_minutes, seconds=1))
    assert client.get(f"/magic/{token}").status_code == 400
    assert post(client, f"/magic/{token}").status_code == 400
    assert client.get("/").status_code == 302


def test_password_reset_sets_a_new_password_and_ends_old_sessions(app, svc, dana):
    other_device = app.test_client()
    sign_in(other_device, dana)
    client = app.test_client()
    post(client, "/reset", {"email": dana})
    token = _link_token(svc, "reset")
    response = post(
        client, f"/reset/{token}", {"password": "brand new secret", "password_confirm": "brand new secret"}
    )
    assert response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert other_device.get("/").status_code == 302
    post(client, "/logout")
    assert post(client, "/login", {"email": dana, "password": factories.PASSWORD}).status_code == 401
    sign_in(client, dana, "brand new secret")


def test_a_magic_token_is_not_a_reset_token(client, svc, acme):
    factories.make_contact(svc, acme, "dana@acme.example")
    post(client, "/magic", {"email": "dana@acme.example"})
    token = _link_token(svc, "magic")
    assert client.get(f"/reset/{token}").status_code == 400


def test_login_is_refused_for_15_minutes_after_5_failures_for_an_email(app, client, dana, clock):
    for _ in range(5):
        assert post(client, "/login", {"email": dana, "password": "wrong password"}).status_code == 401
    # Even the right password is refused now, from any address.
    other_ip = app.test_client()
    blocked = post(
        other_ip,
        "/login",
        {"email": dana, "password": factories.PASSWORD},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert blocked.status_code == 429
    assert "Too many attempts" in blocked.get_data(as_text=True)
    clock.advance(timedelta(minutes=15, seconds=1))
    sign_in(client, dana)


def test_login_is_refused_after_5_failures_from_one_address(client, svc, acme, dana):
    for n in range(5):
        post(client, "/login", {"email": f"guess{n}@acme.example", "password": "wrong password"})
    assert post(client, "/login", {"email": dana, "password": factories.PASSWORD}).status_code == 429


def test_failures_older_than_the_window_do_not_count(client, dana, clock):
    for _ in range(4):
        post(client, "/login", {"email": dana, "password": "wrong password"})
    clock.advance(timedelta(minutes=16))
    for _ in range(4):
        post(client, "/login", {"email": dana, "password": "wrong password"})
    sign_in(client, dana)


def test_sign_in_link_requests_are_limited_without_saying_so(client, svc, acme):
    factories.make_contact(svc, acme, "dana@acme.example")
    for _ in range(8):
        response = post(client, "/magic", {"email": "dana@acme.example"})
        assert response.status_code == 200
        assert "If that address belongs" in response.get_data(as_text=True)
    assert len(factories.outbox_emails(svc)) == 5
