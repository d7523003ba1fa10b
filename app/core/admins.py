"""Admin users of the finance console: created from the shell, always with two-factor sign-in."""

from __future__ import annotations

from argon2 import PasswordHasher

from app.core.admin_auth import Enrollment, enroll
from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.store import Store

MIN_PASSWORD = 12


class AdminError(ValueError):
    """The admin cannot be created as asked; the message says why."""


def create_admin(store: Store, clock: Clock, *, email: str, password: str, role: str = "owner") -> int:
    """Create an admin; raises AdminError for a bad address, a short password or a duplicate."""
    email = email.strip()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise AdminError(f"not an email address: {email!r}")
    if len(password) < MIN_PASSWORD:
        raise AdminError(f"the password must have at least {MIN_PASSWORD} characters")
    if role not in ("owner", "finance", "readonly"):
        raise AdminError(f"unknown role {role!r}")
    with store.write() as db:
        if db.execute("SELECT 1 FROM admin_users WHERE email = ?", (email,)).fetchone():
            raise AdminError(f"an admin {email} already exists")
        cur = db.execute(
            "INSERT INTO admin_users (email, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
            (email, PasswordHasher().hash(password), role, to_db(clock.utc_now())),
        )
        audit(db, clock, actor="cli", action="admin.created", target=email, detail={"role": role})
        return int(cur.lastrowid)


def create_admin_with_second_factor(
    store: Store, clock: Clock, *, email: str, password: str, role: str, issuer: str
) -> Enrollment:
    """Create an admin and enroll its TOTP and recovery codes in one transaction (both or neither)."""
    with store.write() as db:
        admin_id = create_admin(store, clock, email=email, password=password, role=role)
        return enroll(db, clock, admin_id, issuer=issuer, actor="cli")


def reset_second_factor(store: Store, clock: Clock, *, email: str, issuer: str) -> Enrollment:
    """A new TOTP secret and recovery codes for `email` (a lost phone); raises AdminError if unknown."""
    with store.write() as db:
        row = db.execute("SELECT id FROM admin_users WHERE email = ?", (email.strip(),)).fetchone()
        if row is None:
            raise AdminError(f"no admin {email.strip()}")
        return enroll(db, clock, row["id"], issuer=issuer, actor="cli")
