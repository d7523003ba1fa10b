"""install.sh on Ubuntu 24.04: a root made with debootstrap from archive.ubuntu.com (the packages a
stock Ubuntu server has enabled: main, restricted, universe, multiverse and the updates), overlaid in
private namespaces like the Debian test (tests/ops/throwaway_root.py). Install twice (same files, the
second run changes nothing), then start the service on demo data and see it turn healthy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest

from app.demo.dataset import generate
from app.demo.runner import demo_config
from tests.conftest import free_port
from tests.ops.throwaway_root import ThrowawayRoot, source_copy

MIRROR = "http://archive.ubuntu.com/ubuntu"
SOURCES = """Types: deb
URIs: http://archive.ubuntu.com/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: http://security.ubuntu.com/ubuntu/
Suites: noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""
COUNT_INVOICES = (
    "/usr/bin/python3 -c \"import sqlite3; c = sqlite3.connect('file:/var/lib/cashloop/cashloop.db?mode=ro', "
    "uri=True); print(c.execute('SELECT COUNT(*) FROM invoices').fetchone()[0])\""
)


def _debootstrap_script() -> str:
    # Debian 12's debootstrap predates noble; every Ubuntu release since gutsy uses the same script.
    scripts = Path("/usr/share/debootstrap/scripts")
    return str(scripts / "noble") if (scripts / "noble").exists() else str(scripts / "gutsy")


@pytest.fixture(scope="module")
def noble(tmp_path_factory) -> Path:
    """A minimal Ubuntu 24.04 root, as debootstrap makes it, with a stock server's package sources."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.fail("the Ubuntu root needs root and debootstrap (./dev installs it with apt)")
    root = tmp_path_factory.mktemp("noble") / "root"
    done = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=ca-certificates", "noble", str(root), MIRROR,
         _debootstrap_script()],
        capture_output=True, text=True, timeout=1200, check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"debootstrap of Ubuntu 24.04 from {MIRROR} failed (no network?):\n{done.stdout[-2000:]}"
                    f"{done.stderr[-2000:]}")
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/ubuntu.sources").write_text(SOURCES, encoding="utf-8")
    assert 'VERSION_ID="24.04"' in (root / "etc/os-release").read_text(encoding="utf-8")
    return root


def test_install_on_ubuntu_twice_then_start_and_turn_healthy(noble, tmp_path):
    src = source_copy(tmp_path / "src")
    host = tmp_path / "host"
    host.mkdir()
    generate(host / "export", today=date(2026, 3, 10), clients=4, invoices=60)
    config = demo_config(
        data_dir=Path("/var/lib/cashloop"), port=free_port(), stripe_base="http://127.0.0.1:9", smtp_port=9,
        secret_key="install-test-secret-key-0123456789",
    )
    (host / "config.toml").write_text(config, encoding="utf-8")
    root = ThrowawayRoot(tmp_path / "root", lower=noble)
    out = "/root/out"
    script = f"""
set -u
mkdir -p {out}
bash {src}/install.sh > {out}/first.log 2>&1; echo $? > {out}/first.rc
{root.snapshot_script(f"{out}/first.json")}
bash {src}/install.sh > {out}/second.log 2>&1; echo $? > {out}/second.rc
{root.snapshot_script(f"{out}/second.json")}
venv_python=$(ls /opt/cashloop/venvs/*/bin/python | head -1)
"$venv_python" -c 'import sys; print(sys.version_info[:2])' > {out}/python 2>&1 || true
install -m 0600 -o cashloop -g cashloop {host}/config.toml /etc/cashloop/config.toml
cp -r {host}/export /var/lib/cashloop/psa-export && chown -R cashloop:cashloop /var/lib/cashloop/psa-export
bash {src}/install.sh --start > {out}/start.log 2>&1; echo $? > {out}/start.rc
cashloop healthcheck --config /etc/cashloop/config.toml --wait 60 > {out}/health 2>&1; echo $? >> {out}/health
for i in $(seq 120); do n=$({COUNT_INVOICES} 2>/dev/null || echo 0); [ "$n" -gt 0 ] && break; sleep 0.5; done
{COUNT_INVOICES} > {out}/invoices 2>&1 || true
systemctl stop cashloop.service
"""
    done = root.run(script, timeout=1500, binds=(src, host))

    def read(name: str) -> str:
        return root.read(f"{out}/{name}").strip()

    assert done.returncode == 0, done.output
    assert read("first.rc") == "0", read("first.log")[-4000:]
    assert read("second.rc") == "0", read("second.log")[-4000:]
    first, second = json.loads(read("first.json")), json.loads(read("second.json"))
    assert second == first
    assert "    + " not in read("second.log"), read("second.log")
    assert "ok: release 1 is this source" in read("second.log")
    assert first["/etc/cashloop/config.toml"]["mode"] == "0o600"
    assert first["/var/lib/cashloop"]["owner"] == "cashloop"
    assert first["user:cashloop"]["shell"] == "/usr/sbin/nologin"
    assert read("python") == "(3, 12)"  # Ubuntu 24.04's own Python, not this host's
    assert read("start.rc") == "0", read("start.log")[-4000:]
    assert read("health").endswith("0"), read("health")
    assert int(read("invoices")) >= 50, read("invoices")


def test_install_on_ubuntu_without_universe_names_the_missing_component_and_installs_nothing(noble, tmp_path):
    src = source_copy(tmp_path / "src")
    root = ThrowawayRoot(tmp_path / "root", lower=noble)
    main_only = SOURCES.replace("main restricted universe multiverse", "main")
    script = f"""
set -u
mkdir -p /root/out
cat > /etc/apt/sources.list.d/ubuntu.sources <<'SOURCES'
{main_only}SOURCES
bash {src}/install.sh > /root/out/log 2>&1; echo $? > /root/out/rc
ls -d /opt/cashloop /etc/cashloop > /root/out/made 2>/dev/null || true
"""
    done = root.run(script, timeout=600, binds=(src,))
    assert done.returncode == 0, done.output
    log = root.read("/root/out/log")
    assert root.read("/root/out/rc").strip() == "1", log
    assert "package python3-venv is not available" in log and "enable the universe component" in log, log
    assert root.read("/root/out/made").strip() == ""
