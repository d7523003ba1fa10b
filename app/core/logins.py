"""Portal sign-in: passwords, single-use emailed tokens and which companies a person reaches.

A login is a person, identified by an email address. The clients it reaches are derived every
time from the active contacts carrying that email, so a contact deactivated in the PSA loses
access at the next request. Tokens are stored only as `hash_token(token)`; the clear token
exists in the email and nowhere else. Functions taking `db` expect to run inside the caller's
`store.write()` when they write.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlite_utils import Database

from app.core.clock import Clock, to_db
from app.core.keys import derive_key, hash_token, public_token
from app.core.outbox import enqueue

Purpose = Literal["invite", "magic", "reset"]
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 1024  # argon2 accepts more; a cap keeps a hash from becoming a DoS lever.
ROLE_RANK = {"billing": 3, "approver": 2, "viewer": 1}

_hasher = PasswordHasher()
# Verified against when the email is unknown, so "no such login" costs the same time as a bad password.
_DUMMY_HASH = _hasher.hash("cashloop-timing-equaliser")


class PasswordError(ValueError):
    """A password the person must change; the message says why, for them."""


class ClientAccess(NamedTuple):
    client_id: int
    name: str
    role: str


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches the argon2 `password_hash`; False for a mismatch or a bad hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def check_password(password: str) -> None:
    """Raise PasswordError when `password` is too short or too long."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise PasswordError(f"Use at least {PASSWORD_MIN_LENGTH} characters.")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise PasswordError(f"Use at most {PASSWORD_MAX_LENGTH} characters.")


def set_password(db: Database, clock: Clock, email: str, password: str) -> None:
    """Set the password of `email`, creating its login if absent. Raises PasswordError.

    Changing a password ends every other session (the epoch moves) and voids outstanding
    invitation and reset links, which were only ways to reach this point.
    """
    check_password(password)
    now = to_db(clock.utc_now())
    db.execute(
        "INSERT INTO logins (email, password_hash, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash, "
        "session_epoch = session_epoch + 1",
        (normalize_email(email), hash_password(password), now),
    )
    db.execute(
        "UPDATE login_tokens SET used_at = ? WHERE email = ? AND purpose IN ('invite', 'reset') "
        "AND used_at IS NULL",
        (now, normalize_email(email)),
    )


def authenticate(db: Database, email: str, password: str) -> bool:
    """True when `email` has a password and `password` matches it; upgrades an outdated hash."""
    row = db.execute("SELECT password_hash FROM logins WHERE email = ?", (normalize_email(email),)).fetchone()
    stored = row[0] if row else None
    if not verify_password(stored, password):
        return False
    if _hasher.check_needs_rehash(stored):
        db.execute(
            "UPDATE logins SET password_hash = ? WHERE email = ?",
            (hash_password(password), normalize_email(email)),
        )
    return True


def record_login(db: Database, clock: Clock, email: str) -> int:
    """Note a successful sign-in (creating the login row if absent); returns the session epoch."""
    now = to_db(clock.utc_now())
    db.execute(
        "INSERT INTO logins (email, created_at, last_login_at) VALUES (?, ?, ?) "
        "ON CONFLICT (email) DO UPDATE SET last_login_at = excluded.last_login_at",
        (normalize_email(email), now, now),
    )
    return int(
        db.execute("SELECT session_epoch FROM logins WHERE email = ?", (normalize_email(email),)).fetchone()[
            0
        ]
    )


def session_epoch(db: Database, email: str) -> int | None:
    """The current epoch of `email`, or None when there is no such login."""
    row = db.execute("SELECT session_epoch FROM logins WHERE email = ?", (normalize_email(email),)).fetchone()
    return None if row is None else int(row[0])


def bump_session_epoch(db: Database, email: str) -> int:
    """Invalidate every session of `email` ("sign out everywhere"); returns the new epoch."""
    db.execute(
        "UPDATE logins SET session_epoch = session_epoch + 1 WHERE email = ?", (normalize_email(email),)
    )
    return session_epoch(db, email) or 0


def clients_for_login(db: Database, email: str) -> list[ClientAccess]:
    """The clients `email` reaches through active contacts, by name, with the strongest role held."""
    rows = db.execute(
        "SELECT c.id, c.name, ct.role FROM contacts ct JOIN clients c ON c.id = ct.client_id "
        "WHERE ct.email = ? AND ct.is_active = 1 ORDER BY c.name COLLATE NOCASE, c.id",
        (normalize_email(email),),
    ).fetchall()
    best: dict[int, ClientAccess] = {}
    for client_id, name, role in rows:
        held = best.get(client_id)
        if held is None or ROLE_RANK.get(role, 0) > ROLE_RANK.get(held.role, 0):
            best[client_id] = ClientAccess(client_id, name, role)
    return list(best.values())


def issue_token(db: Database, clock: Clock, *, email: str, purpose: Purpose, ttl: timedelta) -> str:
    """Create a single-use token for `email`; returns the clear token (only its hash is stored)."""
    token = public_token(32)
    now = clock.utc_now()
    db.execute(
        "INSERT INTO login_tokens (token_hash, email, purpose, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (hash_token(token), normalize_email(email), purpose, to_db(now), to_db(now + ttl)),
    )
    return token


def peek_token(db: Database, clock: Clock, token: str, purpose: Purpose) -> str | None:
    """The email of an unused, unexpired token, without using it up (to show a form first)."""
    row = db.execute(
        "SELECT email FROM login_tokens WHERE token_hash = ? AND purpose = ? AND used_at IS NULL "
        "AND expires_at > ?",
        (hash_token(token), purpose, to_db(clock.utc_now())),
    ).fetchone()
    return None if row is None else str(row[0])


def consume_token(db: Database, clock: Clock, token: str, purpose: Purpose) -> str | None:
    """Use up `token`; returns its email, or None when unknown, expired, already used or for
    another purpose. Exactly one caller wins a race: the UPDATE is conditional on `used_at IS NULL`.
    """
    now = to_db(clock.utc_now())
    cur = db.execute(
        "UPDATE login_tokens SET used_at = ? WHERE token_hash = ? AND purpose = ? AND used_at IS NULL "
        "AND expires_at > ?",
        (now, hash_token(token), purpose, now),
    )
    if cur.rowcount != 1:
        return None
    row = db.execute("SELECT email FROM login_tokens WHERE token_hash = ?", (hash_token(token),)).fetchone()
    return str(row[0])


def _link(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def issue_invitation(
    db: Database,
    clock: Clock,
    *,
    email: str,
    first_name: str,
    client_name: str,
    base_url: str,
    days: int,
    branding_name: str | None = None,
) -> bool:
    """Create an invitation token and enqueue its email. Returns False (nothing written) when
    `email` already has a password or an unexpired invitation is outstanding. Idempotent in the
    sense that a repeat call while one is outstanding does nothing.
    """
    address = normalize_email(email)
    if db.execute(
        "SELECT 1 FROM logins WHERE email = ? AND password_hash IS NOT NULL", (address,)
    ).fetchone():
        return False
    if db.execute(
        "SELECT 1 FROM login_tokens WHERE email = ? AND purpose = 'invite' AND used_at IS NULL "
        "AND expires_at > ?",
        (address, to_db(clock.utc_now())),
    ).fetchone():
        return False
    token = issue_token(db, clock, email=address, purpose="invite", ttl=timedelta(days=days))
    context: dict[str, object] = {
        "contact_first_name": first_name,
        "client_name": client_name,
        "link": _link(base_url, f"/invite/{token}"),
        "expires_days": days,
    }
    if branding_name is not None:
        context["branding_name"] = branding_name
    enqueue(
        db,
        clock,
        kind="email",
        key=derive_key("invite", email=address, token_hash=hash_token(token)),
        payload={"template": "invitation", "to": [email.strip()], "context": context},
    )
    return True


def issue_magic_link(
    db: Database,
    clock: Clock,
    *,
    email: str,
    base_url: str,
    minutes: int,
    purpose: Literal["magic", "reset"] = "magic",
) -> bool:
    """Create a sign-in (or password reset) token and enqueue the "magic_link" email.

    Returns False, writing nothing, when no active contact carries `email`: the caller answers
    the same either way so the form does not reveal which addresses are known.
    """
    address = normalize_email(email)
    if not clients_for_login(db, address):
        return False
    token = issue_token(db, clock, email=address, purpose=purpose, ttl=timedelta(minutes=minutes))
    path = f"/magic/{token}" if purpose == "magic" else f"/reset/{token}"
    enqueue(
        db,
        clock,
        kind="email",
        key=derive_key(purpose, email=address, token_hash=hash_token(token)),
        payload={
            "template": "magic_link",
            "to": [email.strip()],
            "context": {"link": _link(base_url, path), "expires_minutes": minutes},
        },
    )
    return True
