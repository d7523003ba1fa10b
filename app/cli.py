"""The `cashloop` command."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

from app.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "/etc/cashloop/config.toml"


def _config(path: str | None) -> Config:
    path = path or os.environ.get("CASHLOOP_CONFIG") or DEFAULT_CONFIG
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"cashloop: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _logging(cfg: Config | None = None) -> None:
    from app import logs

    logs.configure(cfg)  # one structured line per event, secrets masked (app/logs.py)


def _services(cfg: Config):
    from app.services import build_services

    try:
        return build_services(cfg)
    except (OSError, RuntimeError) as exc:
        print(f"cashloop: cannot open the database in {cfg.cashloop.data_dir}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _config(args.path)
    print(
        f"{cfg.source_path}: OK (psa {cfg.psa.kind}, accounting {cfg.accounting.kind}, "
        f"time zone {cfg.cashloop.timezone})"
    )
    return 0


def _startup_checks(cfg: Config, *, apply_migrations: bool = True) -> int:
    """Run the start-up checks; print each problem as one line; return its exit code (0: all fine)."""
    from app import startup_checks
    from app.core.clock import SystemClock

    problems, applied = startup_checks.run(cfg, SystemClock().utc_now(), apply_migrations=apply_migrations)
    if applied:
        logging.getLogger("app.cli").info("migrations applied: %s", ", ".join(applied))
    for problem in problems:
        print(f"cashloop: {problem.line()}", file=sys.stderr)
    return problems[0].exit_code if problems else 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    _logging(cfg)
    os.umask(0o077)  # what the service writes (database, backups, journal) is its own, as under systemd
    code = _startup_checks(cfg)
    if code:
        return code
    from app.server import serve

    serve(cfg, bind=args.bind)
    return 0


EXIT_STOPPED = 143  # 128 + SIGTERM: the job stopped on request after finishing its unit of work


def _stop_on_sigterm() -> object:
    """Install the job commands' SIGTERM handler; returns the one it replaced."""
    # The first SIGTERM asks the job to stop after its current unit (a page, a charge, an entry:
    # each is committed whole); a second one kills at once, which is also safe, only slower to resume.
    import signal

    from app.core import stop_flag

    def on_term(signum: int, frame: object) -> None:
        if stop_flag.requested():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        stop_flag.request()
        print("cashloop: stopping after the current unit of work (SIGTERM)", file=sys.stderr, flush=True)

    return signal.signal(signal.SIGTERM, on_term)


def _run_job(args: argparse.Namespace, fn, name: str | None = None) -> int:
    cfg = _config(args.config)
    _logging(cfg)
    services = _services(cfg)
    import signal

    from app.core import job_runs, stop_flag
    from app.jobs.scheduler import LockBusy, job_lock

    previous = _stop_on_sigterm()
    try:
        with job_lock(services):
            if name:
                job_runs.started(services.store, services.clock, name)
            code = fn(services)
            if name:
                job_runs.finished(services.store, services.clock, name,
                                  error=None if code == 0 else f"exit {code}")
    except LockBusy as exc:
        print(f"cashloop: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]
    if stop_flag.requested():
        print("cashloop: stopped on request; run the command again to go on from here", file=sys.stderr)
        return EXIT_STOPPED
    return code


def cmd_sync(args: argparse.Namespace) -> int:
    from app.jobs import poll_psa

    def run(services) -> int:
        from app.cli_progress import ProgressBar

        # A person at a terminal sees a bar; a pipe or a log file gets only the summary line.
        bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            # Run by hand, a connector stopped by a refused login is tried again (keys fixed?).
            report = poll_psa.run(services, full=args.full, progress=bar, retry_stopped=True)
        finally:
            if bar is not None:
                bar.close()
        print(report.summary())
        return 1 if report.error else 0

    return _run_job(args, run, "poll_psa")


def cmd_outbox(args: argparse.Namespace) -> int:
    from app.jobs import drain_outbox

    def run(services) -> int:
        report = drain_outbox.run(services, limit=args.limit)
        print(f"outbox: {report.done} done, {report.retried} to retry, {report.dead} dead")
        for err in report.errors:
            print(f"  {err}")
        return 0

    return _run_job(args, run, "drain_outbox")


def cmd_remind(args: argparse.Namespace) -> int:
    from app.jobs import send_reminders

    def run(services) -> int:
        report = send_reminders.run(services)
        print(f"reminders: {report.messages} messages for {report.invoices} invoices of "
              f"{len(report.clients)} clients ({report.skipped_steps} earlier steps skipped)")
        return 0

    return _run_job(args, run, "send_reminders")


def cmd_autopay(args: argparse.Namespace) -> int:
    from app.jobs import run_autopay

    def run(services) -> int:
        report = run_autopay.run(services, dry_run=args.dry_run)
        if args.dry_run:
            print(f"autopay (dry run): {len(report.planned)} charges would be made; nothing was charged")
            for charge in report.planned:
                print(f"  {run_autopay.describe(charge)}")
            return 0
        print(report.summary())
        for err in report.errors:
            print(f"  {err}")
        return 1 if report.errors else 0

    return _run_job(args, run, None if args.dry_run else "autopay")


def cmd_create_admin(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    services = _services(cfg)
    if args.password_file:
        password = Path(args.password_file).read_text(encoding="utf-8").strip()
    else:
        password = getpass.getpass(f"Password for {args.email}: ")
    from app.core.admins import AdminError, create_admin_with_second_factor

    try:
        enrollment = create_admin_with_second_factor(
            services.store, services.clock, email=args.email, password=password, role=args.role,
            issuer=cfg.admin.totp_issuer or cfg.branding.name,
        )
    except AdminError as exc:
        print(f"cashloop: {exc}", file=sys.stderr)
        return 2
    print(f"admin {args.email} ({args.role}) created")
    _print_enrollment(enrollment)
    return 0


def _print_enrollment(enrollment) -> None:
    # Shown once: only hashes of the recovery codes are stored, and the secret is never printed again.
    print("Two-factor sign-in: add this to an authenticator app (paste the URI or type the secret):")
    print(f"  {enrollment.uri}")
    print(f"  secret: {enrollment.secret}")
    print("Recovery codes (each works once, in place of a code; keep them somewhere safe):")
    for code in enrollment.recovery_codes:
        print(f"  {code}")


def cmd_admin_2fa(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    services = _services(cfg)
    from app.core.admins import AdminError, reset_second_factor

    try:
        enrollment = reset_second_factor(services.store, services.clock, email=args.email,
                                         issuer=cfg.admin.totp_issuer or cfg.branding.name)
    except AdminError as exc:
        print(f"cashloop: {exc}", file=sys.stderr)
        return 2
    print(f"new two-factor secret for {args.email}; the old secret, recovery codes and sessions are void")
    _print_enrollment(enrollment)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo.runner import run_demo

    return run_demo(port=args.port, data_dir=Path(args.data), fresh=args.fresh)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cashloop", description="Self-hosted payment portal for MSPs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="run the whole loop on loopback with generated data")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--data", default="demo-data", help="folder for the demo's files (default ./demo-data)")
    s.add_argument("--fresh", action="store_true", help="throw away earlier demo data first")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("serve", help="run the portal and the scheduler under gunicorn")
    s.add_argument("--config", help=f"config file (default $CASHLOOP_CONFIG or {DEFAULT_CONFIG})")
    s.add_argument("--bind", help="host:port, overriding cashloop.listen")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check-config", help="validate a config file and exit (2 on any error)")
    s.add_argument("path")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("sync", help="poll the PSA once")
    s.add_argument("--config")
    s.add_argument("--full", action="store_true", help="re-read everything, ignoring the cursors")
    s.set_defaults(func=cmd_sync)

    s = sub.add_parser("outbox", help="deliver due outbox entries once")
    s.add_argument("--config")
    s.add_argument("--limit", type=int, default=500)
    s.set_defaults(func=cmd_outbox)

    s = sub.add_parser("remind", help="send today's payment reminders (after the send time; never twice)")
    s.add_argument("--config")
    s.set_defaults(func=cmd_remind)

    s = sub.add_parser("autopay", help="charge what autopay makes due now, retry failures, send notices")
    s.add_argument("--config")
    s.add_argument("--dry-run", action="store_true", help="list what would be charged; change nothing")
    s.set_defaults(func=cmd_autopay)

    s = sub.add_parser("create-admin", help="create an admin user for the finance pages")
    s.add_argument("--config")
    s.add_argument("--email", required=True)
    s.add_argument("--role", choices=["owner", "finance", "readonly"], default="owner")
    s.add_argument("--password-file", help="read the password from this file instead of prompting")
    s.set_defaults(func=cmd_create_admin)

    s = sub.add_parser("admin-2fa", help="give an admin a new two-factor secret and recovery codes")
    s.add_argument("--config")
    s.add_argument("--email", required=True)
    s.set_defaults(func=cmd_admin_2fa)

    from app import cli_ops

    cli_ops.add_commands(sub)  # backup, restore, doctor, healthcheck (app/cli_ops.py)
    from app import cli_tieout

    cli_tieout.add_commands(sub)  # tieout (app/cli_tieout.py)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
