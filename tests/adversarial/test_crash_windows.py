"""Crash windows around the Stripe call: a payment left "submitted" by a process that died after
claiming it, resolved by `recover_submitted` (and by webhooks racing it) against the Stripe double.
"""

from __future__ import annotations

import csv
import json
import threading

from app import checkout
from app.core import payments
from app.core.payment_refs import payment_reference
from app.jobs import drain_outbox
from tests.adversarial.helpers import create_intent_at_stripe, event_body, outbox, sign
from tests.factories import balance, make_client, make_invoice


def _crashed_after_claim(s, *, totals=(25_000, 10_000), remote="250"):
    """start_payment + claim_for_submission, then the process died before attach_intent."""
    client_id = make_client(s, remote, "Contoso Dental LLC", billing_email="ap@contoso.example")
    invoices = [
        make_invoice(s, f"INV-R{remote}-{n}", client_remote_id=remote, total_minor=t)
        for n, t in enumerate(totals)
    ]
    plan = payments.start_payment(
        s.store,
        s.clock,
        client_id=client_id,
        items=[payments.PayItem(i, t) for i, t in zip(invoices, totals, strict=True)],
        initiated_by="login:ap@contoso.example",
        allow_partial=True,
        minimum_partial="1.00",
    )
    assert payments.claim_for_submission(s.store, s.clock, plan.payment_id)
    assert s.store.scalar("SELECT processor_ref FROM payments WHERE id = ?", (plan.payment_id,)) is None
    return client_id, plan, invoices


def _status(s, payment_id: int) -> str:
    return str(s.store.scalar("SELECT status FROM payments WHERE id = ?", (payment_id,)))


def _effects(s) -> dict[str, int]:
    return {
        "receipt": len([e for e in outbox(s, "email") if e["template"] == "receipt"]),
        "journal": len(outbox(s, "journal_payment")),
        "psa": len(outbox(s, "psa_payment")),
    }


def test_a_submitted_payment_whose_intent_succeeded_at_stripe_is_recorded_once_by_recovery(
    stripe_services, stripe_double
):
    s = stripe_services
    _, plan, invoices = _crashed_after_claim(s)
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor, currency="usd", payment_token=plan.token
    )

    first = checkout.recover_submitted(s, older_than_seconds=0)
    again = checkout.recover_submitted(s, older_than_seconds=0)

    assert (first, again) == (1, 0)
    assert _status(s, plan.payment_id) == "succeeded"
    assert s.store.scalar("SELECT processor_ref FROM payments WHERE id = ?", (plan.payment_id,)) == pi["id"]
    assert [balance(s, i) for i in invoices] == [0, 0]
    assert _effects(s) == {"receipt": 1, "journal": 1, "psa": 2}  # one write-back per invoice


def test_a_recovered_payments_journal_entry_and_psa_write_back_name_its_payment_intent(
    stripe_services, stripe_double, mail
):
    s = stripe_services
    _, plan, _ = _crashed_after_claim(s)
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor, currency="usd", payment_token=plan.token
    )

    checkout.recover_submitted(s, older_than_seconds=0)
    drain_outbox.run(s)

    [journal] = outbox(s, "journal_payment")
    references = [p["reference"] for p in outbox(s, "psa_payment")]
    with s.config.journal_path.open(encoding="utf-8") as fh:
        ref = payment_reference(s.store.scalar("SELECT id FROM payments WHERE token = ?", (plan.token,)))
        rows = [r for r in csv.DictReader(fh) if r["payment_reference"] == ref]
    # Finance reconciles the clearing account against Stripe by this id.
    assert journal["processor_ref"] == pi["id"], journal
    assert all(pi["id"] in ref for ref in references), references
    assert rows and all(r["processor_reference"] == pi["id"] for r in rows), rows


def test_a_submitted_payment_with_nothing_at_stripe_fails_and_its_invoices_can_be_paid_again(stripe_services):
    s = stripe_services
    client_id, plan, invoices = _crashed_after_claim(s)
    assert (
        s.store.scalar("SELECT reserved_minor FROM invoice_balances WHERE invoice_id = ?", (invoices[0],)) > 0
    )

    assert checkout.recover_submitted(s, older_than_seconds=0) == 1
    assert checkout.recover_submitted(s, older_than_seconds=0) == 0

    assert _status(s, plan.payment_id) == "failed"
    assert [balance(s, i) for i in invoices] == [25_000, 10_000]
    assert [
        s.store.scalar("SELECT reserved_minor FROM invoice_balances WHERE invoice_id = ?", (i,))
        for i in invoices
    ] == [0, 0]
    assert _effects(s) == {"receipt": 0, "journal": 0, "psa": 0}
    again = payments.start_payment(
        s.store,
        s.clock,
        client_id=client_id,
        items=[payments.PayItem(invoices[0], 25_000)],
        initiated_by="test",
        allow_partial=True,
        minimum_partial="1.00",
    )
    assert again.amount_minor == 25_000


def test_recovery_leaves_a_recent_submission_alone(stripe_services):
    s = stripe_services
    _, plan, _ = _crashed_after_claim(s)
    assert checkout.recover_submitted(s, older_than_seconds=120) == 0  # the frozen clock has not moved
    assert _status(s, plan.payment_id) == "submitted"


def test_a_charge_that_lands_after_recovery_gave_up_is_recorded_or_flagged_for_a_person(
    stripe_services, stripe_double
):
    s = stripe_services
    _, plan, _ = _crashed_after_claim(s)
    checkout.recover_submitted(s, older_than_seconds=0)
    assert _status(s, plan.payment_id) == "failed"
    # The create call did reach Stripe after all (a slow network, a listing that missed it): the
    # card was charged and Stripe now sends payment_intent.succeeded for our token.
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor, currency="usd", payment_token=plan.token
    )
    body = event_body(
        "evt_late_charge",
        "payment_intent.succeeded",
        {"id": pi["id"], "object": "payment_intent", "metadata": {"payment_token": plan.token}},
    )

    result = checkout.handle_stripe_event(s, body, sign(body, str(s.config.stripe.webhook_secret)))

    recorded = _status(s, plan.payment_id) == "succeeded"
    flagged = s.store.all("SELECT kind, summary FROM exceptions")
    assert recorded or any(pi["id"] in r["summary"] or plan.token in r["summary"] for r in flagged), (
        f"money taken at Stripe ({pi['id']}, {pi['status']}) is neither recorded nor flagged: "
        f"webhook result {result!r}, payment {_status(s, plan.payment_id)}, "
        f"exceptions {[tuple(r) for r in flagged]}"
    )


def test_recovery_racing_webhooks_records_the_payment_once(stripe_services, stripe_double):
    s = stripe_services
    _, plan, invoices = _crashed_after_claim(s)
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor, currency="usd", payment_token=plan.token
    )
    secret = str(s.config.stripe.webhook_secret)
    obj = {"id": pi["id"], "object": "payment_intent", "metadata": {"payment_token": plan.token}}
    bodies = [event_body(f"evt_race_{n}", "payment_intent.succeeded", obj) for n in range(3)]
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def run(fn) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    jobs = [lambda: checkout.recover_submitted(s, older_than_seconds=0)] * 2 + [
        (lambda b=b: checkout.handle_stripe_event(s, b, sign(b, secret))) for b in bodies
    ]
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert _status(s, plan.payment_id) == "succeeded"
    assert [balance(s, i) for i in invoices] == [0, 0]
    assert _effects(s) == {"receipt": 1, "journal": 1, "psa": 2}
    assert (
        json.loads(s.store.scalar("SELECT payload_json FROM outbox WHERE kind = 'journal_payment'"))[
            "amount_minor"
        ]
        == plan.amount_minor
    )
