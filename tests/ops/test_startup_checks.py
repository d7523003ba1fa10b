"""`cashloop serve` and `cashloop doctor` refuse to start on a bad data directory, a damaged or newer
database or an impossible clock: one line naming the problem, and the exit code of its kind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app import startup_checks
from app.core.clock import FrozenClock, to_db
from app.demo.runner import demo_config
from app.services import build_services
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]


def _config_file(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "psa-export").mkdir(exist_ok=True)
    path = folder / "config.toml"
    path.write_text(demo_config(data_dir=folder / "data", port=8080, stripe_base="http://127.0.0.1:9",
                                smtp_port=9, secret_key="doctor-secret-key-0123456789abcd"))
    old, new = f'path = "{folder / "data" / "psa-export"}"', f'path = "{folder / "psa-export"}"'
    path.write_text(path.read_text().replace(old, new))
    return path


def _doctor(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "doctor", "--config", str(config), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_doctor_makes_a_missing_data_directory_0700_and_reports_every_check(tmp_path):
    config = _config_file(tmp_path)
    done = _doctor(config, "--migrate")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert "clock: ok" in done.stdout and "data directory" in done.stdout
    again = _doctor(config)
    assert again.returncode == 0 and "pending migrations" not in again.stdout


def test_a_world_readable_data_directory_stops_start_up_with_exit_4(tmp_path):
    config = _config_file(tmp_path)
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data").chmod(0o755)
    for command in (["doctor"], ["serve"]):
        done = subprocess.run([sys.executable, "-m", "app.cli", *command, "--config", str(config)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 4, done.stderr
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("cashloop:")]
        assert lines == [f"cashloop: DATA-004: data directory {tmp_path / 'data'} is open to every user "
                         f"(mode 0755) (chmod 0700 {tmp_path / 'data'})"]


def test_a_database_copied_with_open_permissions_is_closed_again(tmp_path):
    cfg = make_config(tmp_path)
    build_services(cfg).store.close()
    cfg.db_path.chmod(0o644)
    assert startup_checks.check_data_dir(cfg) is None
    assert cfg.db_path.stat().st_mode & 0o777 == 0o600


def test_a_damaged_database_stops_start_up_with_exit_5_and_is_left_as_it_was(tmp_path):
    config = _config_file(tmp_path)
    assert _doctor(config, "--migrate").returncode == 0
    db = tmp_path / "data" / "cashloop.db"
    data = bytearray(db.read_bytes())
    for offset in range(4096 * 3, min(len(data), 4096 * 12), 3):
        data[offset] ^= 0xFF
    db.write_bytes(bytes(data))
    damaged = db.read_bytes()
    done = _doctor(config, "--migrate")
    assert done.returncode == 5, done.stderr
    assert "DB-00" in done.stderr and "cashloop restore FILE" in done.stderr
    assert db.read_bytes() == damaged


def test_a_database_from_a_newer_release_stops_start_up_with_exit_5(tmp_path):
    config = _config_file(tmp_path)
    assert _doctor(config, "--migrate").returncode == 0
    conn = sqlite3.connect(tmp_path / "data" / "cashloop.db")
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('cashloop', '0999_future', '2030-01-01')")
    conn.commit()
    conn.close()
    done = _doctor(config)
    assert done.returncode == 5
    assert "DB-003" in done.stderr and "0999_future" in done.stderr


def test_a_clock_behind_the_database_or_absurd_stops_start_up_with_exit_6(tmp_path):
    cfg = make_config(tmp_path)
    now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    services = build_services(cfg, clock=FrozenClock(now))
    with services.store.write() as db:
        db.execute("INSERT INTO job_runs (job, started_at) VALUES ('poll_psa', ?)", (to_db(now),))
    services.store.close()
    assert startup_checks.check_clock(cfg, now + timedelta(days=1)) is None
    assert startup_checks.check_clock(cfg, now - timedelta(minutes=4)) is None  # within the margin
    behind = startup_checks.check_clock(cfg, now - timedelta(hours=3))
    assert behind is not None and behind.exit_code == 6 and behind.id == "CLOCK-002"
    assert "3:00:00 behind the newest record" in behind.message
    for absurd in (datetime(1970, 1, 1, tzinfo=UTC), datetime(2107, 1, 1, tzinfo=UTC)):
        problem = startup_checks.check_clock(cfg, absurd)
        assert problem is not None and problem.id == "CLOCK-001"
