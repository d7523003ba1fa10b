"""Online backups of a live WAL database: consistent, checked, restorable."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backups.backup import BackupError, backup, main

NOW = datetime(2026, 3, 10, 2, 30, 0, tzinfo=UTC)


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


@pytest.fixture
def live_db(tmp_path) -> Path:
    path = tmp_path / "cashloop.db"
    conn = open_db(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total_minor INTEGER NOT NULL)")
    conn.execute("CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY, invoice_id INTEGER NOT NULL)")
    conn.close()
    return path


def counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (
            conn.execute("SELECT count(*) FROM invoices").fetchone()[0],
            conn.execute("SELECT count(*) FROM invoice_lines").fetchone()[0],
        )
    finally:
        conn.close()


def insert_invoice(conn: sqlite3.Connection, n_lines: int = 3) -> None:
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute("INSERT INTO invoices (total_minor) VALUES (12500)")
    conn.executemany("INSERT INTO invoice_lines (invoice_id) VALUES (?)", [(cur.lastrowid,)] * n_lines)
    conn.execute("COMMIT")


def test_backup_while_another_connection_writes_is_a_consistent_snapshot(live_db, tmp_path):
    writer = open_db(live_db)
    for _ in range(200):
        insert_invoice(writer)
    stop = threading.Event()
    written = [0]

    def keep_writing() -> None:
        conn = open_db(live_db)
        while not stop.is_set():
            insert_invoice(conn)
            written[0] += 1
        conn.close()

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        while written[0] < 50:  # the writer is really going before the first copy starts
            stop.wait(0.01)
        copies = [backup(live_db, tmp_path / "backups") for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    final_invoices, _ = counts(live_db)
    seen = []
    for copy in copies:
        invoices, lines = counts(copy)
        assert lines == 3 * invoices  # never half a transaction
        assert 200 + 50 <= invoices <= final_invoices
        seen.append(invoices)
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    assert seen == sorted(seen)
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(c.name for c in copies)
    writer.close()


def test_committed_rows_still_in_the_wal_are_kept_and_uncommitted_ones_are_not(live_db, tmp_path):
    writer = open_db(live_db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")  # everything stays in cashloop.db-wal
    for _ in range(100):
        insert_invoice(writer)
    assert Path(f"{live_db}-wal").stat().st_size > 0
    pending = open_db(live_db)
    pending.execute("BEGIN IMMEDIATE")
    pending.execute("INSERT INTO invoices (total_minor) VALUES (1)")
    try:
        copy = backup(live_db, tmp_path / "backups", now=NOW)
    finally:
        pending.execute("ROLLBACK")
    assert counts(copy) == (100, 300)
    assert not Path(f"{copy}-wal").exists()
    writer.close()
    pending.close()


def test_backups_are_timestamped_and_never_overwrite_each_other(live_db, tmp_path):
    dest = tmp_path / "backups"
    first = backup(live_db, dest, now=NOW)
    second = backup(live_db, dest, now=NOW)
    assert first.name == "cashloop-20260310T023000Z.sqlite3"
    assert second.name == "cashloop-20260310T023000Z-2.sqlite3"
    assert sorted(p.name for p in dest.iterdir()) == sorted([first.name, second.name])


def test_a_restored_backup_opens_with_the_same_rows(live_db, tmp_path):
    writer = open_db(live_db)
    for _ in range(10):
        insert_invoice(writer, n_lines=2)
    writer.close()
    copy = backup(live_db, tmp_path / "backups", now=NOW)
    restored = tmp_path / "restored" / "cashloop.db"
    restored.parent.mkdir()
    restored.write_bytes(copy.read_bytes())  # restore = copy back while the service is stopped
    conn = open_db(restored)
    assert conn.execute("SELECT count(*), sum(total_minor) FROM invoices").fetchone() == (10, 125000)
    conn.close()


def test_a_missing_database_raises_and_nothing_is_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        backup(tmp_path / "nope.db", tmp_path / "backups")
    assert not (tmp_path / "nope.db").exists()


def test_a_corrupt_database_fails_the_check_and_leaves_no_file(tmp_path):
    path = tmp_path / "broken.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX t_v ON t (v)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"value {i:05d}" * 4,) for i in range(3000)])
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(len(data) // 2, len(data) // 2 + 3 * page, 7):  # scribble over a few pages
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    dest = tmp_path / "backups"
    with pytest.raises(BackupError):
        backup(path, dest, now=NOW)
    assert list(dest.iterdir()) == []


def test_the_command_line_prints_the_new_backup(live_db, tmp_path, capsys):
    assert main([str(live_db), str(tmp_path / "backups")]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out).parent == tmp_path / "backups" and Path(out).exists()
