"""The date of an upcoming autopay charge is the same on every page, and it is the run that will
really make it: turned on at 10:27 in Chicago, after that day's 06:00 run, an overdue invoice is
charged tomorrow, and the confirmation, the autopay page, home, the invoice page and the admin
dashboard all say so."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.web import factories as f
from tests.web.admin.helpers import make_admin
from tests.web.admin.helpers import sign_in as admin_sign_in
from tests.web.conftest import post

CHICAGO = ZoneInfo("America/Chicago")


def _saved_card(svc, client: f.Ref) -> None:
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "is_default, created_at) VALUES (?, 'pm_card_4242', 'card', 'visa', '4242', 12, 2031, 1, "
            "'2026-03-01T00:00:00Z')",
            (client.id,),
        )


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.parametrize(
    ("local", "when", "day_long", "day_short"),
    [
        ((10, 27), "tomorrow at 6:00 AM CDT", "March 11, 2026", "Mar 11, 2026"),
        ((5, 40), "today at 6:00 AM CDT", "March 10, 2026", "Mar 10, 2026"),
    ],
)
def test_every_page_shows_the_date_of_the_run_that_makes_the_charge(
    app, svc, clock, signed_in, acme, local, when, day_long, day_short
):
    clock.set(datetime(2026, 3, 10, *local, tzinfo=CHICAGO))
    _saved_card(svc, acme)
    late = f.make_invoice(svc, acme, "INV-11812", total_minor=435_000, due_on="2026-02-18")
    f.make_invoice(svc, acme, "INV-12088", total_minor=380_350, due_on="2026-03-31")

    saved = post(
        signed_in,
        "/autopay",
        {"enabled": "on", "method": "pm_card_4242", "kinds": ["agreement"], "schedule": "due_date",
         "max_amount": "5000.00"},
        follow_redirects=True,
    )
    autopay_page = _text(saved.get_data(as_text=True))
    assert f"The first charge is $4,350.00 {when}, for INV-11812." in autopay_page
    upcoming = autopay_page.split("Upcoming charges")[1]
    assert f"{day_short} INV-11812 Visa •••• 4242 $4,350.00" in upcoming
    assert "Mar 31, 2026 INV-12088 Visa •••• 4242 $3,803.50" in upcoming

    home = _text(signed_in.get("/").get_data(as_text=True))
    assert f"Next: $4,350.00 on {day_long} with Visa •••• 4242 for INV-11812." in home

    invoice = _text(signed_in.get(f"/invoices/{late.token}").get_data(as_text=True))
    assert f"Autopay will pay $4,350.00 on {day_long} with Visa •••• 4242." in invoice

    admin = admin_sign_in(app.test_client(), make_admin(svc, "owner@northwind.example"), clock)
    dashboard = _text(admin.get("/admin/").get_data(as_text=True))
    assert f"{day_long} Acme Dental LLC INV-11812 Visa •••• 4242 $4,350.00" in dashboard
