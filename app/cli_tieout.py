"""`cashloop tieout`: the tie-out report at a terminal (the admin's Tie-out page shows the same)."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta

from app.core.clock import local_today
from app.core.money import Money
from app.core.tieout import TieOut, to_json

MAX_PERIOD_DAYS = 366  # a year-end tie-out; longer asks Stripe and the books for years of records
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)  # Stripe's times start at 1970; +1 day fits


def _day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text[:40]!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date a tie-out can cover (1970 to 9998)")
    return day


def period_problem(start: date, end: date) -> str | None:
    """Why start..end is no period to tie out, or None."""
    if end < start:
        return f"--to {end.isoformat()} is before --from {start.isoformat()}"
    if (end - start).days + 1 > MAX_PERIOD_DAYS:
        return (f"{start.isoformat()}..{end.isoformat()} is {(end - start).days + 1} days; a tie-out "
                f"covers at most {MAX_PERIOD_DAYS} (run it once per year or month)")
    return None


def _amounts(per_system: dict[str, int], currency: str) -> str:
    return ", ".join(f"{name} {Money(minor, currency).to_decimal()}" for name, minor in per_system.items())


def render(report: TieOut) -> str:
    """The report as a person reads it: totals per currency, then every difference, one per line."""
    lines = [f"Tie-out {report.start.isoformat()}..{report.end.isoformat()}"]
    for currency, per_system in sorted(report.totals.items()):
        shown = ", ".join(
            f"{name} {Money(minor, currency).to_decimal()}" for name, minor in per_system.items()
        )
        lines.append(f"  open AR {currency}: {shown}")
    for currency, per_system in sorted(report.payments.items()):
        shown = ", ".join(
            f"{name} {Money(minor, currency).to_decimal()}" for name, minor in per_system.items()
        )
        lines.append(f"  payments {currency}: {shown}")
    for system, why in report.unavailable.items():
        lines.append(f"  NOT READ {system}: {why}")
    lines.extend(f"  note: {note}" for note in report.notes)
    if report.differences:
        lines.append(f"{len(report.differences)} difference(s):")
        lines.extend(f"  - {d.line()}" for d in report.differences)
    else:
        lines.append("No differences." if not report.unavailable else "No differences in what could be read.")
    return "\n".join(lines)


def cmd_tieout(args: argparse.Namespace) -> int:
    # Read-only towards every system, so it runs beside the service (no job lock).
    from app.cli import _config, _logging, _services
    from app.jobs import tie_out

    cfg = _config(args.config)
    _logging(cfg)
    svc = _services(cfg)
    start = args.start or local_today(svc.clock, cfg.tz) - timedelta(days=1)
    problem = period_problem(start, args.end or start)
    if problem:
        print(f"cashloop: tieout: {problem}", file=sys.stderr)
        return 2
    report = tie_out.run(svc, start=start, end=args.end or start, keep=not args.dry_run)
    print(to_json(report) if args.json else render(report))
    return 0 if report.ties_out else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "tieout",
        help="compare open AR and payments across Cashloop, the books, the PSA and "
        "Stripe; exit 1 when anything differs",
    )
    s.add_argument("--config")
    s.add_argument(
        "--from", dest="start", type=_day, help="first local date of the period (default: yesterday)"
    )
    s.add_argument("--to", dest="end", type=_day, help="last local date of the period (default: --from)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--dry-run", action="store_true", help="do not keep the report or open an exception")
    s.set_defaults(func=cmd_tieout)
