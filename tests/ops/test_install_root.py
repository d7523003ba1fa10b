"""install.sh in a throwaway root (tests/ops/throwaway_root.py): the host's own Debian, overlaid, in
private namespaces, with systemctl stubbed only because there is no init. Install twice, upgrade
(good, then with a failing migration, then with a release that never turns healthy), uninstall."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest

from app.demo.dataset import generate
from app.demo.runner import demo_config
from tests.conftest import free_port
from tests.ops.throwaway_root import ThrowawayRoot, source_copy

COUNT_INVOICES = (
    "/usr/bin/python3 -c \"import sqlite3; c = sqlite3.connect('file:/var/lib/cashloop/cashloop.db?mode=ro', "
    "uri=True); print(c.execute('SELECT COUNT(*) FROM invoices').fetchone()[0])\""
)
MIGRATIONS = (
    "/usr/bin/python3 -c \"import sqlite3; c = sqlite3.connect('file:/var/lib/cashloop/cashloop.db?mode=ro', "
    "uri=True); print(','.join(r[0] for r in c.execute('SELECT name FROM _sqlite_migrations ORDER BY 1')))\""
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A root with Cashloop installed once (the slow part: the virtualenv), and its source."""
    base = tmp_path_factory.mktemp("installed")
    src = source_copy(base / "src")
    root = ThrowawayRoot(base / "root")
    done = root.run(
        "mkdir -p /root/out\n"
        f"bash {src}/install.sh > /root/out/first.log 2>&1 || {{ cat /root/out/first.log; exit 1; }}\n"
        + root.snapshot_script("/root/out/first.json")
    )
    assert done.returncode == 0, done.output
    return root, src


def test_install_run_twice_leaves_the_same_files_with_the_same_permissions(installed, tmp_path):
    below, src = installed
    root = ThrowawayRoot(tmp_path / "root", copy_of=below)
    done = root.run(
        f"bash {src}/install.sh > /root/out/second.log 2>&1\n" + root.snapshot_script("/root/out/second.json")
    )
    assert done.returncode == 0, done.output + root.read("/root/out/second.log")
    first = json.loads(root.read("/root/out/first.json"))
    second = json.loads(root.read("/root/out/second.json"))
    assert second == first
    log = root.read("/root/out/second.log")
    assert "    + " not in log, log  # the second run ran nothing that changes anything
    assert "ok: release 1 is this source" in log

    def entry(path: str) -> tuple:
        row = first[path]
        return (row["kind"], row["mode"], row["owner"], row["group"])

    assert entry("/etc/cashloop/config.toml") == ("file", "0o600", "cashloop", "cashloop")
    assert entry("/etc/cashloop") == ("dir", "0o750", "root", "cashloop")
    assert entry("/etc/cashloop/credentials") == ("dir", "0o700", "root", "root")
    assert entry("/var/lib/cashloop") == ("dir", "0o700", "cashloop", "cashloop")
    assert entry("/etc/systemd/system/cashloop.service") == ("file", "0o644", "root", "root")
    assert entry("/opt/cashloop/releases/1/bin/cashloop") == ("file", "0o755", "root", "root")
    assert first["/opt/cashloop/current"]["target"] == "releases/1"
    assert first["/usr/local/bin/cashloop"]["target"] == "/opt/cashloop/current/bin/cashloop"
    assert first["/etc/systemd/system/multi-user.target.wants/cashloop.service"]["kind"] == "link"
    assert first["user:cashloop"]["shell"] == "/usr/sbin/nologin"
    released = {p for p in first if p.startswith("/opt/cashloop/releases/1/app/") and p.endswith(".py")}
    assert "/opt/cashloop/releases/1/app/cli.py" in released
    assert all(first[p]["owner"] == "root" and first[p]["mode"] == "0o644" for p in released)
    assert not os.path.exists("/opt/cashloop/releases"), "the host itself was changed"


def _upgrade_sources(src: Path, tmp_path: Path) -> dict[str, Path]:
    """Three later releases: a good one with a new migration, one whose second new migration fails,
    one whose /healthz never turns healthy (after a migration of its own)."""
    def variant(name: str, migrations: str, patch: tuple[str, str, str] | None = None) -> Path:
        dest = source_copy(tmp_path / name, root=src)
        with (dest / "app/core/migrations.py").open("a", encoding="utf-8") as fh:
            fh.write(migrations)
        if patch:
            path = dest / patch[0]
            text = path.read_text(encoding="utf-8")
            assert patch[1] in text
            path.write_text(text.replace(patch[1], patch[2]), encoding="utf-8")
        return dest

    good = '''

@MIGRATIONS(name="0900_upgrade_probe")
def _upgrade_probe(db):
    db.execute("CREATE TABLE upgrade_probe (id INTEGER PRIMARY KEY)")
'''
    failing = good + '''

@MIGRATIONS(name="0901_half")
def _half(db):
    db.execute("CREATE TABLE upgrade_half (id INTEGER PRIMARY KEY)")


@MIGRATIONS(name="0902_fails")
def _fails(db):
    raise RuntimeError("this migration fails on purpose")
'''
    unhealthy = good + '''

@MIGRATIONS(name="0903_before_sick")
def _before_sick(db):
    db.execute("CREATE TABLE upgrade_sick (id INTEGER PRIMARY KEY)")
'''
    return {
        "good": variant("good", good),
        "failing": variant("failing", failing),
        "unhealthy": variant(
            "unhealthy", unhealthy,
            ("app/web/health.py", "    problems: list[str] = []\n",
             '    problems: list[str] = ["sick on purpose"]\n'),
        ),
    }


def test_upgrade_migrates_and_restarts_and_a_failing_release_is_rolled_back_without_losing_data(
    installed, tmp_path
):
    below, src = installed
    root = ThrowawayRoot(tmp_path / "root", copy_of=below)
    port = free_port()
    host = tmp_path / "host"
    host.mkdir()
    generate(host / "export", today=date(2026, 3, 10), clients=4, invoices=60)
    config = demo_config(
        data_dir=Path("/var/lib/cashloop"), port=port, stripe_base="http://127.0.0.1:9", smtp_port=9,
        secret_key="install-test-secret-key-0123456789",
    ).replace('webhook_secret = "whsec_cashloop_demo"',
              'webhook_secret_file = "$CREDENTIALS_DIRECTORY/stripe_webhook_secret"')
    (host / "config.toml").write_text(config, encoding="utf-8")
    sources = _upgrade_sources(src, tmp_path)
    assert all(path == tmp_path / name for name, path in sources.items())
    script = f"""
set -u
out=/root/out/upgrade; mkdir -p $out
install -m 0600 -o cashloop -g cashloop {host}/config.toml /etc/cashloop/config.toml
install -m 0600 /dev/stdin /etc/cashloop/credentials/stripe_webhook_secret <<< whsec_from_a_credential
cp -r {host}/export /var/lib/cashloop/psa-export && chown -R cashloop:cashloop /var/lib/cashloop/psa-export
bash {src}/install.sh --start > $out/start.log 2>&1; echo $? > $out/start.rc
last=0; for i in $(seq 150); do
    n=$({COUNT_INVOICES} 2>/dev/null || echo 0)
    [ "$n" -gt 0 ] && [ "$n" = "$last" ] && break; last=$n; sleep 0.5
done
{COUNT_INVOICES} > $out/invoices.before
for name in good failing unhealthy; do
    s={tmp_path}/$name
    bash $s/install.sh --upgrade > $out/$name.log 2>&1; echo $? > $out/$name.rc
    readlink /opt/cashloop/current > $out/$name.current
    cashloop healthcheck --config /etc/cashloop/config.toml --wait 30 > $out/$name.health 2>&1
    echo $? >> $out/$name.health
    {COUNT_INVOICES} > $out/$name.invoices
    {MIGRATIONS} > $out/$name.migrations
done
bash {tmp_path}/good/install.sh --upgrade > $out/again.log 2>&1; echo $? > $out/again.rc
ls /var/lib/cashloop/backups > $out/backups
ls /var/lib/cashloop > $out/data
cp /var/log/cashloop-service.log $out/service.log 2>/dev/null || true
systemctl stop cashloop.service
"""
    done = root.run(script)
    out = "/root/out/upgrade"

    def read(name: str) -> str:
        return root.read(f"{out}/{name}").strip()

    assert done.returncode == 0, done.output
    assert read("start.rc") == "0", read("start.log")
    before = read("invoices.before")
    assert int(before) >= 50, read("service.log")[-3000:]

    assert read("good.rc") == "0", read("good.log")
    assert read("good.current") == "releases/2"
    assert read("good.health").endswith("0")
    assert read("good.invoices") == before
    assert "0900_upgrade_probe" in read("good.migrations")
    assert "migrations: 0900_upgrade_probe" in read("good.log")

    assert read("failing.rc") == "1"
    assert "migrations failed" in read("failing.log") and "release 2 runs again" in read("failing.log")
    assert read("failing.current") == "releases/2"
    assert read("failing.health").endswith("0"), read("failing.health")
    assert read("failing.invoices") == before
    assert "0901_half" not in read("failing.migrations")  # the half-done upgrade was restored away

    assert read("unhealthy.rc") == "1"
    assert "did not turn healthy" in read("unhealthy.log") and "release 2 runs again" in read("unhealthy.log")
    assert read("unhealthy.current") == "releases/2"
    assert read("unhealthy.health").endswith("0"), read("unhealthy.health")
    assert read("unhealthy.invoices") == before
    assert "0903_before_sick" not in read("unhealthy.migrations")
    # What the rolled-back release wrote is kept beside the restored database, not thrown away.
    assert any(name.startswith("cashloop.db.before-restore-") for name in read("data").split())

    assert read("again.rc") == "0" and "nothing to upgrade" in read("again.log")
    backups = read("backups").split()
    assert len(backups) == 3 and all(b.startswith("cashloop-") for b in backups), backups  # one per upgrade
    assert "whsec_from_a_credential" not in read("service.log")


def test_uninstall_keeps_config_and_data_unless_purged(installed, tmp_path):
    below, src = installed
    root = ThrowawayRoot(tmp_path / "root", copy_of=below)
    script = f"""
out=/root/out/uninstall; mkdir -p $out
echo probe > /var/lib/cashloop/probe
bash {src}/install.sh --uninstall > $out/first.log 2>&1; echo $? > $out/first.rc
{root.snapshot_script("$out/kept.json")}
bash {src}/install.sh --uninstall > $out/second.log 2>&1; echo $? > $out/second.rc
bash {src}/install.sh --uninstall --purge > $out/purge.log 2>&1; echo $? > $out/purge.rc
{root.snapshot_script("$out/purged.json")}
"""
    done = root.run(script)
    assert done.returncode == 0, done.output
    out = "/root/out/uninstall"
    assert root.read(f"{out}/first.rc").strip() == "0", root.read(f"{out}/first.log")
    kept = json.loads(root.read(f"{out}/kept.json"))
    assert "/opt/cashloop" not in kept and "/usr/local/bin/cashloop" not in kept
    assert "/etc/systemd/system/cashloop.service" not in kept
    assert "/etc/systemd/system/multi-user.target.wants/cashloop.service" not in kept
    assert kept["/etc/cashloop/config.toml"]["mode"] == "0o600"
    assert "/var/lib/cashloop/probe" in kept and "user:cashloop" in kept
    assert root.read(f"{out}/second.rc").strip() == "0"
    assert "already removed" in root.read(f"{out}/second.log")
    assert root.read(f"{out}/purge.rc").strip() == "0", root.read(f"{out}/purge.log")
    assert json.loads(root.read(f"{out}/purged.json")) == {}
