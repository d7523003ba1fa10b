"""The card surcharge: the one rounding rule, the cap, never on ACH, off for listed regions; and,
charged by autopay against localstripe, disclosed before, on the receipt, its own journal line."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from app.config import ConfigError, SurchargeSettings
from app.core import autopay
from app.core.payment_refs import payment_reference
from app.core.surcharge import region_of, surcharge_for
from app.jobs import drain_outbox, run_autopay
from tests.autopay_world import enable, engine_services, intents, journal, mails, saved_bank, saved_card
from tests.conftest import make_config
from tests.factories import balance, make_client, make_invoice

ON = SurchargeSettings(enabled=True, basis_points=300)


def _fee(
    settings: SurchargeSettings,
    amount: int,
    currency: str = "USD",
    method: str = "card",
    region: tuple[str | None, str | None] = ("US", "IL"),
) -> int:
    return surcharge_for(settings, amount_minor=amount, currency=currency, method=method, region=region)


def test_the_surcharge_is_basis_points_rounded_half_to_even_in_minor_units():
    assert _fee(ON, 10_000) == 300
    assert _fee(ON, 1_050) == 32  # 31.5 -> 32
    assert _fee(ON, 1_150) == 34  # 34.5 -> 34
    assert _fee(ON, 1) == 0
    assert _fee(SurchargeSettings(enabled=True, basis_points=275), 123_456) == 3_395  # 3395.04


def test_the_cap_the_currency_and_the_method_bound_the_surcharge():
    capped = SurchargeSettings(enabled=True, basis_points=300, cap="25.00")
    assert _fee(capped, 10_000) == 300 and _fee(capped, 1_000_000) == 2_500
    assert _fee(SurchargeSettings(enabled=True, basis_points=300, cap="100.5"), 1_000_000, "JPY") == 100
    assert _fee(ON, 18_600, "KWD") == 550  # 558 -> 550: a three-decimal amount must stay chargeable
    assert _fee(ON, 10_000, method="ach") == 0
    assert _fee(SurchargeSettings(enabled=False), 10_000) == 0


def test_listed_regions_and_unknown_addresses_are_never_surcharged():
    listed = SurchargeSettings(enabled=True, basis_points=300, excluded_regions=("US-CT", "CA", "PR"))
    assert _fee(listed, 10_000, region=("US", "CT")) == 0
    assert _fee(listed, 10_000, region=("CA", "QC")) == 0
    assert _fee(listed, 10_000, region=("PR", None)) == 0
    assert _fee(listed, 10_000, region=(None, None)) == 0  # cannot tell: do not risk it
    assert _fee(listed, 10_000, region=("US", "IL")) == 300
    assert _fee(ON, 10_000, region=(None, None)) == 300  # nothing listed: unknown is fine


def test_the_region_is_read_from_the_psa_company_record():
    assert region_of({"state": "ct", "country": {"id": 1, "identifier": "US", "name": "United States"}}) == (
        "US",
        "CT",
    )
    assert region_of({"state": "QC", "country": {"name": "Canada"}}) == ("CA", "QC")
    assert region_of({"country": "United States of America"}) == ("US", None)
    assert region_of({"addressLine1": None}) == (None, None)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("basis_points = 0", "surcharge.basis_points: must be 1-1000"),
        ("basis_points = 2500", "surcharge.basis_points: must be 1-1000"),
        ('cap = "ten"', "surcharge.cap: must be a decimal"),
        ('excluded_regions = ["Connecticut"]', "surcharge.excluded_regions: regions are ISO codes"),
    ],
)
def test_a_bad_surcharge_setting_names_its_key(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, extra=f"\n[surcharge]\nenabled = true\n{setting}\n")


def _with_address(s, client_id: int, state: str) -> None:
    raw = {"state": state, "country": {"id": 1, "identifier": "US", "name": "United States"}}
    with s.store.write() as db:
        db.execute("UPDATE clients SET raw_json = ? WHERE id = ?", (json.dumps(raw), client_id))


def test_autopay_adds_the_surcharge_discloses_it_and_books_it_on_its_own_line(
    tmp_path, frozen_clock, stripe_double, mail
):
    s = engine_services(
        tmp_path,
        frozen_clock,
        stripe_double,
        mail,
        extra=(
            '\n[surcharge]\nenabled = true\nbasis_points = 300\ncap = "50.00"\nexcluded_regions = ["US-CT"]\n'
            "\n[autopay]\nnotify_days_before = 3\n"
        ),
    )
    il = make_client(s, "il", "Lakeside Clinic", billing_email="ap@lakeside.example")
    ct = make_client(s, "ct", "Hartford Dental", billing_email="ap@hartford.example")
    _with_address(s, il, "IL")
    _with_address(s, ct, "CT")
    for client_id in (il, ct):
        enable(s, client_id, saved_card(s, stripe_double, client_id))
    a = make_invoice(s, "INV-6001", client_remote_id="il", total_minor=10_000, due_on=date(2026, 3, 12))
    b = make_invoice(s, "INV-6002", client_remote_id="ct", total_minor=10_000, due_on=date(2026, 3, 12))
    upcoming = autopay.upcoming_charges(
        s.store, s.clock, s.config.tz, il, run_time=s.config.autopay.run_time, surcharge=s.config.surcharge
    )
    assert [(c.charge_on, c.amount_minor, c.surcharge_minor) for c in upcoming] == [
        (date(2026, 3, 12), 10_300, 300)
    ]

    run_autopay.run(s)  # March 10: the notices go out
    for _ in range(2):
        drain_outbox.run(s)
    s.clock.advance(timedelta(days=2))
    run_autopay.run(s)  # March 12: the charges
    for _ in range(3):
        drain_outbox.run(s)

    [notice] = mails(mail, "Automatic payment of $103.00 on March 12, 2026")
    assert "Card surcharge: $3.00" in notice.get_body(("plain",)).get_content()
    assert len(mails(mail, "Automatic payment of $100.00 on March 12, 2026")) == 1  # Connecticut: none
    assert [pi["amount"] for pi in intents(stripe_double, invoices="INV-6001")] == [10_300]
    assert [pi["amount"] for pi in intents(stripe_double, invoices="INV-6002")] == [10_000]
    assert (balance(s, a), balance(s, b)) == (0, 0)
    receipt = next(m for m in mails(mail, "Receipt") if m["To"] == "ap@lakeside.example")
    assert (
        "Card surcharge:  $3.00 (included in the amount paid)" in receipt.get_body(("plain",)).get_content()
    )
    pay_id = s.store.scalar("SELECT p.id FROM payments p WHERE p.client_id = ?", (il,))
    entry = [
        (r["account"], r["invoice_number"], r["debit"], r["credit"])
        for r in journal(s)
        if r["payment_reference"] == payment_reference(pay_id)  # the reference on the receipt
    ]
    assert entry == [
        ("Stripe clearing", "", "103.00", ""),
        ("Accounts receivable", "INV-6001", "", "100.00"),
        ("Card surcharge income", "", "", "3.00"),
    ]


def test_a_bank_payment_is_never_surcharged(tmp_path, frozen_clock, stripe_ext, mail):
    double = stripe_ext.double
    s = engine_services(tmp_path, frozen_clock, double, mail, extra="\n[surcharge]\nenabled = true\n")
    client_id = make_client(s, "bank", "Bank Payer LLC")
    enable(s, client_id, saved_bank(s, double, client_id))
    make_invoice(s, "INV-6101", client_remote_id="bank", total_minor=10_000, due_on=date(2026, 3, 1))
    run_autopay.run(s)
    assert [pi["amount"] for pi in intents(double, invoices="INV-6101")] == [10_000]
    assert s.store.scalar("SELECT surcharge_minor FROM payments") == 0
