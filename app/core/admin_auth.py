"""Admin sign-in factors: password, TOTP (pyotp), single-use recovery codes, lockout.

A wrong password is only rate-limited (by the web layer), so nobody can lock an admin out
without knowing the password; wrong second-factor codes are counted here, in the database, and
`threshold` of them in a row lock the account for `lockout`. A right TOTP code used a second
time is refused as a replay but not counted: the lockout bounds guessing, and a replay is no
guess (it can never succeed, however often it is tried). Recovery codes are random and
stored as SHA-256 hashes; each works once. Functions taking `db` expect the caller's
`store.write()` when they write.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, from_db, to_db
from app.core.keys import hash_token
from app.core.logins import verify_password

RECOVERY_CODE_COUNT = 10
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper without doubt


@dataclass(frozen=True)
class Enrollment:
    """What the admin must copy once: the secret (as an otpauth:// URI too) and the recovery codes."""

    secret: str
    uri: str
    recovery_codes: tuple[str, ...]


@dataclass(frozen=True)
class CodeCheck:
    ok: bool
    locked_until: datetime | None = None
    used_recovery_code: bool = False
    recovery_codes_left: int = 0
    is_replay: bool = False  # a right code of a step already used: refused, not counted


def find_admin(db: Database, email: str) -> sqlite3.Row | None:
    return db.execute("SELECT * FROM admin_users WHERE email = ?", (email.strip(),)).fetchone()


def check_password(db: Database, email: str, password: str) -> sqlite3.Row | None:
    """The admin row when `password` is right; None otherwise (same cost for an unknown email)."""
    row = find_admin(db, email)
    return row if verify_password(row["password_hash"] if row else None, password) else None


def new_recovery_code() -> str:
    """Three groups of four characters (about 59 bits), e.g. `k7m2-9xqp-4tnv`."""
    chars = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def _normalize(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def enroll(db: Database, clock: Clock, admin_id: int, *, issuer: str, actor: str) -> Enrollment:
    """Give the admin a new TOTP secret and new recovery codes; earlier ones stop working."""
    row = db.execute("SELECT email FROM admin_users WHERE id = ?", (admin_id,)).fetchone()
    if row is None:
        raise LookupError(f"no admin with id {admin_id}")
    secret = pyotp.random_base32()
    now = to_db(clock.utc_now())
    db.execute(
        "UPDATE admin_users SET totp_secret = ?, totp_last_step = NULL, failed_codes = 0, "
        "locked_until = NULL "
        "WHERE id = ?",
        (secret, admin_id),
    )
    db.execute("DELETE FROM admin_recovery_codes WHERE admin_id = ?", (admin_id,))
    codes = tuple(new_recovery_code() for _ in range(RECOVERY_CODE_COUNT))
    for code in codes:
        db.execute(
            "INSERT INTO admin_recovery_codes (admin_id, code_hash, created_at) VALUES (?, ?, ?)",
            (admin_id, hash_token(_normalize(code)), now),
        )
    # A new factor ends every session that was opened with the old one.
    db.execute(
        "UPDATE admin_sessions SET ended_at = ? WHERE admin_id = ? AND ended_at IS NULL", (now, admin_id)
    )
    audit(db, clock, actor=actor, action="admin.second_factor_enrolled", target=row["email"])
    uri = pyotp.TOTP(secret).provisioning_uri(name=row["email"], issuer_name=issuer)
    return Enrollment(secret, uri, codes)


def locked_until(admin: sqlite3.Row, clock: Clock) -> datetime | None:
    """When the lock ends, or None if the account is not locked now."""
    if not admin["locked_until"]:
        return None
    until = from_db(admin["locked_until"])
    return until if until > clock.utc_now() else None


def _totp_step(secret: str, code: str, now: datetime, last_step: int | None) -> tuple[int | None, bool]:
    """(the unused 30-second step whose code `code` is, within one step of clock drift either way,
    or None; whether `code` is instead the code of a step already used, or older than one used)."""
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // totp.interval
    replayed = False
    for step in (current - 1, current, current + 1):
        if not hmac.compare_digest(totp.at(step * totp.interval), code):
            continue
        if last_step is not None and step <= last_step:
            replayed = True  # right, but spent: a replay
            continue
        return step, False
    return None, replayed


def check_code(
    db: Database, clock: Clock, admin_id: int, code: str, *, threshold: int, lockout: timedelta
) -> CodeCheck:
    """Accept a 6-digit TOTP code or an unused recovery code. Not idempotent: it counts failures.

    While the account is locked nothing is accepted. A wrong code adds one failure; the
    `threshold`-th in a row locks the account for `lockout`. A right code resets the count.
    """
    admin = db.execute("SELECT * FROM admin_users WHERE id = ?", (admin_id,)).fetchone()
    if admin is None or not admin["totp_secret"]:
        return CodeCheck(False)
    until = locked_until(admin, clock)
    if until is not None:
        return CodeCheck(False, locked_until=until)
    now = clock.utc_now()
    typed = _normalize(code)
    used_recovery = False
    accepted = False
    if typed.isascii() and typed.isdigit() and len(typed) == 6:  # "٠١٢" is isdigit() too
        step, replayed = _totp_step(admin["totp_secret"], typed, now, admin["totp_last_step"])
        if replayed:
            # Audited (a code seen by someone else shows here), not counted toward the lockout.
            audit(db, clock, actor=f"admin:{admin['email']}", action="admin.code_reused",
                  target=admin["email"])
            return CodeCheck(False, is_replay=True)
        if step is not None:
            db.execute("UPDATE admin_users SET totp_last_step = ? WHERE id = ?", (step, admin_id))
            accepted = True
    elif typed:
        cur = db.execute(
            "UPDATE admin_recovery_codes SET used_at = ? "
            "WHERE admin_id = ? AND code_hash = ? AND used_at IS NULL",
            (to_db(now), admin_id, hash_token(typed)),
        )
        accepted = used_recovery = cur.rowcount == 1
    if accepted:
        db.execute("UPDATE admin_users SET failed_codes = 0, locked_until = NULL WHERE id = ?", (admin_id,))
        left = int(
            db.execute(
                "SELECT COUNT(*) FROM admin_recovery_codes WHERE admin_id = ? AND used_at IS NULL",
                (admin_id,),
            ).fetchone()[0]
        )
        if used_recovery:
            audit(
                db,
                clock,
                actor=f"admin:{admin['email']}",
                action="admin.recovery_code_used",
                target=admin["email"],
                detail={"codes_left": left},
            )
        return CodeCheck(True, used_recovery_code=used_recovery, recovery_codes_left=left)
    failures = admin["failed_codes"] + 1
    if failures >= threshold:
        until = now + lockout
        db.execute(
            "UPDATE admin_users SET failed_codes = 0, locked_until = ? WHERE id = ?", (to_db(until), admin_id)
        )
        audit(
            db,
            clock,
            actor=f"admin:{admin['email']}",
            action="admin.locked_out",
            target=admin["email"],
            detail={"wrong_codes": failures, "until": to_db(until)},
        )
        return CodeCheck(False, locked_until=until)
    db.execute("UPDATE admin_users SET failed_codes = ? WHERE id = ?", (failures, admin_id))
    return CodeCheck(False)


def unlock(db: Database, clock: Clock, admin_id: int, *, actor: str) -> None:
    """End a lockout early (an owner vouching for a colleague)."""
    row = db.execute("SELECT email FROM admin_users WHERE id = ?", (admin_id,)).fetchone()
    if row is None:
        raise LookupError(f"no admin with id {admin_id}")
    db.execute("UPDATE admin_users SET failed_codes = 0, locked_until = NULL WHERE id = ?", (admin_id,))
    audit(db, clock, actor=actor, action="admin.unlocked", target=row["email"])
