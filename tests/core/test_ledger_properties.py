"""Property test of the ledger: random invoices, payments (with card surcharges), refunds, refunds
made at Stripe, and disputes won, lost or left open, applied through the real core functions on a
real SQLite file. After every step:

- no invoice balance is below zero unless an "overpayment" exception (a credit) says so, and no
  refund or dispute reopens an invoice by more than the payment had applied to it;
- every payment's allocations of kind "payment" plus its surcharge sum to its amount;
- the money ties out: what succeeded payments still hold (amount - refunds - disputed, won back
  when won) equals their net allocations plus the surcharge not given back;
- the books and the PSA agree with the ledger: the outbox's journal entries net to the same
  money per payment, and its PSA write-backs net to each invoice's net allocations.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core import disputes, payments, refunds
from app.core.clock import FrozenClock
from app.core.payments import PayItem
from app.services import build_services
from tests.conftest import make_config
from tests.factories import make_client, make_invoice

STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "processing")


def _services(folder: Path):
    return build_services(make_config(folder), clock=FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC)))


def _pay(s, data, invoices) -> None:
    open_ = [(i, b) for i, b in _balances(s, invoices).items() if b > 0]
    if not open_:
        return
    chosen = data.draw(st.lists(st.sampled_from(open_), min_size=1, max_size=3, unique=True))
    items = [PayItem(i, data.draw(st.integers(1, b))) for i, b in chosen]
    surcharge = data.draw(st.sampled_from([0, 0, 1, 299, 5_000]))
    try:
        plan = payments.start_payment(
            s.store,
            s.clock,
            client_id=1,
            items=items,
            initiated_by="test",
            allow_partial=True,
            minimum_partial="0",
            surcharge_minor=surcharge,
        )
    except payments.PaymentRequestError:
        return  # an in-flight payment holds the invoice: refused, nothing written (checked below)
    status = data.draw(st.sampled_from(STATUSES))
    payments.claim_for_submission(s.store, s.clock, plan.payment_id)
    payments.record_intent(
        s.store,
        s.clock,
        payment_id=plan.payment_id,
        intent_id=f"pi_{plan.payment_id}",
        processor_status=status,
        amount_minor=plan.amount_minor,
        currency="USD",
        base_url="http://x",
        timezone=s.config.tz,
        charge_ref=f"ch_{plan.payment_id}",
    )
    if status == "processing" and data.draw(st.booleans()):
        payments.record_intent(
            s.store,
            s.clock,
            payment_id=plan.payment_id,
            intent_id=f"pi_{plan.payment_id}",
            processor_status=data.draw(st.sampled_from(["succeeded", "requires_payment_method"])),
            amount_minor=plan.amount_minor,
            currency="USD",
            base_url="http://x",
            timezone=s.config.tz,
        )


def _succeeded(s) -> list:
    return s.store.all("SELECT * FROM payments WHERE status = 'succeeded' ORDER BY id")


def _refund(s, data, *, at_stripe: bool) -> None:
    candidates = [p for p in _succeeded(s) if refunds.refundable_minor(s.store.db, p) > 0]
    if not candidates:
        return
    pay = data.draw(st.sampled_from(candidates))
    amount = data.draw(st.integers(1, refunds.refundable_minor(s.store.db, pay)))
    if at_stripe:
        ref = f"re_x{data.draw(st.integers(0, 10**9))}"
        refunds.record_external_refund(
            s.store,
            s.clock,
            payment_id=pay["id"],
            processor_ref=ref,
            amount_minor=amount,
            timezone=s.config.tz,
        )
        return
    try:
        plan = refunds.start_refund(
            s.store, s.clock, payment_token=pay["token"], amount_minor=amount, actor="t"
        )
    except refunds.RefundError:
        return  # disputed: refused
    refunds.claim_refund(s.store, s.clock, plan.refund_id)
    refunds.record_refund(
        s.store,
        s.clock,
        plan.refund_id,
        processor_ref=f"re_{plan.refund_id}",
        processor_status="succeeded",
        timezone=s.config.tz,
    )


def _dispute(s, data) -> None:
    pays = _succeeded(s)
    if not pays:
        return
    pay = data.draw(st.sampled_from(pays))
    ref = f"dp_{pay['id']}"
    amount = data.draw(st.integers(1, pay["amount_minor"]))
    for status in data.draw(
        st.sampled_from(
            [
                ["needs_response"],
                ["needs_response", "won"],
                ["needs_response", "lost"],
                ["warning_needs_response"],
                ["won"],
            ]
        )
    ):
        disputes.apply_dispute(
            s.store,
            s.clock,
            payment_id=pay["id"],
            dispute_id=ref,
            charge_id=f"ch_{pay['id']}",
            amount_minor=amount,
            currency="USD",
            status=status,
            reason="general",
            timezone=s.config.tz,
        )


def _balances(s, invoices) -> dict[int, int]:
    return {
        i: s.store.scalar("SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (i,))
        for i in invoices
    }


def _check(s, invoices) -> None:
    db = s.store.db
    credits = {r[0] for r in db.execute("SELECT ref FROM exceptions WHERE kind = 'overpayment'")}
    for inv, bal in _balances(s, invoices).items():
        assert bal >= 0 or f"invoice:{inv}" in credits, f"invoice {inv} at {bal} without a credit"
        owed = db.execute(
            "SELECT total_minor - paid_elsewhere_minor FROM invoices WHERE id = ?", (inv,)
        ).fetchone()
        assert bal <= owed[0], f"invoice {inv} reopened to {bal}, more than the {owed[0]} it owed"
    negative = db.execute(
        "SELECT payment_id, invoice_id, SUM(amount_minor) AS net FROM allocations "
        "GROUP BY payment_id, invoice_id HAVING net < 0"
    ).fetchall()
    assert negative == [], "a payment was taken back from an invoice more than it paid on it"
    journal_net: dict[int, int] = {}
    psa_net: dict[str, int] = {}
    for row in db.execute("SELECT kind, payload_json FROM outbox"):
        p = json.loads(row["payload_json"])
        if row["kind"] == "journal_payment":
            journal_net[p["payment_id"]] = journal_net.get(p["payment_id"], 0) + p["amount_minor"]
        elif row["kind"] == "journal_reversal":
            sign = 1 if p["kind"] == "dispute_won" else -1
            journal_net[p["payment_id"]] = journal_net.get(p["payment_id"], 0) + sign * p["amount_minor"]
        elif row["kind"] in ("psa_payment", "psa_reversal"):
            psa_net[p["invoice_remote_id"]] = psa_net.get(p["invoice_remote_id"], 0) + p["amount_minor"]
    for pay in db.execute("SELECT * FROM payments").fetchall():
        applied = db.execute(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM allocations WHERE payment_id = ? "
            "AND kind = 'payment'",
            (pay["id"],),
        ).fetchone()[0]
        assert applied + pay["surcharge_minor"] == pay["amount_minor"]
        if pay["status"] != "succeeded":
            assert pay["id"] not in journal_net
            continue
        refunded = db.execute(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE payment_id = ? "
            "AND status = 'succeeded'",
            (pay["id"],),
        ).fetchone()[0]
        disputed = db.execute(
            "SELECT COALESCE(SUM(withdrawn_minor), 0) FROM disputes WHERE payment_id = ? "
            "AND is_reinstated = 0",
            (pay["id"],),
        ).fetchone()[0]
        held = pay["amount_minor"] - refunded - disputed
        from app.core.reversals import retained_minor

        assert 0 <= held == retained_minor(db, pay)
        assert journal_net[pay["id"]] == held
    for inv in db.execute("SELECT i.id, i.remote_id FROM invoices i").fetchall():
        net = db.execute(
            "SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a JOIN payments p "
            "ON p.id = a.payment_id WHERE a.invoice_id = ? AND p.status = 'succeeded'",
            (inv["id"],),
        ).fetchone()[0]
        assert psa_net.get(inv["remote_id"], 0) == net


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_payments_refunds_and_disputes_keep_the_ledger_balanced(data):
    with tempfile.TemporaryDirectory() as tmp:
        s = _services(Path(tmp))
        make_client(s)
        totals = data.draw(st.lists(st.integers(1, 500_000), min_size=1, max_size=5))
        invoices = [
            make_invoice(s, f"INV-{n:04d}", total_minor=t, paid_minor=data.draw(st.integers(0, t // 2)))
            for n, t in enumerate(totals)
        ]
        for _ in range(data.draw(st.integers(1, 12))):
            step = data.draw(st.sampled_from(["pay", "pay", "refund", "stripe_refund", "dispute"]))
            if step == "pay":
                _pay(s, data, invoices)
            elif step == "refund":
                _refund(s, data, at_stripe=False)
            elif step == "stripe_refund":
                _refund(s, data, at_stripe=True)
            else:
                _dispute(s, data)
            _check(s, invoices)
        s.store.close()
