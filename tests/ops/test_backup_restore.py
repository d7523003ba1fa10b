"""Backups of the live store taken while real payments are written, restored and checked; rotation,
encryption, the copies, and a restore that refuses what it must refuse and keeps what was there."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.core import migrations, payments
from app.core.clock import FrozenClock, SystemClock
from app.jobs import back_up_db
from app.jobs.scheduler import job_lock
from app.services import build_services
from backups import encryption, rotation
from backups.restore import RestoreError, restore
from tests.conftest import make_config
from tests.factories import make_client, make_invoice

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 10, 8, 30, tzinfo=UTC)
WRITERS = 3


def _services(folder: Path, extra: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    return build_services(make_config(folder, extra=extra), clock=SystemClock())


def _pay(services, client_id: int, invoice_id: int, n: int) -> int:
    """One card payment of 1.00, through the engine: pending, claimed, then Stripe's success applied."""
    plan = payments.start_payment(
        services.store, services.clock, client_id=client_id,
        items=[payments.PayItem(invoice_id, 100)], initiated_by="contact:1", allow_partial=True,
        minimum_partial="1.00",
    )
    assert payments.claim_for_submission(services.store, services.clock, plan.payment_id)
    outcome = payments.record_intent(
        services.store, services.clock, payment_id=plan.payment_id, intent_id=f"pi_backup_{n}",
        processor_status="succeeded", amount_minor=100, currency="USD",
        base_url=services.config.cashloop.base_url, timezone=services.config.tz,
    )
    assert outcome.status == "succeeded"
    return plan.payment_id


def _restored(backup_file: Path, folder: Path) -> sqlite3.Connection:
    folder.mkdir()
    done = restore(backup_file, folder / "cashloop.db", known_migrations=migrations.names(), now=NOW)
    conn = sqlite3.connect(done.database)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return conn


def test_a_backup_taken_while_payments_are_written_restores_every_committed_payment_whole(tmp_path):
    services = _services(tmp_path / "live")
    setup = []
    for w in range(WRITERS):
        client_id = make_client(services, f"b{w}", f"Client {w}", billing_email=f"ap{w}@backup.example")
        setup.append((client_id, make_invoice(services, f"INV-B{w}", client_remote_id=f"b{w}",
                                              total_minor=10_000_000)))
    committed: list[int] = []  # payment ids, appended only after their transaction committed
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(w: int) -> None:
        client_id, invoice_id = setup[w]
        n = 0
        try:
            while not stop.is_set():
                payment_id = _pay(services, client_id, invoice_id, w * 100_000 + n)
                with lock:
                    committed.append(payment_id)
                n += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    taken: list[tuple[set[int], Path]] = []
    try:
        while len(committed) < 30 and not failures:
            stop.wait(0.01)
        for _ in range(3):
            with lock:
                before = set(committed)
            taken.append((before, back_up_db.run(services).path))
            stop.wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert len(committed) > 40
    for i, (before, path) in enumerate(taken):
        conn = _restored(path, tmp_path / f"restored{i}")
        rows = conn.execute(
            "SELECT p.id, p.status, p.amount_minor, "
            "(SELECT SUM(amount_minor) FROM allocations a WHERE a.payment_id = p.id), "
            "(SELECT COUNT(*) FROM outbox o WHERE o.kind = 'email' "
            " AND o.payload_json LIKE '%' || p.token || '%') "
            "FROM payments p"
        ).fetchall()
        held = {r[0] for r in rows}
        assert before <= held, f"backup {i} lost committed payments {sorted(before - held)[:5]}"
        for payment_id, status, amount, allocated, receipts in rows:
            # Never half a payment: each is either whole (succeeded, allocated, receipted) or still
            # before its success in one of its own committed states.
            assert allocated == amount == 100, (payment_id, status)
            assert status in ("succeeded", "submitted", "pending")
            if status == "succeeded":
                assert receipts >= 1, payment_id
        paid = conn.execute(
            "SELECT SUM(a.amount_minor) FROM allocations a JOIN payments p ON p.id = a.payment_id "
            "WHERE p.status = 'succeeded'"
        ).fetchone()[0]
        assert paid == 100 * sum(1 for r in rows if r[1] == "succeeded")
        conn.close()


def test_restore_refuses_a_corrupt_backup_and_keeps_the_current_database(tmp_path):
    services = build_services(make_config(tmp_path), clock=SystemClock())
    make_client(services)
    make_invoice(services, "INV-KEEP")
    services.store.close()
    db = tmp_path / "cashloop.db"
    good = back_up_db.run(services).path
    data = bytearray(good.read_bytes())
    for offset in range(len(data) // 3, len(data) // 3 + 3 * 4096, 5):
        data[offset] ^= 0x5A
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(RestoreError, match=r"integrity|not a readable|cannot be opened"):
        restore(corrupt, db, known_migrations=migrations.names(), now=NOW)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".cashloop.db")) == []
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database at all " * 200)
    with pytest.raises(RestoreError):
        restore(not_sqlite, db, known_migrations=migrations.names(), now=NOW)
    assert db.read_bytes() == before


def test_restore_refuses_a_backup_from_a_newer_release(tmp_path):
    services = build_services(make_config(tmp_path), clock=SystemClock())
    path = back_up_db.run(services).path
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('cashloop', '0099_from_the_future', '2027-01-01')")
    conn.commit()
    conn.close()
    with pytest.raises(RestoreError, match=r"newer Cashloop.*0099_from_the_future"):
        restore(path, tmp_path / "cashloop.db", known_migrations=migrations.names(), now=NOW)


def test_restore_puts_the_backup_in_place_and_keeps_the_old_database_with_its_wal(tmp_path):
    services = build_services(make_config(tmp_path), clock=SystemClock())
    make_client(services)
    make_invoice(services, "INV-OLD")
    path = back_up_db.run(services).path
    make_invoice(services, "INV-AFTER-THE-BACKUP")  # committed, still in cashloop.db-wal
    services.store.close()
    done = restore(path, tmp_path / "cashloop.db", known_migrations=migrations.names(), now=NOW)
    assert done.kept == tmp_path / "cashloop.db.before-restore-20260310T083000Z"
    restored = sqlite3.connect(done.database)
    assert [r[0] for r in restored.execute("SELECT number FROM invoices")] == ["INV-OLD"]
    kept = sqlite3.connect(done.kept)
    numbers = sorted(r[0] for r in kept.execute("SELECT number FROM invoices"))
    assert numbers == ["INV-AFTER-THE-BACKUP", "INV-OLD"]
    assert oct(done.database.stat().st_mode & 0o777) == "0o600"


def test_encrypted_backups_restore_with_the_key_and_refuse_a_wrong_key_or_a_flipped_bit(tmp_path):
    key_file = tmp_path / "backup.key"
    encryption.make_key(key_file)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    cfg = make_config(tmp_path, extra=f'\n[ops.backup]\nencryption_key_file = "{key_file}"\n')
    services = build_services(cfg, clock=SystemClock())
    make_client(services)
    make_invoice(services, "INV-SEALED")
    path = back_up_db.run(services).path
    assert path.name.endswith(".sqlite3.enc") and encryption.is_encrypted(path)
    assert b"INV-SEALED" not in path.read_bytes() and b"SQLite format 3" not in path.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no plain copy left beside it
    services.store.close()
    key = encryption.load_key(key_file)
    with pytest.raises(RestoreError, match="encrypted"):
        restore(path, tmp_path / "other" / "cashloop.db", known_migrations=migrations.names(), now=NOW)
    other = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "wrong.key").write_text(other)
    (tmp_path / "x").mkdir()
    with pytest.raises(RestoreError, match="does not open with this key"):
        restore(path, tmp_path / "x" / "cashloop.db", known_migrations=migrations.names(),
                key=encryption.load_key(tmp_path / "wrong.key"), now=NOW)
    known = migrations.names()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped = tmp_path / "flipped.enc"
    flipped.write_bytes(bytes(data))
    with pytest.raises(RestoreError, match="does not open"):
        restore(flipped, tmp_path / "x" / "cashloop.db", known_migrations=known, key=key, now=NOW)
    cut = tmp_path / "cut.enc"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(RestoreError):
        restore(cut, tmp_path / "x" / "cashloop.db", known_migrations=known, key=key, now=NOW)
    assert not (tmp_path / "x" / "cashloop.db").exists()
    done = restore(path, tmp_path / "x" / "cashloop.db", known_migrations=known, key=key, now=NOW)
    conn = sqlite3.connect(done.database)
    assert [r[0] for r in conn.execute("SELECT number FROM invoices")] == ["INV-SEALED"]


def test_a_multi_chunk_file_round_trips_through_encryption(tmp_path):
    key = os.urandom(32)
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3 * 1000 + 17))
    encryption.encrypt_file(source, tmp_path / "big.enc", key, chunk=1000)
    encryption.decrypt_file(tmp_path / "big.enc", tmp_path / "big.out", key)
    assert (tmp_path / "big.out").read_bytes() == source.read_bytes()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    encryption.encrypt_file(empty, tmp_path / "empty.enc", key)
    encryption.decrypt_file(tmp_path / "empty.enc", tmp_path / "empty.out", key)
    assert (tmp_path / "empty.out").read_bytes() == b""


def test_rotation_keeps_the_newest_of_each_day_week_and_month_and_nothing_else_is_touched(tmp_path):
    tz = ZoneInfo("America/Chicago")
    folder = tmp_path / "backups"
    folder.mkdir()
    start = datetime(2026, 3, 10, 8, 30, tzinfo=UTC)  # 02:30 in Chicago
    for days in range(120):
        stamp = (start - timedelta(days=days)).strftime("%Y%m%dT%H%M%SZ")
        (folder / f"cashloop-{stamp}.sqlite3").write_bytes(b"x")
    (folder / "cashloop-20260310T083000Z-2.sqlite3").write_bytes(b"x")  # a second one that night
    (folder / "notes.txt").write_text("mine")
    removed = rotation.rotate(folder, daily=7, weekly=4, monthly=3, tz=tz)
    kept = sorted(p.name for p in folder.iterdir())
    assert "notes.txt" in kept
    stamps = sorted((b.taken_at.astimezone(tz).date().isoformat(), b.n)
                    for b in rotation.backups_in(folder))
    days = [d for d, _ in stamps]
    assert ("2026-03-10", 2) in stamps and ("2026-03-10", 1) in stamps  # the last 24 hours: all
    assert [f"2026-03-{d:02d}" for d in range(4, 11)] == sorted(set(days))[-7:]  # seven days
    assert "2026-03-01" in days and "2026-02-28" in days and "2026-01-31" in days  # months' newest
    assert "2026-02-22" in days  # the newest of the ISO week 8 (Sunday)
    assert len(days) == 12 and len(set(days)) == 11
    assert len(removed) == 121 - 12
    older = rotation.to_keep(rotation.backups_in(folder), daily=1, weekly=0, monthly=0, tz=tz)
    assert {p.name for p in older} == {f"cashloop-20260310T083000Z{n}.sqlite3" for n in ("", "-2")}


def test_each_backup_is_copied_to_the_second_folder_and_both_are_rotated(tmp_path):
    second = tmp_path / "second"
    cfg = make_config(tmp_path, extra=f'\n[ops.backup]\ncopy_to = "{second}"\nkeep_daily = 1\n'
                                      'keep_weekly = 0\nkeep_monthly = 0\n')
    clock = FrozenClock(NOW - timedelta(days=3))
    services = build_services(cfg, clock=clock)
    first = back_up_db.run(services)
    assert (second / first.path.name).read_bytes() == first.path.read_bytes()
    clock.set(NOW)
    again = back_up_db.run(services)  # three days later: the old one goes, in both folders
    assert sorted(p.name for p in second.iterdir()) == [again.path.name]
    assert sorted(p.name for p in again.path.parent.iterdir()) == [again.path.name]


def test_copy_command_gets_the_backup_file_and_its_failure_is_reported(tmp_path):
    target = tmp_path / "remote"
    target.mkdir()
    ok = _services(tmp_path / "a", f'\n[ops.backup]\ncopy_command = ["cp", "{{file}}", "{target}/"]\n')
    report = back_up_db.run(ok)
    assert (target / report.path.name).exists() and report.copied_to == ["cp"]
    bad = _services(tmp_path / "b", '\n[ops.backup]\ncopy_command = ["false", "{file}"]\n')
    with pytest.raises(back_up_db.BackupFailed, match="copy_command false exited 1"):
        back_up_db.run(bad)


def _cashloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def _config_file(tmp_path: Path) -> Path:
    from app.demo.runner import demo_config

    (tmp_path / "psa-export").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(demo_config(data_dir=tmp_path, port=8080, stripe_base="http://127.0.0.1:9", smtp_port=9,
                                secret_key="restore-secret-key-0123456789abcd"))
    return path


def test_the_restore_command_refuses_while_the_service_runs_and_restores_once_it_is_stopped(tmp_path):
    config = _config_file(tmp_path)
    missing = _cashloop("backup", "--config", str(config))
    assert missing.returncode == 1 and "no database at" in missing.stderr  # and none was created
    assert not (tmp_path / "cashloop.db").exists()
    services = build_services(make_config(tmp_path), clock=SystemClock())
    made = _cashloop("backup", "--config", str(config))
    assert made.returncode == 0, made.stderr
    backup_file = Path(made.stdout.split("backup: ")[1].split(";")[0])
    make_client(services)
    make_invoice(services, "INV-AFTER")
    with job_lock(services):  # what the running service holds
        busy = _cashloop("restore", str(backup_file), "--config", str(config))
    assert busy.returncode == 3 and "stop it first" in busy.stderr
    assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 1
    services.store.close()
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    refused = _cashloop("restore", str(corrupt), "--config", str(config))
    assert refused.returncode == 5 and "the current database is unchanged" in refused.stderr
    done = _cashloop("restore", str(backup_file), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "is kept as" in done.stdout
    conn = sqlite3.connect(tmp_path / "cashloop.db")
    assert conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0] == 0
