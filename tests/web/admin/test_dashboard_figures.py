"""The dashboard's figures against values computed by hand (tests/web/admin/helpers.py explains each)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from app.core import reports
from app.core.clock import local_today
from tests.web.admin.helpers import seed_finance_world

TODAY = date(2026, 3, 10)


def test_aging_puts_each_balance_in_its_bucket_by_days_past_due_in_chicago(svc):
    seed_finance_world(svc)
    (usd,) = [a for a in reports.aging(svc.store, TODAY) if a.currency == "USD"]
    assert usd.buckets == {
        "current": 130_000,
        "1-30": 200_000,
        "31-60": 175_000,
        "61-90": 340_000,
        "90+": 99_999,
    }
    assert usd.counts == {"current": 2, "1-30": 1, "31-60": 2, "61-90": 2, "90+": 1}
    assert usd.total_minor == 944_999 and usd.overdue_minor == 814_999
    (cad,) = [a for a in reports.aging(svc.store, TODAY) if a.currency == "CAD"]
    assert cad.buckets["1-30"] == 25_000 and cad.total_minor == 25_000


def test_the_bucket_edges_are_0_30_60_and_90_days():
    assert [reports.bucket_of(d) for d in (-5, 0, 1, 30, 31, 60, 61, 90, 91, 400)] == [
        "current",
        "current",
        "1-30",
        "1-30",
        "31-60",
        "31-60",
        "61-90",
        "61-90",
        "90+",
        "90+",
    ]


def test_an_invoice_due_today_is_current_until_midnight_in_chicago_not_utc(svc, clock):
    seed_finance_world(svc)
    clock.set(datetime(2026, 3, 11, 4, 59, tzinfo=UTC))  # 23:59 CDT on March 10, already the 11th in UTC
    day = local_today(clock, svc.config.tz)
    (usd,) = [a for a in reports.aging(svc.store, day) if a.currency == "USD"]
    assert day == TODAY and usd.buckets["current"] == 130_000


def test_dso_is_open_ar_times_90_days_over_what_was_invoiced_in_them(svc):
    seed_finance_world(svc)
    by = {d.currency: d for d in reports.dso(svc.store, TODAY, 90)}
    assert (by["USD"].ar_minor, by["USD"].invoiced_minor, by["USD"].days) == (944_999, 510_000, 167)
    assert by["CAD"].days == 90


def test_dso_is_none_when_nothing_was_invoiced_in_the_period(svc):
    seed_finance_world(svc)
    (usd,) = [d for d in reports.dso(svc.store, date(2027, 3, 10), 90) if d.currency == "USD"]
    assert usd.invoiced_minor == 0 and usd.days is None


def test_collected_counts_a_payment_in_the_local_month_it_succeeded(svc):
    seed_finance_world(svc)
    (usd,) = reports.collected(svc.store, TODAY, svc.config.tz)
    # 05:30Z on March 1 is 23:30 on February 28 in Chicago: it belongs to February.
    assert (usd.currency, usd.this_month_minor, usd.last_month_minor) == ("USD", 25_000, 80_000)


def test_autopay_adoption_counts_clients_with_an_enabled_rule_and_their_share_of_invoicing(svc):
    seed_finance_world(svc)
    a = reports.adoption(svc.store, TODAY)
    assert a.is_set_up and (a.clients_on_autopay, a.clients_invoiced, a.clients_permille) == (2, 5, 400)
    shares = {s.currency: (s.autopay_minor, s.invoiced_minor, s.permille) for s in a.shares}
    assert shares == {"USD": (554_999, 1_069_999, 519), "CAD": (0, 25_000, 0)}


def test_permille_rounds_half_to_even():
    assert [reports.permille(p, 2000) for p in (1, 3, 5)] == [0, 2, 2]  # 0.5, 1.5, 2.5 tenths
    assert reports.permille(1, 0) is None


def _text(page: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', page, re.S)
    assert found, element_id
    return " ".join(found.group(1).split())


def test_the_dashboard_page_shows_the_hand_computed_figures(svc, as_owner):
    seed_finance_world(svc)
    page = as_owner.get("/admin/").get_data(as_text=True)
    expected = {
        "ar-total-USD": "$9,449.99",
        "ar-overdue-USD": "$8,149.99",
        "aging-USD-current": "$1,300.00",
        "aging-USD-1-30": "$2,000.00",
        "aging-USD-31-60": "$1,750.00",
        "aging-USD-61-90": "$3,400.00",
        "aging-USD-90+": "$999.99",
        "aging-CAD-1-30": "CA$250.00",
        "dso-USD": "167 days",
        "dso-CAD": "90 days",
        "collected-this-USD": "$250.00",
        "collected-last-USD": "$800.00",
        "adoption-clients": "2 of 5 (40.0%)",
        "adoption-share-USD": "51.9%",
        "failed-count": "1",
    }
    assert {k: _text(page, k) for k in expected} == expected
    assert 'class="chart" id="aging-chart-USD"' in page and "<script" not in page


def test_the_dashboard_says_autopay_is_not_set_up_without_its_table(svc, as_owner):
    with svc.store.write() as db:
        db.execute("DROP TABLE IF EXISTS autopay_attempts")
        db.execute("DROP TABLE autopay_rules")
    assert reports.adoption(svc.store, TODAY) == reports.Adoption(is_set_up=False)
    assert reports.upcoming_autopay(svc.store, svc.clock, svc.config.tz, run_time="06:00") is None
    assert "Autopay not set up." in as_owner.get("/admin/").get_data(as_text=True)
