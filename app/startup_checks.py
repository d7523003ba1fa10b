"""What `cashloop serve` (and `cashloop doctor`) checks before anything starts.

Each failed check is one line, `<id>: <what is wrong> (<what to do>)`, and the process exits with
the code of its kind, so systemd's status and a monitor tell a config error from a broken disk:

    2 config (app.config)   4 data directory   5 database   6 clock
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from app.config import Config
from app.core import migrations
from app.core.clock import from_db

EXIT_CONFIG = 2
EXIT_DATA_DIR = 4
EXIT_DATABASE = 5
EXIT_CLOCK = 6
CLOCK_MARGIN = timedelta(minutes=5)
EARLIEST = datetime(2024, 1, 1, tzinfo=UTC)  # no Cashloop database was written before this
LATEST_YEAR = 2100
# Where the newest instants the database knows of are, each read cheaply (small tables, or the
# newest rows by id of the big append-only ones).
_NEWEST = (
    ("payments", "SELECT MAX(updated_at) FROM payments"),
    ("outbox", "SELECT MAX(created_at) FROM (SELECT created_at FROM outbox ORDER BY id DESC LIMIT 100)"),
    ("audit_log", "SELECT MAX(at) FROM (SELECT at FROM audit_log ORDER BY id DESC LIMIT 100)"),
    ("sync_state", "SELECT MAX(last_run_at) FROM sync_state"),
    ("job_runs", "SELECT MAX(started_at) FROM job_runs"),
)


@dataclass(frozen=True)
class Problem:
    exit_code: int
    id: str
    message: str
    hint: str

    def line(self) -> str:
        return f"{self.id}: {self.message} ({self.hint})"


def check_data_dir(cfg: Config) -> Problem | None:
    path = cfg.data_path
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            return Problem(EXIT_DATA_DIR, "DATA-001", f"data directory {path} is missing and cannot be made: "
                           f"{exc.strerror}", "create it, owned by the service user, mode 0700")
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        return Problem(EXIT_DATA_DIR, "DATA-002", f"{path} is not a directory", "fix cashloop.data_dir")
    if not os.access(path, os.W_OK | os.X_OK):
        return Problem(EXIT_DATA_DIR, "DATA-003",
                       f"data directory {path} is not writable by uid {os.geteuid()}",
                       "chown it to the service user (install.sh does)")
    if info.st_mode & 0o007:
        return Problem(EXIT_DATA_DIR, "DATA-004",
                       f"data directory {path} is open to every user (mode {stat.S_IMODE(info.st_mode):04o})",
                       f"chmod 0700 {path}")
    # The database files of a copy made by hand (cp, a umask of 022) are closed again: they hold
    # sign-in tokens and contact data. One that is not ours to chmod is a stop.
    for db in (cfg.db_path, Path(f"{cfg.db_path}-wal"), Path(f"{cfg.db_path}-shm")):
        if db.exists() and db.stat().st_mode & 0o077:
            try:
                db.chmod(0o600)
            except OSError:
                return Problem(EXIT_DATA_DIR, "DATA-005",
                               f"{db} is readable by others (mode {stat.S_IMODE(db.stat().st_mode):04o})",
                               f"chmod 0600 {db}")
    return None


def check_database(cfg: Config) -> Problem | None:
    """Integrity and schema of an existing database (a missing one is created by the migrations)."""
    db = cfg.db_path
    if not db.exists():
        return None
    hint = "restore the last good backup: cashloop restore FILE (see backups/README.md)"
    try:
        conn = sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True, timeout=30)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            applied = [r[0] for r in conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = 'cashloop'"
            )] if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'"
            ).fetchone() else []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Problem(EXIT_DATABASE, "DB-001", f"database {db} cannot be read: {exc}", hint)
    if rows != ["ok"]:
        return Problem(EXIT_DATABASE, "DB-002", f"database {db} fails its integrity check: {rows[0]}", hint)
    unknown = sorted(set(applied) - migrations.names())
    if unknown:
        return Problem(EXIT_DATABASE, "DB-003", f"database {db} was written by a newer Cashloop "
                       f"(migrations {', '.join(unknown)})",
                       "install that release again, or restore a backup")
    return None


def pending_migrations(cfg: Config) -> list[str]:
    if not cfg.db_path.exists():
        return sorted(migrations.names())
    conn = sqlite3.connect(f"file:{quote(str(cfg.db_path.resolve()))}?mode=ro", uri=True)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'").fetchone()
        applied = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")} if has else set()
    finally:
        conn.close()
    return sorted(migrations.names() - applied)


def migrate(cfg: Config) -> tuple[list[str], Problem | None]:
    """Apply pending migrations (each its own transaction); returns their names, or the failure."""
    try:
        return _open(cfg), None
    except Exception as exc:  # a failing migration of any kind is this one line
        return [], Problem(EXIT_DATABASE, "DB-004", f"migrating {cfg.db_path} failed: {exc}",
                           "the database is as the last migration that worked left it; restore the "
                           "backup taken before the upgrade if the old release must run again")


def _open(cfg: Config) -> list[str]:
    from app.core.store import Store

    cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_path)
    try:
        return store.migrate()
    finally:
        store.close()


def check_clock(cfg: Config, now: datetime) -> Problem | None:
    """The system clock must not be behind what the database already holds, nor absurd."""
    if now < EARLIEST or now.year >= LATEST_YEAR:
        return Problem(EXIT_CLOCK, "CLOCK-001", f"the system clock says {now:%Y-%m-%d %H:%M} UTC",
                       "set the time (timedatectl set-ntp true) and start again")
    if not cfg.db_path.exists():
        return None
    conn = sqlite3.connect(f"file:{quote(str(cfg.db_path.resolve()))}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        newest = max(
            (v for table, sql in _NEWEST if table in tables for (v,) in conn.execute(sql) if v),
            default=None,
        )
    finally:
        conn.close()
    if newest and now < from_db(newest) - CLOCK_MARGIN:
        behind = from_db(newest) - now
        return Problem(EXIT_CLOCK, "CLOCK-002",
                       f"the system clock ({now:%Y-%m-%d %H:%M} UTC) is {behind} behind the newest record "
                       f"in the database ({newest})",
                       "fix the time (NTP) before starting: schedules and payment times depend on it")
    return None


def run(cfg: Config, now: datetime, *, apply_migrations: bool = True) -> tuple[list[Problem], list[str]]:
    """Every check in order, stopping at the first failure; returns (problems, migrations applied)."""
    for check in (lambda: check_data_dir(cfg), lambda: check_database(cfg)):
        problem = check()
        if problem:
            return [problem], []
    applied: list[str] = []
    if apply_migrations:
        applied, problem = migrate(cfg)
        if problem:
            return [problem], []
    problem = check_clock(cfg, now)
    return ([problem] if problem else []), applied
