"""The cashloop command's jobs from the shell, as an MSP admin runs them."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

from app.demo.dataset import generate
from app.jobs.scheduler import job_lock
from app.services import build_services
from tests.conftest import make_config


def _cashloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def _config_file(tmp_path) -> str:
    cfg = make_config(tmp_path)
    generate(tmp_path / "psa-export", today=date(2026, 3, 10), clients=5, invoices=60)
    path = tmp_path / "config.toml"
    from app.demo.runner import demo_config

    path.write_text(
        demo_config(
            data_dir=tmp_path,
            port=8080,
            stripe_base="http://127.0.0.1:9",
            smtp_port=9,
            secret_key="test-secret-key-0123456789abcdef",
        )
    )
    assert cfg.psa.files is not None
    return str(path)


def test_sync_imports_the_folder_then_finds_nothing_new(tmp_path):
    path = _config_file(tmp_path)
    first = _cashloop("sync", "--config", path)
    assert first.returncode == 0, first.stderr
    assert "invoices: created 60" in first.stdout
    second = _cashloop("sync", "--config", path)
    assert second.returncode == 0 and "invoices: nothing new" in second.stdout
    services = build_services(make_config(tmp_path))
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 60


def test_outbox_delivers_and_reports(tmp_path):
    path = _config_file(tmp_path)
    proc = _cashloop("outbox", "--config", path)
    assert proc.returncode == 0 and "outbox: 0 done, 0 to retry, 0 dead" in proc.stdout


def test_a_job_command_refuses_to_run_while_the_service_holds_the_lock(tmp_path):
    path = _config_file(tmp_path)
    services = build_services(make_config(tmp_path))
    with job_lock(services):
        proc = _cashloop("sync", "--config", path)
    assert proc.returncode == 3 and "holds" in proc.stderr
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 0


def test_create_admin_stores_a_hashed_password_and_refuses_a_duplicate(tmp_path):
    path = _config_file(tmp_path)
    secret = tmp_path / "pw"
    secret.write_text("a long admin passphrase\n")
    ok = _cashloop(
        "create-admin", "--config", path, "--email", "owner@msp.example", "--password-file", str(secret)
    )
    assert ok.returncode == 0, ok.stderr
    services = build_services(make_config(tmp_path))
    row = services.store.one("SELECT role, password_hash FROM admin_users WHERE email = 'owner@msp.example'")
    assert row["role"] == "owner" and row["password_hash"].startswith("$argon2id$")
    assert "a long admin passphrase" not in row["password_hash"]
    again = _cashloop(
        "create-admin", "--config", path, "--email", "owner@msp.example", "--password-file", str(secret)
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    short = tmp_path / "short"
    short.write_text("short")
    weak = _cashloop(
        "create-admin", "--config", path, "--email", "f@msp.example", "--password-file", str(short)
    )
    assert weak.returncode == 2 and "at least 12" in weak.stderr
