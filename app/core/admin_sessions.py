"""Admin sessions: server-side rows behind a random cookie token, apart from portal sessions.

A session starts after the password and is good for nothing but the code page until the second
factor is accepted (`second_factor_at`); then its token is replaced, so a token seen before the
code cannot be used after it. Idle sessions end after `idle`; half-signed-in ones after
PENDING_FOR. Functions taking `db` expect the caller's `store.write()` when they write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlite_utils import Database

from app.core.clock import Clock, from_db, to_db
from app.core.keys import hash_token, public_token

PENDING_FOR = timedelta(minutes=5)
TOUCH_EVERY = timedelta(seconds=30)  # NOTE: spares a write on every admin request


@dataclass(frozen=True)
class AdminSession:
    id: int
    admin_id: int
    email: str
    role: str
    has_second_factor: bool
    view_as_client_id: int | None

    @property
    def actor(self) -> str:
        """How this admin is named in the audit log."""
        return f"admin:{self.email}"

    @property
    def can_write(self) -> bool:
        return self.role in ("owner", "finance")


def start(db: Database, clock: Clock, admin_id: int) -> str:
    """A new half-signed-in session (password only); returns the cookie token."""
    token = public_token(32)
    now = to_db(clock.utc_now())
    db.execute(
        "INSERT INTO admin_sessions (token_hash, admin_id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
        (hash_token(token), admin_id, now, now),
    )
    return token


def load(db: Database, clock: Clock, token: str, *, idle: timedelta) -> AdminSession | None:
    """The live session of `token`, or None if unknown, ended, idle too long or half-done too long."""
    if not token:
        return None
    row = db.execute(
        "SELECT s.*, u.email, u.role FROM admin_sessions s JOIN admin_users u ON u.id = s.admin_id "
        "WHERE s.token_hash = ? AND s.ended_at IS NULL",
        (hash_token(token),),
    ).fetchone()
    if row is None:
        return None
    now = clock.utc_now()
    limit = idle if row["second_factor_at"] else PENDING_FOR
    if now - from_db(row["last_seen_at"]) > limit:
        return None
    return AdminSession(
        id=row["id"],
        admin_id=row["admin_id"],
        email=row["email"],
        role=row["role"],
        has_second_factor=row["second_factor_at"] is not None,
        view_as_client_id=row["view_as_client_id"],
    )


def touch(db: Database, clock: Clock, session_id: int) -> None:
    now = clock.utc_now()
    db.execute(
        "UPDATE admin_sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?",
        (to_db(now), session_id, to_db(now - TOUCH_EVERY)),
    )


def complete(db: Database, clock: Clock, session_id: int) -> str:
    """Mark the second factor passed and return the session's new token."""
    token = public_token(32)
    now = to_db(clock.utc_now())
    db.execute(
        "UPDATE admin_sessions SET token_hash = ?, second_factor_at = ?, last_seen_at = ? WHERE id = ?",
        (hash_token(token), now, now, session_id),
    )
    db.execute(
        "UPDATE admin_users SET last_login_at = ? "
        "WHERE id = (SELECT admin_id FROM admin_sessions WHERE id = ?)",
        (now, session_id),
    )
    return token


def end(db: Database, clock: Clock, session_id: int) -> None:
    db.execute(
        "UPDATE admin_sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
        (to_db(clock.utc_now()), session_id),
    )


def set_view_as(db: Database, session_id: int, client_id: int | None) -> None:
    db.execute("UPDATE admin_sessions SET view_as_client_id = ? WHERE id = ?", (client_id, session_id))
