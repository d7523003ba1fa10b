"""The daily tie-out over real parts: a files PSA imported by poll_psa, portal card payments at the
Stripe double, bookings through the outbox into the QuickBooks Online fake. Three discrepancies are
planted (a cheque recorded in the PSA only, a credit given in QuickBooks only, a charge made in the
Stripe dashboard) and the report lists exactly those three, each with its cause."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import stripe

from app.cli_tieout import render
from app.core.accounting_tokens import StoreVault, TokenCipher
from app.core.clock import FrozenClock
from app.jobs import drain_outbox, poll_psa, tie_out
from app.services import Services, build_services
from app.web import create_app
from tests.conftest import make_config
from tests.e2e.accounting_world import card, invoice_token, pay
from tests.fakes.qbo import QboFake
from tests.web.admin.helpers import make_admin, post, sign_in

INVOICES = [  # number, company id, company, total, paid at the PSA
    ("INV-1", "250", "Contoso Dental LLC", "100.00", "0"),
    ("INV-2", "250", "Contoso Dental LLC", "120.00", "0"),
    ("INV-3", "250", "Contoso Dental LLC", "80.00", "0"),
    ("INV-4", "260", "Fabrikam Logistics", "50.00", "0"),
]


def _export(folder, paid: dict[str, str]) -> None:
    """The PSA's export, as the MSP's PSA writes it (rename into place)."""
    folder.mkdir(exist_ok=True)
    rows = [
        [
            "invoice_number",
            "company_id",
            "company_name",
            "invoice_date",
            "due_date",
            "currency",
            "line_description",
            "line_amount",
            "amount_paid",
        ]
    ]
    rows += [
        [n, cid, name, "2026-11-01", "2026-12-01", "USD", "Managed services", total, paid.get(n, p)]
        for n, cid, name, total, p in INVOICES
    ]
    for name, table in (
        ("invoices.csv", rows),
        (
            "contacts.csv",
            [
                ["company_id", "email", "first_name", "last_name", "billing"],
                ["250", "ap@contoso.example", "Dana", "Reyes", "yes"],
                ["260", "ap@fabrikam.example", "Lee", "Park", "yes"],
            ],
        ),
    ):
        tmp = folder / f".{name}.tmp"
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(table)
        tmp.replace(folder / name)


@pytest.fixture
def qbo():
    with QboFake() as fake:
        customers = {name: fake.add_customer(name) for name in {i[2] for i in INVOICES}}
        for number, _, name, total, _ in INVOICES:
            fake.add_invoice(number, customers[name], total)
        yield fake


@pytest.fixture
def stripe_double():
    """A double of its own with the tests' extension (Stripe's `created` filter on PaymentIntents):
    the shared one holds other tests' charges, which would be "in Stripe only" here."""
    from app.demo.stripe_double import StripeDouble

    double = StripeDouble(extensions=("tests.stripe_ext",)).start()
    yield double
    double.stop()


@pytest.fixture
def clock() -> FrozenClock:
    # Now: the Stripe double stamps objects with the real time, and the period must hold them.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def svc(tmp_path, clock, stripe_double, mail, qbo) -> Services:
    extra = f"""
[accounting]
kind = "quickbooks"

[accounting.quickbooks]
client_id = "{qbo.client_id}"
client_secret = "{qbo.client_secret}"
api_base = "{qbo.api_base}"
token_url = "{qbo.token_url}"
bank_account = "Checking"
timeout_seconds = 5
"""
    cfg = make_config(tmp_path, stripe_base=stripe_double.api_base, smtp_port=mail.port, extra=extra)
    _export(tmp_path / "psa-export", {})
    s = build_services(cfg, clock=clock)
    StoreVault(s.store, s.clock, TokenCipher(s.config), entity_id=s.entity_id, kind="quickbooks").save(
        qbo.issue_tokens(clock.utc_now() + timedelta(hours=1))
    )
    assert poll_psa.run(s).error is None
    assert s.store.scalar("SELECT COUNT(*) FROM invoices") == 4
    return s


def _client(svc: Services, remote_id: str) -> int:
    return int(svc.store.scalar("SELECT id FROM clients WHERE remote_id = ?", (remote_id,)))


def _foreign_charge(double) -> str:
    """Someone charges a customer in the Stripe dashboard: Stripe has it, Cashloop never saw it."""
    client = stripe.StripeClient(double.secret_key, base_addresses={"api": double.api_base})
    pi = client.v1.payment_intents.create(
        params={
            "amount": 4321,
            "currency": "usd",
            "payment_method": card(double),
            "confirm": True,
            "payment_method_types": ["card"],
        }
    )
    assert pi.status == "succeeded"
    return str(pi.id)


def test_three_planted_discrepancies_are_listed_exactly_with_their_causes(svc, qbo, stripe_double, tmp_path):
    today = svc.clock.utc_now().astimezone(svc.config.tz).date()
    pay(svc, stripe_double, _client(svc, "250"), [(invoice_token(svc, "INV-1"), 10000)])
    pay(
        svc,
        stripe_double,
        _client(svc, "260"),
        [(invoice_token(svc, "INV-4"), 2000)],
        email="ap@fabrikam.example",
    )
    drain_outbox.run(svc)
    assert len(qbo.live(qbo.payments)) == 2
    # The MSP imported Cashloop's write-backs into the PSA (payments.out.jsonl) ...
    # ... and (1) recorded a 30.00 cheque on INV-3 there, which Cashloop has not synced yet.
    _export(tmp_path / "psa-export", {"INV-1": "100.00", "INV-4": "20.00", "INV-3": "30.00"})
    # (2) The bookkeeper gave a 20.00 credit on INV-2 in QuickBooks only.
    qbo.invoice("INV-2")["Balance"] = Decimal("100.00")
    # (3) A charge made in the Stripe dashboard.
    foreign = _foreign_charge(stripe_double)

    report = tie_out.run(svc, start=today, end=today)

    found = sorted(
        (d.topic, d.subject, tuple(sorted(d.amounts.items(), key=str))) for d in report.differences
    )
    assert found == sorted(
        [
            ("open AR", "INV-3", (("cashloop", 8000), ("psa", 5000))),
            ("open AR", "INV-2", (("accounting", 10000), ("cashloop", 12000))),
            ("payment", foreign, (("cashloop", None), ("stripe", 4321))),
        ]
    ), [d.line() for d in report.differences]
    causes = {d.subject: d.cause for d in report.differences}
    assert "recorded in the PSA since the last sync" in causes["INV-3"]
    assert "recorded only there" in causes["INV-2"]
    assert "in Stripe only" in causes[foreign]
    assert report.unavailable == {}
    # Totals per system, to the cent: open AR and the period's payments.
    assert report.totals["USD"] == {
        "cashloop": 12000 + 8000 + 3000,
        "accounting": 10000 + 8000 + 3000,
        "psa": 12000 + 5000 + 3000,
    }
    assert report.payments["USD"] == {"cashloop": 12000, "accounting": 12000, "stripe": 12000 + 4321}
    contoso = next(c for c in report.clients if c.client == "Contoso Dental LLC")
    assert contoso.open_minor == {"cashloop": 20000, "accounting": 18000, "psa": 17000}
    # The report is kept, and one exception for the day points at it.
    assert svc.store.scalar("SELECT differences FROM tieout_reports") == 3
    assert svc.store.scalar("SELECT COUNT(*) FROM exceptions WHERE kind = 'tieout'") == 1
    text = render(report)
    assert "3 difference(s):" in text and foreign in text and "INV-3" in text and "INV-2" in text


def test_a_booking_still_in_the_outbox_is_named_as_the_cause(svc, qbo, stripe_double):
    today = svc.clock.utc_now().astimezone(svc.config.tz).date()
    payment_id = pay(svc, stripe_double, _client(svc, "250"), [(invoice_token(svc, "INV-1"), 10000)])
    token = svc.store.scalar("SELECT token FROM payments WHERE id = ?", (payment_id,))
    entry = svc.store.scalar("SELECT id FROM outbox WHERE kind = 'journal_payment'")

    report = tie_out.run(svc, start=today, end=today, keep=False)

    accounting = {d.subject: d for d in report.differences if "accounting" in d.amounts}
    assert set(accounting) == {"INV-1", token}
    assert accounting[token].amounts == {"cashloop": 10000, "accounting": None}
    assert f"outbox entry #{entry} (journal_payment) still waiting" in accounting[token].cause
    assert f"has not reached the accounting system: outbox entry #{entry}" in accounting["INV-1"].cause
    assert svc.store.scalar("SELECT COUNT(*) FROM tieout_reports") == 0

    drain_outbox.run(svc)
    report = tie_out.run(svc, start=today, end=today, keep=False)
    assert [d for d in report.differences if "accounting" in d.amounts] == []


def test_the_books_unreachable_are_named_not_hidden(svc, qbo):
    qbo.revoke_refresh_tokens()
    qbo.expire_access_tokens()
    report = tie_out.run(svc, keep=False)
    assert "accounting" in report.unavailable and not report.ties_out
    assert "NOT READ accounting" in render(report)


def test_the_admin_page_shows_the_newest_report_and_runs_one(svc, qbo, stripe_double, clock):
    today = svc.clock.utc_now().astimezone(svc.config.tz).date()
    qbo.invoice("INV-2")["Balance"] = Decimal("100.00")
    tie_out.run(svc, start=today, end=today)
    admin = make_admin(svc, "finance@northwind.example", "finance")
    web = sign_in(create_app(svc).test_client(), admin, clock)
    page = web.get("/admin/tieout").get_data(as_text=True)
    assert "1 difference<" in page and "INV-2" in page and "120.00" in page and "100.00" in page
    assert page.count('class="tieout-difference"') == 1

    assert post(web, "/admin/tieout/run").status_code == 302
    assert svc.store.scalar("SELECT COUNT(*) FROM tieout_reports") == 2
    assert svc.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'tieout.run'") == 1


def test_the_tie_out_is_scheduled_once_a_local_day_at_its_time(tmp_path):
    from zoneinfo import ZoneInfo

    from apscheduler.schedulers.background import BackgroundScheduler

    from app.jobs.scheduler import Scheduler, _add_tieout

    chicago = ZoneInfo("America/Chicago")
    s = build_services(
        make_config(tmp_path, extra='\n[ops]\ntieout_time = "04:45"\n'),
        clock=FrozenClock(datetime(2026, 3, 10, 9, 0, tzinfo=chicago)),
    )
    sched = Scheduler(services=s, apscheduler=BackgroundScheduler(timezone=chicago))
    _add_tieout(sched)
    job = sched.apscheduler.get_job("tieout")
    assert str(job.trigger) == f"daily at 04:45 {s.config.cashloop.timezone}"


def test_with_two_entities_each_gets_its_own_report_over_its_own_clients(
    tmp_path, clock, stripe_double, mail
):
    from tests.e2e.entity_world import two_entity_config

    folder = tmp_path / "psa-export"
    folder.mkdir()
    rows = [
        [
            "invoice_number",
            "company_id",
            "company_name",
            "invoice_date",
            "due_date",
            "currency",
            "line_description",
            "line_amount",
            "amount_paid",
        ],
        ["US-1", "co-us", "Contoso Dental LLC", "2026-11-01", "2026-12-01", "USD", "Managed", "100.00", "0"],
        ["CA-1", "co-ca", "Maple Clinics Inc", "2026-11-01", "2026-12-01", "CAD", "Managed", "200.00", "0"],
    ]
    contacts = [
        ["company_id", "email", "first_name", "billing"],
        ["co-us", "ap@contoso.example", "Dana", "yes"],
        ["co-ca", "ap@maple.example", "Rene", "yes"],
    ]
    for name, table in (("invoices.csv", rows), ("contacts.csv", contacts)):
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(table)
    s = build_services(
        two_entity_config(tmp_path, stripe_base=stripe_double.api_base, smtp_port=mail.port), clock=clock
    )
    assert poll_psa.run(s).error is None
    ca = s.entities.ids()["ca"]
    assert s.store.scalar("SELECT entity_id FROM clients WHERE remote_id = 'co-ca'") == ca
    # A 50.00 cheque on the Canadian invoice, recorded in the PSA only.
    rows[2][-1] = "50.00"
    with (folder / "invoices.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    today = clock.utc_now().astimezone(s.config.tz).date()

    tie_out.run(s, start=today, end=today)

    kept = {
        r["entity_key"]: (r["differences"], json.loads(r["report_json"]))
        for r in s.store.all("SELECT entity_key, differences, report_json FROM tieout_reports")
    }
    assert set(kept) == {"default", "ca"}
    assert kept["default"][0] == 0 and kept["default"][1]["totals"] == {
        "USD": {"cashloop": 10000, "psa": 10000}
    }
    assert kept["ca"][0] == 1 and kept["ca"][1]["totals"] == {"CAD": {"cashloop": 20000, "psa": 15000}}
    assert [d["subject"] for d in kept["ca"][1]["differences"]] == ["CA-1"]
    assert s.store.scalar("SELECT ref FROM exceptions WHERE kind = 'tieout'") == f"ca:{today.isoformat()}"


def test_a_write_back_the_psa_has_not_recorded_yet_is_named_as_such(svc, qbo, stripe_double):
    today = svc.clock.utc_now().astimezone(svc.config.tz).date()
    pay(svc, stripe_double, _client(svc, "250"), [(invoice_token(svc, "INV-1"), 10000)])
    drain_outbox.run(svc)  # written to payments.out.jsonl; the PSA's own export still says unpaid
    entry = svc.store.scalar("SELECT id FROM outbox WHERE kind = 'psa_payment' AND status = 'done'")

    report = tie_out.run(svc, start=today, end=today, keep=False)

    [diff] = [d for d in report.differences if "psa" in d.amounts]
    assert (diff.subject, diff.amounts) == ("INV-1", {"cashloop": 0, "psa": 10000})
    assert f"Cashloop wrote its payment back to the PSA (outbox #{entry} delivered)" in diff.cause
    assert "import payments.out.jsonl" in diff.cause
