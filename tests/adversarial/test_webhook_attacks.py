"""The Stripe webhook under attack: bad bodies, stale or missing signatures, events for intents
nobody has, concurrent duplicate deliveries and a charge for the wrong amount.

Real parts: the Stripe double (localstripe through the official library), the SMTP sink, a
SQLite file, and for the concurrent cases the app served by a threaded WSGI server on loopback.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from app.core import payments
from app.jobs import drain_outbox
from app.web import create_app
from tests.adversarial.helpers import create_intent_at_stripe, event_body, outbox, sign
from tests.conftest import LiveServer, free_port
from tests.factories import balance, make_client, make_invoice


def _post(client, body: bytes, secret: str | None, *, at: int | None = None):
    headers = {"Stripe-Signature": sign(body, secret, at=at)} if secret is not None else {}
    return client.post("/stripe/webhook", data=body, headers=headers, content_type="application/json")


@pytest.fixture
def web(stripe_services):
    return create_app(stripe_services).test_client()


@pytest.fixture
def secret(stripe_services) -> str:
    return str(stripe_services.config.stripe.webhook_secret)


def _submitted_payment(s, *, total: int = 25_000, remote: str = "250"):
    """A payment claimed for submission whose confirm call never came back (no processor_ref yet)."""
    client_id = make_client(s, remote, "Contoso Dental LLC", billing_email="ap@contoso.example")
    inv = make_invoice(s, f"INV-W{remote}", client_remote_id=remote, total_minor=total)
    plan = payments.start_payment(
        s.store,
        s.clock,
        client_id=client_id,
        items=[payments.PayItem(inv, total)],
        initiated_by="login:ap@contoso.example",
        allow_partial=True,
        minimum_partial="1.00",
    )
    assert payments.claim_for_submission(s.store, s.clock, plan.payment_id)
    return plan, inv


# ---- bodies and signatures --------------------------------------------------------------------


def test_an_empty_body_with_a_valid_signature_is_400(web, secret, stripe_services):
    response = _post(web, b"", secret)
    assert response.status_code == 400
    assert stripe_services.store.scalar("SELECT COUNT(*) FROM stripe_events") == 0


@pytest.mark.parametrize("body", [b"not json", b'{"id": ', b"\xff\xfe\x00{}"], ids=["text", "cut", "binary"])
def test_a_body_that_is_not_json_with_a_valid_signature_is_400(web, secret, body):
    assert _post(web, body, secret).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b"null",
        b"42",
        b'{"id": "evt_no_type"}',
        b'{"id": "evt_x", "type": "payment_intent.succeeded"}',
        b'{"id": "evt_y", "type": "payment_intent.succeeded", "data": {}}',
        b'{"id": "evt_z", "type": "payment_intent.succeeded", '
        b'"data": {"object": {"object": "payment_intent"}}}',
    ],
    ids=["empty object", "array", "null", "number", "no type", "no data", "no object", "object without id"],
)
def test_signed_json_that_is_not_a_stripe_event_is_400_not_500(web, secret, body):
    response = _post(web, body, secret)
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True))


def test_a_missing_or_forged_signature_is_400_and_stores_nothing(web, secret, stripe_services):
    body = event_body("evt_forged", "payment_intent.succeeded", {"id": "pi_x", "object": "payment_intent"})
    assert _post(web, body, None).status_code == 400
    assert _post(web, body, "whsec_guess").status_code == 400
    assert web.post("/stripe/webhook", data=body, headers={"Stripe-Signature": "garbage"}).status_code == 400
    assert stripe_services.store.scalar("SELECT COUNT(*) FROM stripe_events") == 0


def test_a_signature_older_than_five_minutes_is_400(web, secret, stripe_services):
    body = event_body("evt_old", "customer.created", {"id": "cus_1", "object": "customer"})
    response = _post(web, body, secret, at=int(time.time()) - 301)
    assert response.status_code == 400
    assert stripe_services.store.scalar("SELECT COUNT(*) FROM stripe_events") == 0


# ---- events that are authentic but not for anything we know ---------------------------------


def test_a_verified_event_of_an_unknown_type_is_acknowledged_and_ignored(web, secret):
    body = event_body("evt_unknown_type", "cashloop.never_heard_of_it", {"id": "obj_1", "object": "thing"})
    response = _post(web, body, secret)
    assert response.status_code == 200 and response.get_json()["result"] == "ignored"


def test_an_event_for_an_intent_neither_stripe_nor_we_know_is_acknowledged(web, secret):
    obj = {
        "id": "pi_doesnotexist",
        "object": "payment_intent",
        "amount": 100,
        "currency": "usd",
        "metadata": {},
    }
    response = _post(web, event_body("evt_nobody", "payment_intent.succeeded", obj), secret)
    assert response.status_code == 200 and response.get_json()["result"] == "not ours"


def test_an_event_naming_our_payment_but_an_intent_stripe_does_not_have_changes_nothing_and_is_acknowledged(
    web, secret, stripe_services
):
    s = stripe_services
    plan, inv = _submitted_payment(s)
    obj = {
        "id": "pi_doesnotexist",
        "object": "payment_intent",
        "amount": plan.amount_minor,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"payment_token": plan.token},
    }

    response = _post(web, event_body("evt_phantom", "payment_intent.succeeded", obj), secret)

    assert s.store.scalar("SELECT status FROM payments WHERE id = ?", (plan.payment_id,)) == "submitted"
    assert s.store.scalar("SELECT processor_ref FROM payments WHERE id = ?", (plan.payment_id,)) is None
    assert balance(s, inv) == 25_000 and outbox(s, "email") == []
    # Stripe answers 404 for this intent: no retry will ever succeed, so a 500 only makes Stripe
    # redeliver for days (and eventually disable the endpoint).
    assert 200 <= response.status_code < 300, (response.status_code, response.get_json())


# ---- duplicates under concurrency --------------------------------------------------------------


def _deliver_concurrently(url: str, bodies: list[bytes], secret: str) -> list[int]:
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def send(i: int, body: bytes) -> None:
        headers = {"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"}
        barrier.wait()
        statuses[i] = requests.post(url, data=body, headers=headers, timeout=30).status_code

    threads = [threading.Thread(target=send, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return statuses


def test_concurrent_duplicate_deliveries_are_all_2xx_and_make_exactly_one_receipt(
    stripe_services, stripe_double, mail, secret
):
    s = stripe_services
    plan, inv = _submitted_payment(s)
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor, currency="usd", payment_token=plan.token
    )
    assert pi["status"] == "succeeded"
    obj = {"id": pi["id"], "object": "payment_intent", "metadata": {"payment_token": plan.token}}
    same = event_body("evt_dup_a", "payment_intent.succeeded", obj)
    other = event_body(
        "evt_dup_b", "payment_intent.succeeded", obj
    )  # Stripe's own redelivery has a new id too
    charge = event_body("evt_dup_c", "payment_intent.amount_capturable_updated", obj)
    server = LiveServer(create_app(s), free_port()).start()
    try:
        statuses = _deliver_concurrently(
            f"{server.url}/stripe/webhook", [same] * 4 + [other] * 4 + [charge] * 2, secret
        )
    finally:
        server.stop()

    assert all(200 <= code < 300 for code in statuses), statuses
    assert s.store.scalar("SELECT status FROM payments WHERE id = ?", (plan.payment_id,)) == "succeeded"
    assert balance(s, inv) == 0
    assert len([e for e in outbox(s, "email") if e["template"] == "receipt"]) == 1
    assert len(outbox(s, "journal_payment")) == 1
    assert len(outbox(s, "psa_payment")) == 1
    assert s.store.scalar("SELECT COUNT(*) FROM stripe_events WHERE error IS NOT NULL") == 0
    drain_outbox.run(s)
    drain_outbox.run(s)
    mail.wait_for(1)
    time.sleep(0.5)  # a second receipt, if any, would arrive right behind the first
    receipts = [m for m in mail.messages if m["Subject"].startswith("Receipt")]
    assert len(receipts) == 1


# ---- the wrong amount ---------------------------------------------------------------------------


def test_a_succeeded_event_for_an_intent_of_the_wrong_amount_is_not_marked_paid_and_alerts_once(
    web, secret, stripe_services, stripe_double
):
    s = stripe_services
    plan, inv = _submitted_payment(s)
    # The intent carrying our token charged one cent less than the allocations add up to.
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor - 1, currency="usd", payment_token=plan.token
    )
    # The event's own copy claims the right amount; only Stripe's current state may be believed.
    obj = {
        "id": pi["id"],
        "object": "payment_intent",
        "amount": plan.amount_minor,
        "amount_received": plan.amount_minor,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"payment_token": plan.token},
    }

    codes = [
        _post(web, event_body(f"evt_tamper_{n}", "payment_intent.succeeded", obj), secret).status_code
        for n in range(3)
    ]

    assert codes == [200, 200, 200]
    assert s.store.scalar("SELECT status FROM payments WHERE id = ?", (plan.payment_id,)) != "succeeded"
    assert balance(s, inv) == 25_000
    assert outbox(s, "email") == [] and outbox(s, "journal_payment") == [] and outbox(s, "psa_payment") == []
    alerts = s.store.all("SELECT summary FROM exceptions WHERE kind = 'amount_mismatch'")
    assert len(alerts) == 1 and str(plan.amount_minor - 1) in alerts[0][0]


def test_an_event_whose_body_claims_success_is_not_believed_over_stripe(
    web, secret, stripe_services, stripe_double
):
    s = stripe_services
    plan, inv = _submitted_payment(s)
    # The intent exists at Stripe but was never confirmed: nothing was charged.
    pi = create_intent_at_stripe(
        stripe_double, amount=plan.amount_minor, currency="usd", payment_token=plan.token, confirm=False
    )
    assert pi["status"] != "succeeded"
    obj = {**pi, "status": "succeeded", "amount_received": plan.amount_minor}

    response = _post(web, event_body("evt_liar", "payment_intent.succeeded", obj), secret)

    assert response.status_code == 200
    assert s.store.scalar("SELECT status FROM payments WHERE id = ?", (plan.payment_id,)) != "succeeded"
    assert balance(s, inv) == 25_000 and outbox(s, "email") == []
