"""The terminal progress bar of `cashloop sync` (only on a TTY; see tests/jobs/test_backfill_resume.py)."""

from __future__ import annotations

import io

from app.cli_progress import ProgressBar


def test_the_bar_shows_share_count_rate_and_time_left_when_the_total_is_known():
    bar = ProgressBar(io.StringIO())
    bar.expect("invoices", 100_000)
    assert bar.line("invoices", 25_000, 10.0) == (
        "invoices   [#######.....................]  25%     25,000/100,000  2,500/s  ETA 0m30s"
    )
    assert bar.line("invoices", 100_000, 40.0).startswith("invoices   [" + "#" * 28 + "] 100%")


def test_without_a_total_the_bar_shows_the_count_and_the_rate():
    assert ProgressBar(io.StringIO()).line("contacts", 1_234, 2.0) == "contacts        1,234 records  617/s"


def test_each_object_gets_its_own_line_and_close_ends_the_last():
    out = io.StringIO()
    ticks = iter([0.0, 1.0, 2.0, 3.0])
    bar = ProgressBar(out, clock=lambda: next(ticks))
    bar("companies", 10)
    bar("companies", 20)
    bar("invoices", 5)
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 2 and text.endswith("\n")
    assert "\rcompanies          20 records  20/s" in text and "\rinvoices            5 records" in text
