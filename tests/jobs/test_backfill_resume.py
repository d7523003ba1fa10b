"""`cashloop sync --full` as a real process, killed with SIGKILL at a random page of the invoice
backfill and run again, against each PSA's fake: the store ends exactly as after an uninterrupted
run (only timestamps of our own and random public tokens differ); and on a terminal the backfill
shows a progress bar."""

from __future__ import annotations

import os
import pty
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.psa_worlds import KINDS, make_world

ROOT = Path(__file__).resolve().parents[2]
PAGE = 100
INVOICES = 1500  # 15 pages of invoices
TABLES = ("clients", "contacts", "invoices", "invoice_lines", "quarantine", "exceptions", "outbox")


def _sync_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "app.cli", "sync", "--full", "--config", str(config)]


def _contents(db: Path) -> dict[str, list[tuple]]:
    """Every row of the intake's tables, without our own timestamps (`*_at`) and random tokens."""
    conn = sqlite3.connect(db)
    out: dict[str, list[tuple]] = {}
    for table in TABLES:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        keep = [c for c in cols if not c.endswith("_at") and c != "token"]
        out[table] = conn.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY rowid").fetchall()
    out["sync_state"] = conn.execute(
        "SELECT connector, object, cursor FROM sync_state ORDER BY 1, 2"
    ).fetchall()
    conn.close()
    return out


def _invoices_committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not migrated yet, or a writer holds a lock for a moment
        return 0


@pytest.fixture(params=KINDS)
def world(request):
    fixed = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    w = make_world(request.param, lambda: fixed)
    w.populate(INVOICES, companies=12)
    specs = list(w.invoices.values())
    w.break_invoice(specs[333].remote_id, "bad date")  # a quarantined record must resume the same way
    yield w
    w.fake.stop()
    assert w.violations == []


def _settled(count, quiet: float = 0.2, timeout: float = 10.0) -> int:
    """count() once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _config(world, folder: Path) -> Path:
    folder.mkdir()
    path = folder / "config.toml"
    path.write_text(world.config_text(folder, page_size=PAGE), encoding="utf-8")
    return path


def test_a_backfill_killed_at_a_random_page_and_rerun_ends_like_an_uninterrupted_one(world, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    clean = _config(world, tmp_path / "clean")
    done = subprocess.run(
        _sync_cmd(clean), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    expected = _contents(tmp_path / "clean" / "cashloop.db")
    assert len(expected["invoices"]) == INVOICES - 1 and len(expected["quarantine"]) == 1

    # A PSA that takes 20 ms an answer, as a real one takes longer: each page is committed before
    # the next arrives (tests/jobs/test_page_batches.py kills a batch of several pages).
    world.fake.latency = 0.02
    killed = _config(world, tmp_path / "killed")
    db = tmp_path / "killed" / "cashloop.db"
    target = rng.randrange(2, INVOICES // PAGE - 2) * PAGE + rng.randrange(0, PAGE)
    proc = subprocess.Popen(_sync_cmd(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _invoices_committed(db) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the backfill ended before it was killed (seed {seed})"
    partial = _invoices_committed(db)
    assert 0 < partial < INVOICES - 1, f"killed after {partial} invoices (seed {seed})"

    # The killed process may have had a read-ahead request in flight: it reaches the fake's log
    # only once answered, so wait for the log to settle before counting from here.
    pages_before = _settled(lambda: len(world.invoice_list_requests()))
    again = subprocess.run(
        _sync_cmd(killed), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    pages_read = len(world.invoice_list_requests()) - pages_before

    assert again.returncode == 0, again.stderr
    assert _contents(db) == expected, f"seed {seed}, killed after {partial} invoices"
    # It went on from where it was: the pages committed before the kill were not read again (HaloPSA,
    # paging by number, re-reads the last one in case a deletion shifted the pages, and asks for the
    # page after a full last one: its record_count may be stale, an empty page is not).
    remaining_pages = -(-(INVOICES - partial) // PAGE)
    extra = 2 if world.kind == "halopsa" else 1
    assert pages_read <= remaining_pages + extra < INVOICES // PAGE, (pages_read, partial, seed)
    created = re.search(r"invoices: created (\d+)", again.stdout)
    assert created and int(created.group(1)) == INVOICES - 1 - partial, (again.stdout, partial, seed)


def test_a_full_sync_on_a_terminal_shows_a_progress_bar(world, tmp_path):
    config = _config(world, tmp_path / "tty")
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(_sync_cmd(config), cwd=ROOT, stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        out, _ = proc.communicate(timeout=300)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0
    text = screen.decode()
    assert "invoices" in text and f"{INVOICES:,}/{INVOICES:,}" in text, text[-2000:]
    assert "[" + "#" * 28 + "] 100%" in text and "ETA" in text
    assert b"invoices: created 1499" in out
