"""The systemd unit is valid and hardened, checked with systemd's own tools (no systemd PID 1 needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "cashloop.service"
MAX_EXPOSURE = 2.0  # systemd-analyze's scale: 0 = fully locked down, 10 = UNSAFE; reached: 1.1


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package (./dev does it as root)")
    return path


@pytest.fixture
def checkable_unit(tmp_path) -> Path:
    """The unit with ExecStart pointed at a binary that exists here.

    verify rejects an ExecStart whose binary is missing on the checking machine, and
    /opt/cashloop only exists on an installed appliance. Everything else stays byte-identical.
    """
    text = UNIT.read_text()
    exec_start = "ExecStart=/opt/cashloop/current/bin/cashloop "
    assert text.count(exec_start) == 1
    path = tmp_path / "cashloop.service"
    path.write_text(text.replace(exec_start, "ExecStart=/usr/bin/env cashloop "))
    return path


def test_unit_passes_systemd_analyze_verify_without_a_single_warning(checkable_unit):
    # NOTE: verify exits 0 on unknown keys and bad values, printing them on stderr, so any output fails.
    result = subprocess.run(
        [systemd_analyze(), "verify", str(checkable_unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


def test_unit_exposure_score_is_at_most_2(checkable_unit):
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", str(checkable_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_serve_runs_one_threaded_gunicorn_worker(tmp_path):
    from app.server import gunicorn_options
    from tests.conftest import make_config

    options = gunicorn_options(make_config(tmp_path))
    assert (options["workers"], options["worker_class"], options["threads"]) == (1, "gthread", 8)
    assert options["bind"] == "127.0.0.1:8080"


def test_unit_runs_cashloop_serve_as_cashloop_with_its_config():
    text = UNIT.read_text()
    assert "ExecStart=/opt/cashloop/current/bin/cashloop serve --config /etc/cashloop/config.toml\n" in text
    for line in (
        "User=cashloop",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cashloop",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line


def test_the_credentials_drop_in_install_sh_writes_passes_verify_too(checkable_unit):
    # What install.sh puts in cashloop.service.d/10-credentials.conf, checked as part of the unit.
    line = "LoadCredential=stripe_secret_key:/etc/cashloop/credentials/stripe_secret_key\n"
    text = checkable_unit.read_text().replace("[Service]\n", "[Service]\n" + line)
    checkable_unit.write_text(text)
    result = subprocess.run(
        [systemd_analyze(), "verify", str(checkable_unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    install = (ROOT / "install.sh").read_text()
    assert "printf 'LoadCredential=%s:%s\\n' \"$name\" \"$file\"" in install


def test_restart_is_not_retried_for_failures_a_restart_cannot_fix():
    text = UNIT.read_text()
    assert re.search(r"^RestartPreventExitStatus=2 4 5$", text, re.MULTILINE)
    assert re.search(r"^TimeoutStopSec=60$", text, re.MULTILINE)
    from app.server import GRACEFUL_TIMEOUT_SECONDS

    assert GRACEFUL_TIMEOUT_SECONDS < 60  # gunicorn's graceful stop ends before systemd's SIGKILL
