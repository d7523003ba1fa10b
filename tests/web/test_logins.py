"""app.core.logins: passwords, single-use tokens, invitations and who reaches which company."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.core import logins
from app.core.keys import hash_token
from tests.web import factories


def test_password_hash_is_argon2_and_verifies_only_the_right_password():
    hashed = logins.hash_password("a long enough password")
    assert hashed.startswith("$argon2id$")
    assert logins.verify_password(hashed, "a long enough password")
    assert not logins.verify_password(hashed, "a long enough passwort")
    assert not logins.verify_password(None, "anything at all")
    assert not logins.verify_password("not-a-hash", "anything at all")


def test_set_password_refuses_short_passwords_and_creates_the_login(svc):
    with svc.store.write() as db, pytest.raises(logins.PasswordError):
        logins.set_password(db, svc.clock, "new@acme.example", "short")
    with svc.store.write() as db:
        logins.set_password(db, svc.clock, "New@Acme.example", "ten chars!")
        assert logins.authenticate(db, "new@acme.example", "ten chars!")
        assert not logins.authenticate(db, "new@acme.example", "ten chars?")
        assert not logins.authenticate(db, "nobody@acme.example", "ten chars!")


def test_changing_a_password_moves_the_session_epoch(svc):
    factories.make_login(svc, "dana@acme.example")
    before = logins.session_epoch(svc.store.db, "dana@acme.example")
    factories.make_login(svc, "dana@acme.example", "another good password")
    assert logins.session_epoch(svc.store.db, "dana@acme.example") == before + 1


def test_a_token_is_stored_hashed_and_works_once(svc):
    with svc.store.write() as db:
        token = logins.issue_token(
            db, svc.clock, email="dana@acme.example", purpose="magic", ttl=timedelta(minutes=30)
        )
    stored = svc.store.scalar("SELECT token_hash FROM login_tokens")
    assert stored == hash_token(token) and token not in stored
    with svc.store.write() as db:
        assert logins.consume_token(db, svc.clock, token, "invite") is None  # wrong purpose
        assert logins.consume_token(db, svc.clock, token, "magic") == "dana@acme.example"
        assert logins.consume_token(db, svc.clock, token, "magic") is None


def test_an_expired_token_is_refused(svc, clock):
    with svc.store.write() as db:
        token = logins.issue_token(
            db, svc.clock, email="dana@acme.example", purpose="magic", ttl=timedelta(minutes=30)
        )
    clock.advance(timedelta(minutes=30, seconds=1))
    with svc.store.write() as db:
        assert logins.peek_token(db, svc.clock, token, "magic") is None
        assert logins.consume_token(db, svc.clock, token, "magic") is None


def test_invitation_enqueues_one_email_and_not_again_while_outstanding(svc):
    def invite() -> bool:
        with svc.store.write() as db:
            return logins.issue_invitation(
                db,
                svc.clock,
                email="Dana@Acme.example",
                first_name="Dana",
                client_name="Acme Dental LLC",
                base_url="https://pay.test/",
                days=7,
            )

    assert invite() is True
    assert invite() is False
    [email] = factories.outbox_emails(svc)
    assert email["template"] == "invitation"
    assert email["to"] == ["Dana@Acme.example"]
    context = email["context"]
    assert context["contact_first_name"] == "Dana" and context["client_name"] == "Acme Dental LLC"
    assert context["expires_days"] == 7
    assert context["link"].startswith("https://pay.test/invite/")


def test_no_invitation_for_someone_who_already_has_a_password(svc):
    factories.make_login(svc, "dana@acme.example")
    with svc.store.write() as db:
        assert not logins.issue_invitation(
            db,
            svc.clock,
            email="dana@acme.example",
            first_name="Dana",
            client_name="Acme",
            base_url="https://pay.test",
            days=7,
        )
    assert factories.outbox_emails(svc) == []


def test_a_new_invitation_may_go_out_once_the_old_one_expired(svc, clock):
    args = dict(
        email="dana@acme.example", first_name="Dana", client_name="Acme", base_url="https://pay.test", days=7
    )
    with svc.store.write() as db:
        assert logins.issue_invitation(db, svc.clock, **args)
    clock.advance(timedelta(days=7, minutes=1))
    with svc.store.write() as db:
        assert logins.issue_invitation(db, svc.clock, **args)
    assert len(factories.outbox_emails(svc)) == 2


def test_magic_link_only_for_addresses_of_active_contacts(svc, acme):
    factories.make_contact(svc, acme, "gone@acme.example", is_active=False)
    factories.make_contact(svc, acme, "dana@acme.example")
    with svc.store.write() as db:
        assert not logins.issue_magic_link(
            db, svc.clock, email="gone@acme.example", base_url="https://pay.test", minutes=30
        )
        assert not logins.issue_magic_link(
            db, svc.clock, email="stranger@example.com", base_url="https://pay.test", minutes=30
        )
        assert logins.issue_magic_link(
            db, svc.clock, email="DANA@acme.example", base_url="https://pay.test", minutes=30
        )
    [email] = factories.outbox_emails(svc)
    assert email["template"] == "magic_link"
    assert email["context"]["expires_minutes"] == 30
    assert email["context"]["link"].startswith("https://pay.test/magic/")


def test_clients_for_login_lists_active_contacts_with_the_strongest_role(svc, acme, globex):
    initech = factories.make_client(svc, "Initech")
    factories.make_contact(svc, acme, "pat@example.com", role="viewer")
    factories.make_contact(svc, acme, "pat@example.com", role="billing")
    factories.make_contact(svc, globex, "Pat@Example.com", role="approver")
    factories.make_contact(svc, initech, "pat@example.com", is_active=False)
    access = logins.clients_for_login(svc.store.db, "pat@example.com")
    assert [(a.name, a.role) for a in access] == [
        ("Acme Dental LLC", "billing"),
        ("Globex Corporation", "approver"),
    ]
    assert access[0].client_id == acme.id


def test_bump_session_epoch(svc):
    factories.make_login(svc, "dana@acme.example")
    with svc.store.write() as db:
        before = logins.session_epoch(db, "dana@acme.example")
        assert logins.bump_session_epoch(db, "DANA@acme.example") == before + 1
