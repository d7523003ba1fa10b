"""Online SQLite backup: a consistent copy of the live database, checked before it counts.

    sudo -u cashloop /opt/cashloop/.venv/bin/python /opt/cashloop/backups/backup.py \
        /var/lib/cashloop/cashloop.db /var/lib/cashloop/backups

Uses SQLite's backup API, never a file copy: copying cashloop.db while the service writes can
miss the committed pages still in cashloop.db-wal, or catch a page mid-write.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

BUSY_TIMEOUT_MS = 10_000


class BackupError(RuntimeError):
    """The copy could not be made or failed its integrity check; no backup file was left behind."""


def backup(db_path: Path, dest_dir: Path, *, now: datetime | None = None) -> Path:
    """Copy `db_path` into `dest_dir` as `<stem>-YYYYmmddTHHMMSSZ.sqlite3` and return the new file.

    Safe while other connections read and write: the copy is one consistent snapshot (the last
    committed transaction at the moment the copy began; uncommitted work is never included).
    The copy is a self-contained rollback-journal database (no -wal to carry along), passes
    `PRAGMA integrity_check`, is fsynced and mode 0600, and only then gets its final name.
    Raises FileNotFoundError for a missing source and BackupError for anything else; never
    overwrites an existing backup. Each call makes a new file (not idempotent).
    """
    db_path = Path(db_path)
    dest_dir = Path(dest_dir)
    if not db_path.is_file():
        # Checked here because sqlite3.connect would otherwise create an empty database there.
        raise FileNotFoundError(f"no database at {db_path}")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("backup() needs an aware datetime")
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    partial = dest_dir / f".{db_path.stem}-{stamp}.{os.getpid()}.partial"
    try:
        _copy(db_path, partial)
        _check(partial)
        _fsync(partial)
        final = _publish(partial, dest_dir, f"{db_path.stem}-{stamp}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    _fsync(dest_dir)
    return final


def _copy(source: Path, target: Path) -> None:
    # mode=ro: the backup must never write to the live database, whatever goes wrong here.
    # Created 0600 before SQLite writes a byte: the database holds tokens and contact data.
    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    src = sqlite3.connect(f"file:{quote(str(source.resolve()))}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # One step (pages=-1) under a single read transaction: in WAL mode writers carry on
        # meanwhile, and a stepped copy could restart forever under a steady stream of commits.
        src.backup(dst)
        # The source's WAL flag is copied with page 1; a backup is better as one plain file.
        if dst.execute("PRAGMA journal_mode = DELETE").fetchone()[0] != "delete":
            raise BackupError("could not switch the copy to journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {source} failed: {exc}") from exc
    finally:
        dst.close()
        src.close()


def _check(path: Path) -> None:
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.Error as exc:
        raise BackupError(f"integrity check of the copy failed to run: {exc}") from exc
    finally:
        conn.close()
    if rows != ["ok"]:
        raise BackupError("integrity check of the copy failed: " + "; ".join(map(str, rows[:5])))


def _publish(partial: Path, dest_dir: Path, base: str) -> Path:
    for n in range(1, 100):
        final = dest_dir / (f"{base}.sqlite3" if n == 1 else f"{base}-{n}.sqlite3")
        try:
            os.link(partial, final)  # unlike rename, a hard link never replaces an existing file
        except FileExistsError:
            continue
        return final
    raise BackupError(f"too many backups named {base}* in {dest_dir}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Online backup of a Cashloop SQLite database")
    parser.add_argument("db", type=Path, help="the live database, e.g. /var/lib/cashloop/cashloop.db")
    parser.add_argument("dest", type=Path, help="directory for backups, e.g. /var/lib/cashloop/backups")
    args = parser.parse_args(argv)
    try:
        owner = args.db.stat().st_uid
        if os.geteuid() != owner:
            # SQLite creates -wal/-shm files as whoever opens the database; root-owned ones would
            # lock the service out of its own database.
            print(
                f"backup.py: run as the database owner (uid {owner}), e.g. sudo -u cashloop", file=sys.stderr
            )
            return 2
        print(backup(args.db, args.dest))
    except (OSError, BackupError) as exc:
        print(f"backup.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
