"""SIGTERM, as `systemctl stop` sends it, in the middle of real work: a `cashloop sync --full`
backfill, a `cashloop autopay` run, and the service's own autopay run under gunicorn. Each stops
after its unit of work (a committed page, a finished charge); run again, it ends exactly as an
uninterrupted run would: nothing lost, nothing charged or recorded twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from app.config import load_config
from app.core.clock import FrozenClock
from app.demo.runner import demo_config
from app.services import build_services
from tests.autopay_world import enable, intents, saved_card
from tests.conftest import free_port
from tests.factories import make_client, make_invoice
from tests.psa_worlds import make_world

ROOT = Path(__file__).resolve().parents[2]
PAGE = 100
INVOICES = 1500
CLIENTS = 24
TABLES = ("clients", "contacts", "invoices", "invoice_lines", "quarantine", "exceptions", "outbox")


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not migrated yet, or locked for a moment
        return 0


def _wait_for(db: Path, sql: str, at_least: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        n = _count(db, sql)
        if n >= at_least:
            return n
        time.sleep(0.005)
    out = proc.stdout.read() if proc.stdout and proc.poll() is not None else ""
    pytest.fail(f"never reached {at_least} for {sql!r} (process {proc.poll()}): {out}")


def _contents(db: Path) -> dict[str, list[tuple]]:
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


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args, "--config", str(config)]


def test_sigterm_during_a_full_sync_stops_after_a_committed_page_and_the_rerun_ends_like_a_clean_one(
    tmp_path,
):
    fixed = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    world = make_world("connectwise", lambda: fixed)
    try:
        world.populate(INVOICES, companies=12)
        configs = {}
        for name in ("clean", "stopped"):
            (tmp_path / name).mkdir()
            configs[name] = tmp_path / name / "config.toml"
            configs[name].write_text(world.config_text(tmp_path / name, page_size=PAGE), encoding="utf-8")
        clean = subprocess.run(_cli(configs["clean"], "sync", "--full"), cwd=ROOT, capture_output=True,
                               text=True, timeout=300, check=False)
        assert clean.returncode == 0, clean.stderr
        expected = _contents(tmp_path / "clean" / "cashloop.db")

        db = tmp_path / "stopped" / "cashloop.db"
        # A PSA's pace (50 ms a page): pages that were all here at once would share one batch, whose
        # commit could land the whole sync before the signal does.
        world.fake.latency = 0.05
        proc = subprocess.Popen(_cli(configs["stopped"], "sync", "--full"), cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_for(db, "SELECT COUNT(*) FROM invoices", 3 * PAGE, proc)
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 143, out
        assert "stopping after the current unit of work" in out and "stopped on request" in out
        partial = _count(db, "SELECT COUNT(*) FROM invoices")
        assert 3 * PAGE <= partial < INVOICES - PAGE, f"it did not stop early ({partial} imported): {out}"
        cursor = _count(
            db, "SELECT COUNT(*) FROM sync_state WHERE object = 'invoices' AND cursor LIKE 'sweep1:%'"
        )
        assert cursor == 1  # the sweep's position was kept, not reset

        again = subprocess.run(_cli(configs["stopped"], "sync", "--full"), cwd=ROOT, capture_output=True,
                               text=True, timeout=300, check=False)
        assert again.returncode == 0, again.stderr
        assert _contents(db) == expected
        assert f"invoices: created {INVOICES - partial}" in again.stdout
    finally:
        world.fake.stop()
    assert world.violations == []


def _autopay_world(
    folder: Path, double, mail, *, extra: str = "", port: int = 8080
) -> tuple[Path, list[str]]:
    folder.mkdir()
    (folder / "psa-export").mkdir()
    folder.chmod(0o700)
    config = folder / "config.toml"
    config.write_text(demo_config(data_dir=folder, port=port, stripe_base=double.api_base,
                                  smtp_port=mail.port, secret_key="stop-test-secret-key-0123456789a") + extra)
    s = build_services(load_config(config), clock=FrozenClock(datetime.now(UTC)))
    today = datetime.now(UTC).date()
    tag = folder.name
    numbers = []
    for k in range(CLIENTS):
        remote = f"{tag}{k}"
        client_id = make_client(s, remote, f"Stop Client {tag} {k}", billing_email=f"ap{k}@{tag}.example")
        enable(s, client_id, saved_card(s, double, client_id))
        number = f"INV-{tag.upper()}-{k:02d}"
        make_invoice(s, number, client_remote_id=remote, total_minor=5_000 + k,
                     due_on=date(today.year - 1, 1, 1))
        numbers.append(number)
    s.store.close()
    return config, numbers


def _assert_each_charged_once(config: Path, double, numbers: list[str]) -> None:
    s = build_services(load_config(config))
    for number in numbers:
        at_stripe = [pi["status"] for pi in intents(double, invoices=number)]
        assert at_stripe == ["succeeded"], (number, at_stripe)
        rows = s.store.all(
            "SELECT p.status FROM payments p JOIN allocations a ON a.payment_id = p.id "
            "JOIN invoices i ON i.id = a.invoice_id WHERE i.number = ?", (number,))
        assert [r["status"] for r in rows] == ["succeeded"], number
    assert s.store.scalar("SELECT COUNT(*) FROM autopay_attempts") == len(numbers)


SUCCEEDED = "SELECT COUNT(*) FROM payments WHERE status = 'succeeded'"
UNFINISHED = "SELECT COUNT(*) FROM payments WHERE status IN ('pending', 'submitted')"


def test_sigterm_during_cashloop_autopay_finishes_the_charge_in_flight_and_the_rerun_charges_the_rest_once(
    tmp_path, stripe_double, mail
):
    config, numbers = _autopay_world(tmp_path / "cli", stripe_double, mail)
    db = tmp_path / "cli" / "cashloop.db"
    proc = subprocess.Popen(_cli(config, "autopay"), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    _wait_for(db, SUCCEEDED, 2, proc)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    charged = _count(db, SUCCEEDED)
    assert 2 <= charged < CLIENTS, f"it did not stop early ({charged} charged): {out}"
    assert _count(db, UNFINISHED) == 0  # no half-done charge: each started one was finished
    assert sum(len(intents(stripe_double, invoices=n)) for n in numbers) == charged

    again = subprocess.run(_cli(config, "autopay"), cwd=ROOT, capture_output=True, text=True, timeout=300,
                           check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{CLIENTS - charged} charges started ({CLIENTS - charged} succeeded" in again.stdout
    _assert_each_charged_once(config, stripe_double, numbers)


def test_sigterm_to_the_service_during_its_autopay_run_loses_nothing_and_a_restart_doubles_nothing(
    tmp_path, stripe_double, mail
):
    port = free_port()
    config, numbers = _autopay_world(tmp_path / "svc", stripe_double, mail, port=port,
                                     extra='\n[autopay]\nrun_time = "00:00"\n')
    db = tmp_path / "svc" / "cashloop.db"

    def serve() -> subprocess.Popen:
        return subprocess.Popen(_cli(config, "serve"), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)

    first = serve()
    try:
        _wait_for(db, SUCCEEDED, 2, first)
        os.kill(first.pid, signal.SIGTERM)  # the gunicorn master, as systemd's KillSignal
        out, _ = first.communicate(timeout=90)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, out
    assert "autopay: stopping on request" in out and "scheduler stopped" in out
    charged = _count(db, SUCCEEDED)
    assert 2 <= charged < CLIENTS, f"the service did not stop early ({charged} charged)"
    assert _count(db, UNFINISHED) == 0

    second = serve()
    try:
        _wait_for(db, SUCCEEDED, CLIENTS, second)
        time.sleep(0.5)
        os.kill(second.pid, signal.SIGTERM)
        out, _ = second.communicate(timeout=90)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 0, out
    _assert_each_charged_once(config, stripe_double, numbers)
