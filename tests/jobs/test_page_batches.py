"""Pages that arrive faster than they are stored share one write transaction (app.jobs.poll_psa
PageBatch): committed when the next page is not here yet, when the batch is old, before an error
is recorded; a failed write rolls the whole batch back, and a batch killed before its commit is
read again by the next run."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.core.store import open_store
from app.jobs import poll_psa
from app.jobs.poll_psa import PageBatch, ReadAhead
from app.services import build_services
from sync.base import Page
from tests.jobs.test_backfill_resume import ROOT, _contents, _invoices_committed, _sync_cmd
from tests.psa_worlds import make_world

FIXED = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "batch.db")
    with s.write() as db:
        db.execute("CREATE TABLE rows (n INTEGER)")
    yield s
    s.close()


def _visible(path: Path) -> int:
    """Rows another connection sees: only what was committed."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
    finally:
        conn.close()


def test_a_batch_commits_only_when_the_next_page_is_not_ready_or_its_time_is_up(store, tmp_path):
    counts: Counter[str] = Counter()
    batch = PageBatch(store, 60.0, cursor="c0", counts=counts)
    for n in range(3):
        batch.db().execute("INSERT INTO rows VALUES (?)", (n,))
        batch.cursor, counts["created"] = f"c{n + 1}", counts["created"] + 1
        batch.applied(next_ready=True)
    assert _visible(tmp_path / "batch.db") == 0  # three pages, one open transaction
    batch.db().execute("INSERT INTO rows VALUES (3)")
    batch.applied(next_ready=False)  # the PSA has not answered yet: never wait holding the lock
    assert _visible(tmp_path / "batch.db") == 4

    old = PageBatch(store, 0.0, cursor=None, counts=Counter())
    old.db().execute("INSERT INTO rows VALUES (4)")
    old.applied(next_ready=True)  # ready, but the batch has had its time
    assert _visible(tmp_path / "batch.db") == 5


def test_a_failed_write_rolls_back_the_batch_its_cursor_and_its_counts(store, tmp_path):
    counts: Counter[str] = Counter(created=7)
    batch = PageBatch(store, 60.0, cursor="committed", counts=counts)
    batch.db().execute("INSERT INTO rows VALUES (1)")
    batch.applied(next_ready=False)
    for n in (2, 3):
        batch.db().execute("INSERT INTO rows VALUES (?)", (n,))
        batch.cursor = f"page {n}"
        counts["created"] += 1
        batch.applied(next_ready=True)
    batch.rollback(sqlite3.OperationalError("disk I/O error"))
    assert _visible(tmp_path / "batch.db") == 1
    assert batch.cursor == "committed" and counts == Counter(created=7)
    assert not store.db.conn.in_transaction


def test_read_ahead_says_whether_the_next_page_is_already_here():
    pages = ReadAhead(iter([Page([], "1"), Page([], "2")]))
    try:
        assert next(pages).cursor == "1"
        deadline = time.monotonic() + 5
        while not pages.ready() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert pages.ready() and next(pages).cursor == "2"
    finally:
        pages.close()


def _commits(services) -> list[str]:
    """Every COMMIT the poll's connection runs from now on."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            seen.append(sql)

    services.store.db.conn.set_trace_callback(trace)
    return seen


def test_a_store_failure_in_the_middle_of_a_batch_keeps_the_pages_committed_before_it(tmp_path):
    world = make_world("connectwise", lambda: FIXED)
    try:
        specs = world.populate(900, companies=12)
        (tmp_path / "clean").mkdir()
        (tmp_path / "failing").mkdir()
        clean = build_services(world.config(tmp_path / "clean", page_size=100))
        assert poll_psa.run(clean).error is None
        expected = _contents(Path(clean.config.db_path))

        services = build_services(world.config(tmp_path / "failing", page_size=100))
        failing_at = specs[640].remote_id
        with services.store.write() as db:
            # What a full disk does to one INSERT: an error SQLite raises, not a bad record.
            db.execute("CREATE TABLE doomed (x)")
            db.execute(
                f"CREATE TRIGGER fail_once AFTER INSERT ON invoices WHEN NEW.remote_id = '{failing_at}' "
                "BEGIN INSERT INTO doomed VALUES (1); END"
            )
            db.execute("DROP TABLE doomed")
        commits = _commits(services)
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            poll_psa.run(services)
        stored = services.store.scalar("SELECT COUNT(*) FROM invoices")
        # Whole pages only (the failing page and the batch it was in are gone), and the cursor
        # stored is the one of the last page stored.
        assert stored % 100 == 0 and stored <= 600, stored
        cursor = services.store.scalar("SELECT cursor FROM sync_state WHERE object = 'invoices'")
        last = services.store.scalar("SELECT MAX(CAST(remote_id AS INTEGER)) FROM invoices")
        assert (cursor is None and stored == 0) or f"{last}" in cursor, (cursor, last)
        assert commits, "the companies and contacts were committed before the invoices"

        with services.store.write() as db:
            db.execute("DROP TRIGGER fail_once")
        assert poll_psa.run(services).error is None
        assert _contents(Path(services.config.db_path)) == expected
    finally:
        world.fake.stop()
    assert world.violations == []


def test_pages_that_are_ready_share_a_commit(tmp_path):
    world = make_world("connectwise", lambda: FIXED)
    try:
        world.populate(2000, companies=12)
        services = build_services(world.config(tmp_path, page_size=100))
        poll_psa.run(services)  # companies and contacts; invoices too
        with services.store.write() as db:
            db.execute("DELETE FROM invoice_lines")
            db.execute("DELETE FROM invoices")
            db.execute("DELETE FROM sync_state WHERE object = 'invoices'")
        commits = _commits(services)
        report = poll_psa.run(services)
        assert report.counts["invoices"]["created"] == 2000
        # 20 pages: were each committed alone, that would be 20 commits (and the final state's);
        # pages waiting in the read-ahead join the open batch.
        assert len(commits) < 20, len(commits)
    finally:
        world.fake.stop()


def test_a_backfill_killed_inside_a_batch_of_pages_ends_like_an_uninterrupted_one(tmp_path):
    """The PSA answers at once but for a pause every tenth page, so several pages share each
    commit; the backfill is frozen (SIGSTOP) at random moments until one finds it holding a page
    it has not committed, and killed there. The rerun reads those pages again."""
    invoices, page = 6000, 100
    world = make_world("connectwise", lambda: FIXED)
    try:
        world.populate(invoices, companies=12)
        paths = {}
        for name in ("clean", "killed"):
            folder = tmp_path / name
            folder.mkdir()
            paths[name] = folder / "config.toml"
            paths[name].write_text(world.config_text(folder, page_size=page), encoding="utf-8")
        done = subprocess.run(
            _sync_cmd(paths["clean"]), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
        expected = _contents(tmp_path / "clean" / "cashloop.db")

        served = world.invoice_list_requests
        world.fake.pace = lambda method, path: (
            0.1 if "/finance/invoices" in path and len(served()) % 10 == 9 else 0.0
        )
        seed = random.randrange(1 << 30)
        rng = random.Random(seed)
        db = tmp_path / "killed" / "cashloop.db"
        proc = subprocess.Popen(
            _sync_cmd(paths["killed"]), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        inside, deadline = None, time.monotonic() + 120
        while inside is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.002, 0.02))
            os.kill(proc.pid, signal.SIGSTOP)
            committed = _invoices_committed(db)
            # The read-ahead holds at most two pages the backfill has not taken yet (one queued,
            # one being fetched): any page asked for before those was taken, and if it is not
            # committed, the backfill is frozen inside an open batch.
            taken = len(served()) - 2
            if page * 2 <= committed < invoices and taken > committed // page:
                inside = (committed, taken)
                os.kill(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGCONT)
        proc.wait(timeout=30)
        assert inside is not None, (
            f"never found the backfill inside a batch (seed {seed}, rc {proc.returncode})"
        )
        partial, taken = inside
        assert proc.returncode == -signal.SIGKILL and partial % page == 0, (inside, seed)
        assert _invoices_committed(db) == partial  # a frozen process commits nothing more before it dies

        world.fake.pace = None
        again = subprocess.run(
            _sync_cmd(paths["killed"]), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        assert again.returncode == 0, again.stderr
        assert _contents(db) == expected, (
            f"seed {seed}, killed after {partial} invoices ({taken} pages taken)"
        )
        assert f"invoices: created {invoices - partial}" in again.stdout, (again.stdout, partial)
    finally:
        world.fake.stop()
    assert world.violations == []
