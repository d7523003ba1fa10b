"""Approvals are the payments engine's rule, not only the pages': start_payment refuses an invoice that
awaits an approver's OK whoever calls it (checkout, "pay with my saved account", a direct call), and
nothing is written and nothing reaches Stripe. Against the Stripe double with the tests' extension,
whose request log shows every POST the engine made."""

from __future__ import annotations

from datetime import date

import pytest

from app import charging, checkout
from app.core import approvals, client_overrides, payments
from app.core.money import Money
from app.core.payments import PayItem, PaymentRequestError
from app.services import build_services
from tests.autopay_world import saved_bank, saved_card
from tests.conftest import make_config
from tests.factories import make_client, make_invoice

THRESHOLD = {
    "invite_billing_contacts = false": 'invite_billing_contacts = false\napproval_threshold = "5000.00"'
}


def _services(tmp_path, frozen_clock, stripe_ext, mail):
    cfg = make_config(
        tmp_path,
        stripe_base=stripe_ext.double.api_base,
        smtp_port=mail.port,
        replace=THRESHOLD,
    )
    return build_services(cfg, clock=frozen_clock)


def _written(s) -> tuple[int, int, int]:
    return (
        s.store.scalar("SELECT COUNT(*) FROM payments"),
        s.store.scalar("SELECT COUNT(*) FROM allocations"),
        s.store.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'payment.started'"),
    )


def _intent_posts(stripe_ext) -> list[str]:
    return [r["path"] for r in stripe_ext.requests() if r["path"].startswith("/v1/payment_intents")]


def _token(s, invoice_id: int) -> str:
    return str(s.store.scalar("SELECT token FROM invoices WHERE id = ?", (invoice_id,)))


def test_start_payment_refuses_an_unapproved_invoice_and_writes_nothing(
    tmp_path, frozen_clock, stripe_ext, mail
):
    s = _services(tmp_path, frozen_clock, stripe_ext, mail)
    client_id = make_client(s)
    big = make_invoice(s, "INV-9001", total_minor=780_000)
    small = make_invoice(s, "INV-9002", total_minor=10_000)

    with pytest.raises(
        PaymentRequestError, match=r"^Invoice INV-9001 needs an approver's OK before it can be paid\.$"
    ):
        payments.start_payment(
            s.store,
            s.clock,
            client_id=client_id,
            items=[PayItem(small, 10_000), PayItem(big, 780_000)],
            initiated_by="login:ap@contoso.example",
            allow_partial=True,
            minimum_partial="1.00",
            approval_threshold="5000.00",
        )
    assert _written(s) == (0, 0, 0)

    with s.store.write() as db:
        assert approvals.approve(
            db, s.clock, invoice_id=big, client_id=client_id, approver="alex@contoso.example", role="approver"
        )
    plan = payments.start_payment(
        s.store,
        s.clock,
        client_id=client_id,
        items=[PayItem(small, 10_000), PayItem(big, 780_000)],
        initiated_by="login:ap@contoso.example",
        allow_partial=True,
        minimum_partial="1.00",
        approval_threshold="5000.00",
    )
    assert plan.amount_minor == 790_000 and _written(s) == (1, 2, 1)


def test_the_portal_checkout_and_a_saved_method_are_refused_before_stripe_is_called(
    tmp_path, frozen_clock, stripe_ext, mail
):
    s = _services(tmp_path, frozen_clock, stripe_ext, mail)
    client_id = make_client(s)
    saved_card(s, stripe_ext.double, client_id)
    bank = saved_bank(s, stripe_ext.double, client_id)
    bank_ref = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (bank,))
    big = make_invoice(s, "INV-9101", total_minor=500_001)  # one cent above the threshold
    stripe_ext.reset()

    with pytest.raises(PaymentRequestError, match="INV-9101 needs an approver's OK"):
        checkout.begin_checkout(
            s, client_id=client_id, login_email="ap@contoso.example", items=[(_token(s, big), 500_001)]
        )
    with pytest.raises(PaymentRequestError, match="INV-9101 needs an approver's OK"):
        charging.pay_with_saved_method(
            s,
            client_id=client_id,
            items=[(big, 500_001)],
            payment_method_ref=bank_ref,
            initiated_by="login:ap@contoso.example",
        )
    assert _written(s) == (0, 0, 0)
    assert _intent_posts(stripe_ext) == []  # no PaymentIntent, no SetupIntent, no customer: nothing


def test_a_client_override_threshold_binds_even_a_caller_that_names_no_threshold(
    tmp_path, frozen_clock, stripe_ext, mail
):
    s = _services(tmp_path, frozen_clock, stripe_ext, mail)
    client_id = make_client(s)
    inv = make_invoice(s, "INV-9201", total_minor=150_000, due_on=date(2026, 3, 31))
    with s.store.write() as db:
        client_overrides.set_overrides(
            db,
            s.clock,
            client_id,
            client_overrides.ClientOverrides(approval_threshold=Money(100_000, "USD")),
            actor="finance@northwind.example",
        )
    with pytest.raises(PaymentRequestError, match="INV-9201 needs an approver's OK"):
        payments.start_payment(
            s.store,
            s.clock,
            client_id=client_id,
            items=[PayItem(inv, 150_000)],
            initiated_by="test",
            allow_partial=True,
            minimum_partial="1.00",
        )
    assert _written(s) == (0, 0, 0)


def test_an_approval_is_for_the_total_the_approver_saw(tmp_path, frozen_clock, stripe_ext, mail):
    s = _services(tmp_path, frozen_clock, stripe_ext, mail)
    client_id = make_client(s)
    inv = make_invoice(s, "INV-9301", total_minor=600_000)
    with s.store.write() as db:
        approvals.approve(
            db, s.clock, invoice_id=inv, client_id=client_id, approver="alex@contoso.example", role="approver"
        )
        # The PSA raises the total after the approval: it needs approving again.
        db.execute("UPDATE invoices SET total_minor = 650000 WHERE id = ?", (inv,))
    with pytest.raises(PaymentRequestError, match="INV-9301 needs an approver's OK"):
        payments.start_payment(
            s.store,
            s.clock,
            client_id=client_id,
            items=[PayItem(inv, 1_000)],
            initiated_by="test",
            allow_partial=True,
            minimum_partial="1.00",
            approval_threshold="5000.00",
        )
    assert _written(s) == (0, 0, 0)


def test_an_autopay_attempt_on_an_unapproved_invoice_is_refused_by_the_engine(
    tmp_path, frozen_clock, stripe_ext, mail
):
    """Autopay's planner already leaves such invoices out; the attempt itself is refused too (the
    TOML threshold reaches start_payment), so a planner bug could never charge one."""
    from app.core import autopay, autopay_attempts

    s = _services(tmp_path, frozen_clock, stripe_ext, mail)
    client_id = make_client(s)
    method_id = saved_card(s, stripe_ext.double, client_id)
    ref = s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (method_id,))
    big = make_invoice(s, "INV-9301", total_minor=600_000)
    charge = autopay.PlannedCharge(
        client_id=client_id, client_name="Contoso Dental LLC",
        items=(autopay.ChargeItem(big, "INV-9301", 600_000),), currency="USD", charge_on=date(2026, 3, 10),
        method=autopay.MethodView(id=method_id, processor_ref=ref, type="card", label="Visa •••• 4242"),
    )
    started = autopay_attempts.start_attempt(
        s.store, s.clock, charge, retry_days=(1, 3), run_time="06:00", tz=s.config.tz,
        approval_threshold=s.config.portal.approval_threshold,
    )
    assert started is None
    assert _written(s) == (0, 0, 0)
    assert s.store.scalar("SELECT COUNT(*) FROM autopay_attempts") == 0
