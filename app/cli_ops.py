"""The operator's commands: `cashloop backup`, `restore`, `doctor` and `healthcheck`.

    cashloop backup [--make-key PATH]   an online backup now (the service may run), rotated
    cashloop restore FILE               put a backup in place; the service must be stopped
    cashloop doctor [--migrate]         the start-up checks, one line each (exit codes as serve's)
    cashloop healthcheck [--wait S]     GET /healthz of the running service; 0 when healthy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from app import cli


def cmd_backup(args: argparse.Namespace) -> int:
    from backups import encryption

    if args.make_key:
        try:
            encryption.make_key(Path(args.make_key))
        except FileExistsError:
            print(f"cashloop: {args.make_key} exists; a key is never overwritten", file=sys.stderr)
            return 2
        print(f"new backup key in {args.make_key} (mode 0600): keep a copy away from this machine; "
              "without it no encrypted backup can be restored")
        return 0
    from app.jobs import back_up_db

    def run(services) -> int:
        try:
            report = back_up_db.run(services)
        except back_up_db.BackupFailed as exc:
            print(f"cashloop: {exc}", file=sys.stderr)
            return 1
        print(report.summary())
        return 0

    # NOTE: not under the job lock: an online backup is safe while the service writes, and the
    # scheduler's own backup job may run meanwhile (each makes its own file). The store is opened
    # without migrating: the backup before an upgrade must be of the database as the old release left it.
    import sqlite3

    from app.core import job_runs
    from app.core.clock import SystemClock
    from app.core.store import Store
    from app.services import Services

    cfg = cli._config(args.config)
    cli._logging(cfg)
    services = Services(config=cfg, store=Store(cfg.db_path), clock=SystemClock())
    code = run(services)
    if code == 0:
        try:  # the heartbeat /healthz reads; a database older than the job_runs table has none
            job_runs.started(services.store, services.clock, "backup")
            job_runs.finished(services.store, services.clock, "backup")
        except sqlite3.OperationalError:
            pass
    return code


def cmd_restore(args: argparse.Namespace) -> int:
    from app.core import migrations
    from app.core.clock import SystemClock
    from app.jobs import back_up_db
    from app.jobs.scheduler import LockBusy, job_lock_at
    from backups import encryption
    from backups.restore import RestoreError, restore

    cfg = cli._config(args.config)  # the database is never opened before the backup is checked
    try:
        key = back_up_db.key(cfg)
    except encryption.EncryptionError as exc:
        print(f"cashloop: {exc}", file=sys.stderr)
        return 2
    try:
        with job_lock_at(cfg.data_path):
            done = restore(Path(args.file), cfg.db_path, known_migrations=migrations.names(), key=key,
                           now=SystemClock().utc_now())
    except LockBusy:
        print("cashloop: the service is running (it holds the job lock); stop it first: "
              "systemctl stop cashloop", file=sys.stderr)
        return 3
    except RestoreError as exc:
        print(f"cashloop: restore refused: {exc}; the current database is unchanged", file=sys.stderr)
        return 5
    print(f"restored {args.file} to {done.database} ({len(done.migrations)} migrations)")
    if done.kept:
        print(f"the database that was there is kept as {done.kept}")
    print("start the service (systemctl start cashloop): newer migrations run at start-up. Payments, "
          "webhooks and emails after the backup are not in it: compare with Stripe and the PSA.")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from app import startup_checks

    cfg = cli._config(args.config)
    print(f"config {cfg.source_path}: ok")
    code = cli._startup_checks(cfg, apply_migrations=args.migrate)
    if code:
        return code
    pending = startup_checks.pending_migrations(cfg)
    print(f"data directory {cfg.data_path}: ok")
    print(f"database {cfg.db_path}: ok" + (f"; pending migrations: {', '.join(pending)}" if pending else ""))
    print("clock: ok")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    cfg = cli._config(args.config)
    url = args.url or f"http://{cfg.cashloop.listen}/healthz"
    deadline = time.monotonic() + args.wait
    last = "no answer"
    while True:
        try:
            # The URL is our own service's (from the config, or given on the command line).
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 # nosec B310
                body = json.loads(response.read())
                print(f"healthy: {url}")
                return 0 if body.get("status") == "ok" else 1
        except urllib.error.HTTPError as exc:
            try:
                last = "; ".join(json.loads(exc.read()).get("problems", [])) or str(exc)
            except ValueError:
                last = str(exc)
        except (OSError, ValueError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            print(f"cashloop: unhealthy: {url}: {last}", file=sys.stderr)
            return 1
        time.sleep(1)


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("backup", help="make an online backup now (the service may keep running)")
    s.add_argument("--config")
    s.add_argument("--make-key", metavar="PATH", help="write a new backup encryption key to PATH instead")
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("restore", help="restore a backup (checked first); the service must be stopped")
    s.add_argument("file", help="a backup made by `cashloop backup` (.sqlite3 or .sqlite3.enc)")
    s.add_argument("--config")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("doctor", help="run the start-up checks (config, data directory, database, clock)")
    s.add_argument("--config")
    s.add_argument("--migrate", action="store_true", help="also apply pending migrations, as serve does")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("healthcheck", help="ask the running service's /healthz; exit 0 when healthy")
    s.add_argument("--config")
    s.add_argument("--url", help="default http://<cashloop.listen>/healthz")
    s.add_argument("--wait", type=float, default=0, help="keep asking for this many seconds")
    s.set_defaults(func=cmd_healthcheck)
