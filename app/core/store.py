"""The SQLite store: one file, WAL, a connection per thread, explicit write transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from app.core import migrations


class Store:
    """Opens per-thread connections to one database file.

    Writes go through `write()`: `BEGIN IMMEDIATE` takes the write lock up front, so two threads
    never discover a conflict half-way through a transaction. Never hold `write()` across an HTTP call.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()

    def _connect(self) -> Database:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return Database(conn, execute_plugins=False)

    @property
    def db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    @contextmanager
    def write(self) -> Iterator[Database]:
        """One write transaction; nested calls become savepoints of the outer one."""
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        else:
            db.conn.execute("COMMIT")

    def one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, params).fetchone()

    def all(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns their names. Refuses a database from a newer release."""
        db = self.db
        known = migrations.names()
        applied = [m.name for m in migrations.MIGRATIONS.applied(db)]
        unknown = [name for name in applied if name not in known]
        if unknown:
            raise RuntimeError(
                f"database {self.path} has migrations this release does not know ({', '.join(unknown)}); "
                "it was written by a newer Cashloop"
            )
        pending = [m.name for m in migrations.MIGRATIONS.pending(db)]
        migrations.MIGRATIONS.apply(db)
        return pending

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None


def open_store(path: str | Path) -> Store:
    """Open (creating if needed) and migrate the store at `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    store = Store(path)
    store.migrate()
    return store
