"""The project's shell scripts: shellcheck-clean, and the cheap paths of each behave."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "dev", ROOT / ".ci" / "run", ROOT / "install.sh", ROOT / "systemd" / "cashloop-launcher.sh",
           ROOT / "tests" / "ops" / "systemctl_stub.sh"]


def test_scripts_are_executable_and_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck not found: apt-get install shellcheck (./dev does it as root)")
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dev_without_a_command_prints_usage_and_fails():
    result = subprocess.run([str(ROOT / "dev")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "usage: ./dev" in result.stderr


def test_dev_help_needs_no_bootstrap():
    result = subprocess.run([str(ROOT / "dev"), "help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("demo", "test", "lint"):
        assert command in result.stdout


def test_install_dry_run_changes_nothing_and_shows_every_step():
    watched = [Path("/opt/cashloop"), Path("/etc/cashloop"), Path("/etc/systemd/system/cashloop.service")]
    before = [p.exists() for p in watched]
    result = subprocess.run(
        [str(ROOT / "install.sh"), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("Dry run: nothing will be changed")
    for step in (
        "==> Debian packages",
        "==> system user cashloop",
        "==> directories /var/lib/cashloop",
        "==> configuration /etc/cashloop/config.toml (mode 0600)",
        "==> code: /opt/cashloop/releases, /opt/cashloop/current, /usr/local/bin/cashloop",
        "would build: /opt/cashloop/releases/1",
        "==> systemd unit /etc/systemd/system/cashloop.service",
        "systemctl daemon-reload",
    ):
        assert step in out, step
    assert "useradd --system" in out or "ok: exists" in out
    assert [p.exists() for p in watched] == before


def test_install_refuses_unknown_options_and_a_purge_without_uninstall():
    result = subprocess.run([str(ROOT / "install.sh"), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "unknown option: --bogus" in result.stderr
    purge = subprocess.run([str(ROOT / "install.sh"), "--purge"], capture_output=True, text=True, timeout=30)
    assert purge.returncode == 1 and "--purge goes with --uninstall" in purge.stderr
