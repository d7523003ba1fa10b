"""Hostile input to the tie-out: `cashloop tieout --from/--to` through the real command, and the
admin page's `?report=`.

A period that is no period (to before from, thousands of days, dates at the calendar's ends) must
stop with exit 2 and one line saying why, before any system is read and without keeping a report.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.core.clock import FrozenClock
from app.demo.runner import demo_config
from app.services import build_services
from app.web import create_app
from tests.web.admin.helpers import make_admin, sign_in

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_path(tmp_path, stripe_double) -> Path:
    (tmp_path / "data" / "psa-export").mkdir(parents=True)
    text = demo_config(
        data_dir=tmp_path / "data",
        port=8080,
        stripe_base=stripe_double.api_base,
        smtp_port=9,
        secret_key="test-secret-key-0123456789abcdef",
    )
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _tieout(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "tieout", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def _reports(config_path: Path) -> int:
    import sqlite3

    db = next((config_path.parent / "data").glob("*.db"), None)
    if db is None:
        return 0
    with sqlite3.connect(db) as conn:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'tieout_reports'").fetchone()
        return int(conn.execute("SELECT COUNT(*) FROM tieout_reports").fetchone()[0]) if exists else 0


def _refused(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    assert proc.stdout == "", proc.stdout[-1000:]  # no report printed
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr[-2000:])
    assert len(proc.stderr) < 2000


PERIODS = {
    # Before: accepted; the payments query over an inverted range found nothing: "No differences".
    "to before from": (("--from", "2026-12-03", "--to", "2026-12-01"), "is before --from 2026-12-03"),
    # Before: `end + timedelta(days=1)` raised OverflowError: a traceback.
    "the last day of the calendar": (("--from", "9999-12-31"), "not a date a tie-out can cover"),
    "the first day of the calendar": (("--from", "0001-01-01"), "not a date a tie-out can cover"),
    "a huge period": (("--from", "1970-01-01", "--to", "9998-12-31"), "a tie-out covers at most 366"),
    "a year and a day": (("--from", "2025-01-01", "--to", "2026-01-02"), "is 367 days"),
    "a month that does not exist": (("--from", "2026-13-01"), "not a date (YYYY-MM-DD)"),
    "february the 30th": (("--from", "2026-02-30"), "not a date (YYYY-MM-DD)"),
    "a year zero": (("--from", "0000-01-01"), "not a date (YYYY-MM-DD)"),
    "words": (("--from", "yesterday"), "not a date (YYYY-MM-DD)"),
    "an empty date": (("--to", ""), "not a date (YYYY-MM-DD)"),
    "a date with a time": (("--from", "2026-12-01T00:00"), "not a date (YYYY-MM-DD)"),
}


@pytest.mark.parametrize("case", list(PERIODS))
def test_a_period_that_is_no_period_exits_2_with_one_clear_line_and_keeps_nothing(config_path, case):
    args, why = PERIODS[case]
    proc = _tieout(config_path, *args)
    _refused(proc, why)
    assert _reports(config_path) == 0


def test_to_alone_before_yesterday_is_refused_as_before_the_default_from(config_path):
    # --from defaults to yesterday; a --to before it is the same inverted period.
    proc = _tieout(config_path, "--to", "2020-01-01")
    _refused(proc, "--to 2020-01-01 is before --from")
    assert _reports(config_path) == 0


def test_a_year_end_period_of_366_days_runs_and_keeps_its_report(config_path):
    proc = _tieout(config_path, "--from", "2024-01-01", "--to", "2024-12-31")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert proc.stdout.startswith("Tie-out 2024-01-01..2024-12-31"), proc.stdout[:500]
    assert _reports(config_path) == 1


# ---- the admin page's ?report= ----------------------------------------------------------------


@pytest.fixture
def admin_web(tmp_path):
    from tests.web.conftest import web_config

    clock = FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))
    svc = build_services(web_config(tmp_path), clock=clock)
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO tieout_reports (period_start, period_end, differences, unavailable, report_json, "
            "created_at) VALUES ('2026-12-03', '2026-12-03', 0, 0, ?, '2026-12-04T11:30:00Z')",
            (
                '{"period": ["2026-12-03", "2026-12-03"], "entity": "default", "ties_out": true, '
                '"totals": {}, "payments": {}, "differences": [], "unavailable": {}, "notes": []}',
            ),
        )
    return sign_in(create_app(svc).test_client(), make_admin(svc, "owner@northwind.example", "owner"), clock)


@pytest.mark.parametrize(
    "value, status",
    [
        ("1", 200),
        ("2", 404),
        ("0", 404),
        ("-1", 404),
        # Before: binding this to SQLite raised OverflowError: a 500.
        ("9" * 30, 404),
        (str(2**63), 404),
        ("-" + "9" * 30, 404),
        ("junk", 200),  # not a number: the newest reports, as without the parameter
        ("1e3", 200),
        ("", 200),
    ],
)
def test_a_report_parameter_is_a_report_a_404_or_ignored_never_a_500(admin_web, value, status):
    response = admin_web.get("/admin/tieout", query_string={"report": value})
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    if status == 200:
        assert "2026-12-03" in response.get_data(as_text=True)
