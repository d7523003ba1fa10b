"""Restore a backup over the live database file, with the service stopped, keeping what was there.

Order, so that a refused or failed restore changes nothing:
1. the backup is decrypted (or copied) into a new 0600 file beside the database;
2. that file must pass `PRAGMA integrity_check` and hold no migration this release does not know
   (a backup from a newer Cashloop would be refused at start-up anyway; better to say so now);
3. only then is the current database (with its -wal and -shm, which belong to it) renamed to
   `cashloop.db.before-restore-<stamp>`, and the checked copy renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from backups import encryption

MIGRATIONS_TABLE = "_sqlite_migrations"


class RestoreError(RuntimeError):
    """The backup was refused (unreadable, damaged, from a newer release); nothing was changed."""


@dataclass(frozen=True)
class Restored:
    database: Path
    kept: Path | None  # where the database that was there before now is (None: there was none)
    migrations: tuple[str, ...]  # the migrations the restored file carries


def check_file(path: Path, known_migrations: Collection[str]) -> tuple[str, ...]:
    """Integrity and schema of a plain SQLite file; returns its applied migrations or raises RestoreError."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RestoreError(f"{path}: cannot be opened as SQLite: {exc}") from exc
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            raise RestoreError(f"{path}: fails the integrity check: " + "; ".join(map(str, rows[:3])))
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
        ).fetchone()
        if not has_table:
            raise RestoreError(f"{path}: not a Cashloop database (no {MIGRATIONS_TABLE} table)")
        applied = tuple(
            r[0] for r in conn.execute(
                f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = 'cashloop' ORDER BY name"
            )
        )
    except sqlite3.DatabaseError as exc:
        raise RestoreError(f"{path}: not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()
    unknown = [m for m in applied if m not in known_migrations]
    if unknown:
        raise RestoreError(
            f"{path}: written by a newer Cashloop (migrations {', '.join(unknown)} are unknown to this "
            "release); install that release first"
        )
    return applied


def restore(
    backup_file: Path,
    db_path: Path,
    *,
    known_migrations: Collection[str],
    key: bytes | None = None,
    now: datetime,
) -> Restored:
    """Put `backup_file` in place of `db_path`; see the module doc. Raises RestoreError (nothing changed)."""
    backup_file, db_path = Path(backup_file), Path(db_path)
    if not backup_file.is_file():
        raise RestoreError(f"no backup file at {backup_file}")
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = db_path.with_name(f".{db_path.name}.restore-{stamp}.{os.getpid()}")
    try:
        _prepare(backup_file, candidate, key)
        applied = check_file(candidate, known_migrations)
        _fsync(candidate)
        kept = _move_aside(db_path, stamp)
        os.replace(candidate, db_path)
        _chown_like_folder(db_path)
        _fsync(db_path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
    return Restored(db_path, kept, applied)


def _prepare(backup_file: Path, candidate: Path, key: bytes | None) -> None:
    if encryption.is_encrypted(backup_file):
        if key is None:
            raise RestoreError(f"{backup_file} is encrypted; set ops.backup.encryption_key_file to its key")
        try:
            encryption.decrypt_file(backup_file, candidate, key)
        except encryption.EncryptionError as exc:
            raise RestoreError(str(exc)) from exc
        return
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with backup_file.open("rb") as src, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)


def _move_aside(db_path: Path, stamp: str) -> Path | None:
    if not db_path.exists():
        return None
    kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
    n = 2
    while kept.exists():
        kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}-{n}")
        n += 1
    # The -wal holds committed transactions of the old file: it moves with it, under the name
    # SQLite will look for, so the kept file opens complete and the restored one starts clean.
    for suffix in ("-wal", "-shm"):
        side = Path(f"{db_path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))
    os.replace(db_path, kept)
    return kept


def _chown_like_folder(path: Path) -> None:
    # Run as root, the restored file must still belong to the service user that owns the folder.
    if os.geteuid() == 0:
        folder = path.parent.stat()
        os.chown(path, folder.st_uid, folder.st_gid)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
