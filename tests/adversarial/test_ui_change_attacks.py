"""Hostile input against the latest portal/admin changes: the autopay form's grace days and
grouping, the one date of an upcoming charge (run_on), portal.paper_size, home's open figures and
pay-all button, "Pay selected" with nothing ticked carrying the list's filters, admin 2FA replays,
and the audit log's detail in words.

The portal runs over the web tests' app (tests/web/conftest.py: Chicago, frozen clock at 10:00 on
Tuesday 2026-03-10, after that day's 06:00 autopay run); config cases go through the real
`python -m app.cli check-config`.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from app.core import autopay, client_overrides
from app.core.audit import audit
from app.core.clock import FrozenClock
from app.core.money import Money
from app.jobs.daily_trigger import DailyAtLocalTime
from app.services import build_services
from app.web import create_app
from app.web.admin.audit_detail import detail_items
from tests.adversarial.test_config_attacks import _assert_one_clear_line, _base, _check_config, _write
from tests.web import factories as f
from tests.web.admin import helpers as admin_helpers
from tests.web.admin.helpers import csrf, make_admin, password_step
from tests.web.admin.helpers import post as admin_post
from tests.web.conftest import post, sign_in, web_config

CHICAGO = ZoneInfo("America/Chicago")


# The web tests' world (tests/web/conftest.py), built here: 10:00 in Chicago on 2026-03-10.
@pytest.fixture
def clock():
    return FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))


@pytest.fixture
def svc(tmp_path, clock):
    return build_services(web_config(tmp_path), clock=clock)


@pytest.fixture
def app(svc):
    return create_app(svc)


@pytest.fixture
def acme(svc):
    return f.make_client(svc, "Acme Dental LLC")


@pytest.fixture
def globex(svc):
    return f.make_client(svc, "Globex Corporation")


@pytest.fixture
def signed_in(app, svc, acme):
    f.make_person(svc, acme, "dana@acme.example")
    web = app.test_client()
    sign_in(web, "dana@acme.example")
    return web


@pytest.fixture
def as_owner(app, svc, clock):
    return admin_helpers.sign_in(app.test_client(), make_admin(svc, "owner@northwind.example"), clock)



def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _card(svc, client: f.Ref, ref: str = "pm_card_4242") -> int:
    with svc.store.write() as db:
        cur = db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
            "is_default, created_at) "
            "VALUES (?, ?, 'card', 'visa', '4242', 12, 2031, 1, '2026-03-01T00:00:00Z')",
            (client.id, ref),
        )
    return int(cur.lastrowid)


def _form(**over: object) -> dict[str, object]:
    return {"enabled": "on", "method": "pm_card_4242", "kinds": ["agreement"], "schedule": "due_date",
            "grace_days": "2", "grouping": "per_client", **over}


def _rules(svc) -> list[tuple]:
    return [tuple(r) for r in svc.store.all(
        "SELECT client_id, is_enabled, payment_method_id, grace_days, grouping, schedule, max_minor "
        "FROM autopay_rules ORDER BY client_id")]


def _field_error(html: str, error_id: str) -> str | None:
    found = re.search(rf'<p class="field-error" id="{error_id}">(.*?)</p>', html, re.S)
    return None if found is None else found.group(1)


# ---- the autopay form: grace days --------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["-1", "61", "1e3", "5.5", "2.0", "9" * 40, "9" * 5000, "0x10", "five", "5 days", "−5", "½", "inf",
     "nan"],
)
def test_a_grace_days_value_that_is_not_a_whole_number_from_0_to_60_is_refused_by_its_field(
    signed_in, svc, acme, typed
):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(grace_days=typed))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert _field_error(html, "error-grace") == "Enter 0 to 60 days."
    assert _rules(svc) == []


@pytest.mark.parametrize(("typed", "saved"), [("", 0), (" 5 ", 5), ("0", 0), ("60", 60), ("007", 7)])
def test_a_grace_days_value_a_person_would_type_is_saved_as_that_number(signed_in, svc, acme, typed, saved):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(grace_days=typed))
    assert response.status_code == 302
    assert autopay.get_rule(svc.store, acme.id).grace_days == saved


def test_grace_days_written_with_python_digit_separators_are_refused_not_read_as_ten(signed_in, svc, acme):
    # int("1_0") is 10 in Python; nobody means ten by typing "1_0".
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(grace_days="1_0"))
    assert response.status_code == 400
    assert _field_error(response.get_data(as_text=True), "error-grace") == "Enter 0 to 60 days."
    assert _rules(svc) == []


def test_grace_days_in_arabic_indic_digits_are_read_as_the_same_number(signed_in, svc, acme):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(grace_days="٥"))
    assert response.status_code == 302
    assert autopay.get_rule(svc.store, acme.id).grace_days == 5
    form = signed_in.get("/autopay").get_data(as_text=True)
    assert re.search(r'id="grace-days"[^>]*value="5"', form)


def test_a_grace_days_value_with_markup_is_shown_back_escaped(signed_in, svc, acme):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(grace_days='"><script>alert(1)</script>'))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<script>alert(1)</script>" not in html
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html


# ---- the autopay form: grouping, schedule and several wrong fields at once ---------------------------------


@pytest.mark.parametrize(
    "typed", ["weekly", "PER_CLIENT", "per_client ", "", "per_invoice\x00", "per_client'--"]
)
def test_a_grouping_that_is_not_offered_is_refused_by_its_field_and_nothing_is_saved(
    signed_in, svc, acme, typed
):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(grouping=typed))
    assert response.status_code == 400
    assert _field_error(response.get_data(as_text=True), "error-grouping") == (
        "Charge each invoice on its own, or all due invoices together."
    )
    assert _rules(svc) == []


def test_a_missing_grouping_and_grace_days_save_the_defaults(signed_in, svc, acme):
    _card(svc, acme)
    data = _form()
    del data["grouping"], data["grace_days"]
    assert post(signed_in, "/autopay", data).status_code == 302
    rule = autopay.get_rule(svc.store, acme.id)
    assert (rule.grace_days, rule.grouping) == (0, "per_invoice")


def test_a_schedule_that_is_not_offered_is_explained_beside_the_schedule_choice(signed_in, svc, acme):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(schedule="weekly"))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert _rules(svc) == []
    # The banner says "Check the fields marked below"; the schedule's message must be one of them.
    assert "Charge either on the due date or a number of days after the invoice date." in html


def test_a_wrong_maximum_and_wrong_grace_days_are_both_explained_in_one_answer(signed_in, svc, acme):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(max_amount="abc", grace_days="61", grouping="weekly"))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert _field_error(html, "error-max") == "Enter the amount as a number, such as 1250.00."
    assert _field_error(html, "error-grace") == "Enter 0 to 60 days."
    assert _field_error(html, "error-grouping") == (
        "Charge each invoice on its own, or all due invoices together."
    )


def test_a_bad_grace_days_on_an_existing_rule_changes_nothing_of_it(signed_in, svc, acme):
    method = _card(svc, acme)
    autopay.set_rule(svc.store, svc.clock, acme.id, enabled=True, payment_method_id=method, kinds=["project"],
                     grace_days=5, grouping="per_client", max_minor=12_345, actor="test")
    before = _rules(svc)
    response = post(signed_in, "/autopay", _form(grace_days="61", grouping="per_invoice", kinds=["agreement"],
                                                 max_amount="10.00", enabled=""))
    assert response.status_code == 400
    assert _rules(svc) == before


# ---- the autopay form: whose data ------------------------------------------------------------------


def test_another_companys_saved_card_cannot_be_chosen_for_autopay(signed_in, svc, acme, globex):
    _card(svc, acme)
    _card(svc, globex, "pm_globex_card")
    response = post(signed_in, "/autopay", _form(method="pm_globex_card"))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert _field_error(html, "error-method") == "That payment method is not saved for this company."
    assert _rules(svc) == []


def test_a_view_only_contact_posting_the_autopay_form_is_refused_and_nothing_is_saved(app, svc, acme):
    _card(svc, acme)
    f.make_person(svc, acme, "val@acme.example", role="viewer")
    viewer = app.test_client()
    sign_in(viewer, "val@acme.example")
    response = post(viewer, "/autopay", _form())
    assert response.status_code == 403
    assert _rules(svc) == []


def test_the_autopay_form_without_its_csrf_token_saves_nothing(signed_in, svc, acme):
    _card(svc, acme)
    response = signed_in.post("/autopay", data=_form())
    assert response.status_code == 400
    assert _rules(svc) == []


def test_a_client_id_smuggled_into_the_autopay_form_is_ignored(signed_in, svc, acme, globex):
    _card(svc, acme)
    response = post(signed_in, "/autopay", _form(client_id=str(globex.id), client=globex.token))
    assert response.status_code == 302
    assert [r[0] for r in _rules(svc)] == [acme.id]


# ---- one charge per client: the upcoming list and the run agree ---------------------------------


def test_per_client_overdue_invoices_of_different_due_dates_show_as_the_one_charge_the_run_makes(
    signed_in, svc, clock, acme
):
    # 10:00 in Chicago, after today's 06:00 run: both overdue invoices go in tomorrow's run, which
    # charges them together (one charge per client).
    _card(svc, acme)
    f.make_invoice(svc, acme, "INV-A", total_minor=10_000, due_on="2026-02-01")
    f.make_invoice(svc, acme, "INV-B", total_minor=20_000, due_on="2026-02-18")
    assert post(signed_in, "/autopay", _form(grace_days="0")).status_code == 302

    upcoming = autopay.upcoming_charges(svc.store, svc.clock, CHICAGO, acme.id, run_time="06:00")
    run_day = datetime(2026, 3, 11, 6, 0, tzinfo=CHICAGO)
    made = autopay.due_charges(svc.store.db, today=run_day.date(), now=run_day.astimezone(UTC))

    assert [[i.number for i in c.items] for c in made] == [["INV-A", "INV-B"]]  # one charge, both invoices
    assert [(c.charge_on, [i.number for i in c.items]) for c in upcoming] == [
        (date(2026, 3, 11), ["INV-A", "INV-B"])
    ]
    page = _text(signed_in.get("/autopay").get_data(as_text=True)).split("Upcoming charges")[1]
    assert "Mar 11, 2026 INV-A, INV-B Visa •••• 4242 $300.00" in page


# ---- run_on: the date of the run, around DST and midnight -----------------------------------------


def _instants(day: date, tz: ZoneInfo, step_minutes: int = 7) -> list[datetime]:
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), tzinfo=tz).astimezone(UTC)
    count = 3 * 24 * 60 // step_minutes
    return [start + timedelta(minutes=step_minutes * n, seconds=13) for n in range(count)]


@pytest.mark.parametrize(
    ("zone", "day", "run_time"),
    [
        ("America/Chicago", date(2026, 3, 8), "02:30"),  # spring forward: 02:30 does not exist
        ("America/Chicago", date(2026, 11, 1), "01:30"),  # fall back: 01:30 happens twice
        ("America/Chicago", date(2026, 3, 8), "00:00"),
        ("America/Chicago", date(2026, 3, 8), "23:59"),
        ("Pacific/Chatham", date(2026, 9, 27), "02:45"),  # +12:45 -> +13:45 at 02:45
        ("Pacific/Chatham", date(2026, 4, 5), "02:45"),  # back at 03:45 -> 02:45
        ("Asia/Kathmandu", date(2026, 3, 10), "00:00"),
        ("Asia/Kathmandu", date(2026, 3, 10), "05:45"),
        ("Australia/Lord_Howe", date(2026, 10, 4), "02:15"),  # a half-hour DST gap
        ("America/Santiago", date(2026, 9, 6), "00:00"),  # midnight itself is skipped
    ],
)
def test_run_on_names_the_local_date_of_the_run_the_scheduler_fires_next(zone, day, run_time):
    tz = ZoneInfo(zone)
    trigger = DailyAtLocalTime(run_time, tz)
    for now in _instants(day, tz):
        fires = trigger.get_next_fire_time(None, now)
        assert fires is not None
        expected = fires.astimezone(tz).date()
        overdue = date(2000, 1, 1)
        assert autopay.run_on(overdue, now=now, run_time=run_time, tz=tz) == expected, (zone, now, fires)
        assert autopay.run_on(expected + timedelta(days=3), now=now, run_time=run_time, tz=tz) == (
            expected + timedelta(days=3)
        )


def test_the_first_charge_message_on_the_spring_forward_night_names_the_time_the_run_really_happens(
    tmp_path, acme
):
    # run_time 02:30 does not exist on 2026-03-08 in Chicago; the run fires at 03:30 CDT.
    clock = FrozenClock(datetime(2026, 3, 8, 1, 15, tzinfo=CHICAGO))
    (tmp_path / "dst").mkdir()
    s = build_services(web_config(tmp_path / "dst", extra="[autopay]\nrun_time = \"02:30\"\n"), clock=clock)
    acme = f.make_client(s, "Acme Dental LLC")
    f.make_person(s, acme, "dana@acme.example")
    _card(s, acme)
    f.make_invoice(s, acme, "INV-LATE", total_minor=10_000, due_on="2026-03-01")
    web = create_app(s).test_client()
    sign_in(web, "dana@acme.example")
    fired = DailyAtLocalTime("02:30", CHICAGO).get_next_fire_time(None, clock.utc_now())
    assert f"{fired.astimezone(CHICAGO):%H:%M}" == "03:30"

    page = _text(post(web, "/autopay", _form(grace_days="0"), follow_redirects=True).get_data(as_text=True))
    assert "The first charge is $100.00 today at 3:30 AM CDT, for INV-LATE." in page


# ---- "Pay selected" with nothing ticked: hostile filters carried through ---------------------------


def _back(response) -> tuple[str, dict[str, list[str]]]:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert parts.netloc in ("", "portal.test"), location
    assert "\r" not in location and "\n" not in location
    return parts.path, parse_qs(parts.query)


@pytest.mark.parametrize(
    ("args", "path", "query"),
    [
        ({"next": "//evil.example/", "q": "x"}, "/invoices", {"q": ["x"]}),
        ({"next": "https://evil.example/phish"}, "/invoices", {}),
        ({"q": "a&status=paid#frag"}, "/invoices", {"q": ["a&status=paid#frag"]}),
        ({"q": "x" * 10_000}, "/invoices", {"q": ["x" * 100]}),
        ({"q": "Müller 💥 ٥"}, "/invoices", {"q": ["Müller 💥 ٥"]}),
        ({"q": "a\r\nSet-Cookie: x=1"}, "/invoices", {"q": ["a\r\nSet-Cookie: x=1"]}),
        ({"status": "<script>", "kind": "credit_memo'--", "sort": "id; DROP TABLE invoices",
          "dir": "sideways"}, "/invoices", {}),
        ({"due_from": "2026-02-30", "due_to": "not a date"}, "/invoices", {}),
        ({"due_from": "9999-12-31", "due_to": "0001-01-01"}, "/invoices",
         {"due_from": ["0001-01-01"], "due_to": ["9999-12-31"]}),
        ({"from": "home", "q": "x", "next": "//evil.example"}, "/", {}),
        ({"from": "HOME"}, "/invoices", {}),
        ({"company": "https://evil.example"}, "/invoices", {"company": ["https://evil.example"]}),
    ],
)
def test_pay_selected_with_nothing_ticked_goes_back_to_our_own_list_whatever_the_filters_say(
    signed_in, svc, acme, args, path, query
):
    f.make_invoice(svc, acme, "INV-1")
    response = signed_in.get("/pay", query_string=args)
    got_path, got_query = _back(response)
    assert (got_path, got_query) == (path, query)
    landed = signed_in.get(response.headers["Location"])
    assert landed.status_code == 200
    assert "Tick at least one invoice to pay." in landed.get_data(as_text=True)


@pytest.mark.parametrize("page", ["-5", "0", "9" * 30, "٣", "1e9", "9" * 5000])
def test_pay_selected_with_a_hostile_page_number_lands_on_a_list_that_renders(signed_in, svc, acme, page):
    f.make_invoice(svc, acme, "INV-1")
    response = signed_in.get("/pay", query_string={"page": page})
    assert response.status_code == 302
    landed = signed_in.get(response.headers["Location"])
    assert landed.status_code == 200
    assert "Tick at least one invoice to pay." in landed.get_data(as_text=True)


def test_pay_selected_with_another_companys_invoice_ticked_is_a_404_and_not_a_trip_back(
    signed_in, svc, acme, globex
):
    theirs = f.make_invoice(svc, globex, "GLX-1")
    response = signed_in.get("/pay", query_string={"invoice": theirs.token, "q": "x"})
    assert response.status_code == 404


def test_a_view_only_contact_pressing_pay_selected_is_refused_before_any_redirect(app, svc, acme):
    f.make_person(svc, acme, "val@acme.example", role="viewer")
    viewer = app.test_client()
    sign_in(viewer, "val@acme.example")
    assert viewer.get("/pay", query_string={"q": "x"}).status_code == 403


# ---- home: open figures and the pay-all button -------------------------------------------------------


def test_the_pay_all_button_names_only_what_the_pay_page_will_take(tmp_path, clock):
    # Project invoices are not paid online at this MSP (portal.methods.project = []).
    (tmp_path / "m").mkdir()
    s = build_services(web_config(tmp_path / "m", extra="[portal.methods]\nproject = []\n"), clock=clock)
    acme = f.make_client(s, "Acme Dental LLC")
    f.make_person(s, acme, "dana@acme.example")
    f.make_invoice(s, acme, "INV-AGR", total_minor=10_000, kind="agreement", due_on="2026-03-01")
    f.make_invoice(s, acme, "INV-PRJ", total_minor=50_000, kind="project", due_on="2026-03-01")
    web = create_app(s).test_client()
    sign_in(web, "dana@acme.example")

    home = web.get("/").get_data(as_text=True)
    button = re.search(r'<a class="button" href="([^"]+)"\s+id="pay-all-due">(.*?)</a>', home, re.S)
    assert button, "no pay-all button"
    pay = web.get(button.group(1).replace("&amp;", "&"))
    assert pay.status_code == 200, _text(pay.get_data(as_text=True))[:600]
    total = re.search(r'id="pay-total"[^>]*>(.*?)<', pay.get_data(as_text=True)).group(1)
    assert _text(button.group(2)) == f"Pay all open invoices: {total}"


def test_home_figures_count_only_the_signed_in_companys_invoices(signed_in, svc, acme, globex):
    f.make_invoice(svc, acme, "INV-A", total_minor=10_000, due_on="2026-03-10")
    f.make_invoice(svc, globex, "GLX-1", total_minor=99_999, due_on="2026-03-01")
    home = signed_in.get("/").get_data(as_text=True)
    assert re.search(r'id="open-total-USD">\$100\.00<', home)
    assert re.search(r'id="due-today-USD">\$100\.00<', home)
    assert "overdue-USD" in home and "$999.99" not in home


@pytest.mark.parametrize(
    ("local", "split_id", "amount"),
    [((23, 59), "due-today-USD", "$100.00"), ((0, 1), "overdue-USD", "$100.00")],
)
def test_home_splits_by_the_msps_calendar_day_not_utcs(signed_in, svc, clock, acme, local, split_id, amount):
    # 23:59 on March 10 in Chicago is already March 11 in UTC; 00:01 on March 11 is still the 11th.
    day = 10 if local[0] == 23 else 11
    clock.set(datetime(2026, 3, day, *local, tzinfo=CHICAGO))
    f.make_invoice(svc, acme, "INV-A", total_minor=10_000, due_on="2026-03-10")
    home = signed_in.get("/").get_data(as_text=True)
    assert re.search(rf'id="{split_id}">{re.escape(amount)}<', home)


def test_a_view_only_contact_sees_the_open_figures_but_no_pay_all_button(app, svc, acme):
    f.make_invoice(svc, acme, "INV-A", total_minor=10_000, due_on="2026-03-01")
    f.make_person(svc, acme, "val@acme.example", role="viewer")
    viewer = app.test_client()
    sign_in(viewer, "val@acme.example")
    home = viewer.get("/").get_data(as_text=True)
    assert re.search(r'id="open-total-USD">\$100\.00<', home)
    assert 'id="pay-all-due"' not in home


# ---- admin 2FA: replays, windows, races and odd digits -----------------------------------------------


@pytest.mark.parametrize("digits", ["٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "०१२३४५६७८९"])
def test_the_right_code_in_non_ascii_digits_is_refused_as_a_wrong_code_not_a_crash(app, svc, clock, digits):
    admin = make_admin(svc, "owner@northwind.example")
    client = app.test_client()
    password_step(client, admin)
    code = admin.code(clock).translate(str.maketrans("0123456789", digits))
    response = admin_post(client, "/admin/code", {"code": code})
    assert response.status_code == 401
    assert "That code is not right. 4 more wrong codes" in response.get_data(as_text=True)


def test_the_previous_windows_code_after_the_current_one_signed_in_is_refused_and_not_counted(
    app, svc, clock
):
    admin = make_admin(svc, "owner@northwind.example")
    first = app.test_client()
    password_step(first, admin)
    assert admin_post(first, "/admin/code", {"code": admin.code(clock)}).status_code == 302
    other = app.test_client()
    password_step(other, admin)
    earlier = admin.code(clock, offset_steps=-1)
    response = admin_post(other, "/admin/code", {"code": earlier})
    assert response.status_code == 401
    assert svc.store.scalar("SELECT failed_codes FROM admin_users WHERE id = ?", (admin.id,)) == 0


def test_a_replay_does_not_clear_the_wrong_codes_counted_before_it(app, svc, clock):
    admin = make_admin(svc, "owner@northwind.example")
    app.test_client()
    first = app.test_client()
    password_step(first, admin)
    assert admin_post(first, "/admin/code", {"code": admin.code(clock)}).status_code == 302
    attacker = app.test_client()
    password_step(attacker, admin)
    for _ in range(4):
        admin_post(attacker, "/admin/code", {"code": "000000"})
    admin_post(attacker, "/admin/code", {"code": admin.code(clock)})  # the replay
    locked = admin_post(attacker, "/admin/code", {"code": "000001"})
    assert locked.status_code == 429
    assert svc.store.scalar("SELECT locked_until FROM admin_users WHERE id = ?", (admin.id,)) is not None


def test_the_same_fresh_code_sent_from_two_sessions_at_once_signs_in_only_one(app, svc, clock):
    admin = make_admin(svc, "owner@northwind.example")
    clients = [app.test_client() for _ in range(6)]
    for c in clients:
        password_step(c, admin)
    code = admin.code(clock)
    tokens = [csrf(c) for c in clients]
    barrier = threading.Barrier(len(clients))
    results: list[int] = []

    def send(c, token):
        barrier.wait()
        results.append(c.post("/admin/code", data={"code": code, "csrf_token": token}).status_code)

    threads = [threading.Thread(target=send, args=(c, t)) for c, t in zip(clients, tokens, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [302] + [401] * 5
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'admin.signed_in'") == 1
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'admin.code_reused'") == 5


def test_a_spent_code_replayed_without_end_is_throttled_at_some_point(app, svc, clock):
    # Replays are not counted toward the lockout and /admin/code has no rate limit of its own, so
    # someone holding the password can write audit rows without bound.
    admin = make_admin(svc, "owner@northwind.example")
    first = app.test_client()
    password_step(first, admin)
    code = admin.code(clock)
    assert admin_post(first, "/admin/code", {"code": code}).status_code == 302
    attacker = app.test_client()
    password_step(attacker, admin)
    statuses = [admin_post(attacker, "/admin/code", {"code": code}).status_code for _ in range(60)]
    assert 429 in statuses, "60 replays in a row, none throttled"
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'admin.code_reused'") < 60


# ---- the audit log's detail ------------------------------------------------------------------------------


def _pairs(page: str, audit_id: int) -> list[tuple[str, str]]:
    found = re.search(rf'<dl class="audit-detail" id="audit-detail-{audit_id}">(.*?)</dl>', page, re.S)
    assert found, audit_id
    return re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", found.group(1), re.S)


def _audit(svc, action: str, detail: object, target: str = "x") -> int:
    with svc.store.write() as db:
        audit(db, svc.clock, actor="test", action=action, target=target, detail=detail)
    return int(svc.store.scalar("SELECT id FROM audit_log WHERE action = ?", (action,)))


def _raw_audit(svc, action: str, detail_json: str) -> int:
    with svc.store.write() as db:
        cur = db.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail_json) VALUES (?, 'test', ?, 'x', ?)",
            ("2026-03-10T15:00:00.000000Z", action, detail_json),
        )
    return int(cur.lastrowid)


def test_markup_in_audit_detail_keys_and_values_is_escaped(svc, as_owner):
    audit_id = _audit(svc, "t.markup", {"<b>note</b>": "<script>alert(1)</script>",
                                        "currency": "<img src=x onerror=alert(2)>", "fee_minor": 5})
    page = as_owner.get("/admin/audit").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "<b>note" not in page
    assert _pairs(page, audit_id) == [
        ("&lt;b&gt;note&lt;/b&gt;", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("fee", "5 &lt;img src=x onerror=alert(2)&gt; (minor units)"),
    ]


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"amount_minor": 10**30, "currency": "USD"}, [("amount", f"{10**30} USD (minor units)")]),
        ({"amount_minor": 2**63, "currency": "JPY"}, [("amount", f"{2**63} JPY (minor units)")]),
        ({"amount_minor": -2_500, "currency": "usd"}, [("amount", "-$25.00")]),
        ({"amount_minor": 10_000, "currency": "XYZ"}, [("amount", "10000 XYZ (minor units)")]),
        ({"amount_minor": 10_000, "currency": 5}, [("amount", "$100.00")]),
        ({"amount_minor": True}, [("amount", "yes")]),
        ({"amount_minor": None}, [("amount", "—")]),
        ({"invoices": {}}, [("invoices", "none")]),
    ],
)
def test_odd_audit_amounts_read_plainly(detail, expected):
    assert detail_items(json.dumps(detail), "USD") == expected


@pytest.mark.parametrize(
    "detail_json",
    ['{"amount_minor": "10000"}', '{"amount_minor": 10000.0}', '{"amount_minor": 100.5}'],
)
def test_an_amount_in_minor_units_that_is_not_an_integer_is_not_shown_as_a_bare_number_called_amount(
    detail_json,
):
    # "amount: 10000" reads as ten thousand dollars; the stored value is minor units (or not money at all).
    [(label, text)] = detail_items(detail_json, "USD")
    assert not (label == "amount" and re.fullmatch(r"[\d.]+", text)), (label, text)


def test_an_allocations_map_with_one_non_integer_amount_still_says_its_amounts_are_minor_units():
    items = dict(detail_items('{"allocations": {"INV-1": 30000, "INV-2": "x"}}', "USD"))
    assert items["allocations"] != "INV-1: 30000; INV-2: x"


@pytest.mark.parametrize(
    ("detail_json", "expected"),
    [
        ("{", [("detail", "{")]),
        ("[1, 2]", [("detail", "1, 2")]),
        ("null", [("detail", "—")]),
        ('"just text"', [("detail", "just text")]),
        ('{"a": {"b": {"c": [1, {"d": null}]}}}', [("a", "b: c: 1, d: —")]),
        ('{"amount_minor": NaN}', [("amount", "nan")]),
        ('{"n": ' + "9" * 5000 + "}", [("detail", '{"n": ' + "9" * 5000 + "}")]),
    ],
)
def test_audit_detail_that_is_not_a_plain_object_reads_as_text(detail_json, expected):
    assert detail_items(detail_json, "USD") == expected


def test_odd_audit_rows_do_not_break_the_audit_page(svc, as_owner):
    for n, text in enumerate(["{", "[]", "null", '{"amount_minor": NaN}', '{"x": ' + "9" * 5000 + "}",
                              '{"allocations": {"INV-1": 1e400}}', '{"note": "\\u00e9\\u0000"}']):
        _raw_audit(svc, f"t.odd{n}", text)
    response = as_owner.get("/admin/audit")
    assert response.status_code == 200


def test_a_lone_surrogate_escaped_in_stored_audit_json_does_not_break_the_audit_page(svc, as_owner):
    # json.dumps (ensure_ascii) stores "\\ud800" as six ASCII characters; the page used to show the
    # JSON as stored, and now decodes it into a string that cannot be encoded as UTF-8.
    with svc.store.write() as db:
        audit(db, svc.clock, actor="test", action="t.surrogate", target="x", detail={"note": "\ud800"})
    response = as_owner.get("/admin/audit")
    assert response.status_code == 200


def test_a_changed_approval_threshold_reads_as_money_in_the_audit_log(svc, as_owner, acme):
    with svc.store.write() as db:
        client_overrides.set_overrides(
            db, svc.clock, acme.id,
            client_overrides.ClientOverrides(approval_threshold=Money(500_000, "USD")),
            actor="admin:owner@northwind.example",
        )
    audit_id = int(svc.store.scalar("SELECT id FROM audit_log WHERE action = 'client.overrides_changed'"))
    page = as_owner.get("/admin/audit").get_data(as_text=True)
    [(label, text)] = _pairs(page, audit_id)
    assert label == "changed"
    assert "$5,000.00" in text and "500000" not in text, text


# ---- portal.paper_size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [('"A4"', "'A4'"), ('"Letter"', "'Letter'"), ('""', "''"), ("4", "4"), ('["a4"]', "['a4']"),
     ('" a4"', "' a4'"), ('"legal"', "'legal'"), ("true", "True"), ('{ size = "a4" }', "{'size': 'a4'}")],
)
def test_a_paper_size_that_is_not_letter_or_a4_exits_2_naming_the_key(tmp_path, value, shown):
    base = _base(tmp_path)
    text = (base.replace("[portal]\n", f"[portal]\npaper_size = {value}\n", 1) if "[portal]\n" in base
            else base + f"\n[portal]\npaper_size = {value}\n")
    path = _write(tmp_path, text)
    _assert_one_clear_line(_check_config(path), path, "portal.paper_size", "letter, a4", f"got {shown}")
