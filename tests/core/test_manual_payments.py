"""Manual payments (check, wire, cash): one transaction writes the payment, its allocations, the
same outbox effects as a card payment and the audit entry; bad input writes nothing."""

from __future__ import annotations

import json
from datetime import date

import pytest

from app.core.keys import derive_key
from app.core.manual_payments import Allocation, ManualPaymentError, record_manual_payment
from tests.factories import balance, make_client, make_invoice

ACTOR = "admin:finance@msp.example"


def _record(
    services,
    client_id,
    allocations,
    *,
    amount,
    method="check",
    reference="1042",
    received_on=date(2026, 3, 9),
    key="form-1",
):
    return record_manual_payment(
        services.store,
        services.clock,
        client_id=client_id,
        method=method,
        amount_minor=amount,
        allocations=[Allocation(i, a) for i, a in allocations],
        reference=reference,
        received_on=received_on,
        note="left at reception",
        actor=ACTOR,
        request_key=key,
        base_url=services.config.cashloop.base_url,
        timezone=services.config.tz,
    )


@pytest.fixture
def contoso(services):
    client_id = make_client(services)
    first = make_invoice(services, "INV-1001", total_minor=50_000, paid_minor=20_000)
    second = make_invoice(services, "INV-1002", total_minor=70_000)
    return client_id, first, second


def _counts(services) -> tuple[int, ...]:
    return tuple(
        services.store.scalar(f"SELECT COUNT(*) FROM {t}")
        for t in ("payments", "allocations", "manual_payments", "outbox", "audit_log")
    )


def test_a_check_of_500_over_two_invoices_is_recorded_allocated_announced_and_audited(services, contoso):
    client_id, first, second = contoso
    recorded = _record(services, client_id, [(first, 30_000), (second, 20_000)], amount=50_000)
    pay = services.store.one("SELECT * FROM payments WHERE id = ?", (recorded.payment_id,))
    assert (pay["status"], pay["method"], pay["amount_minor"], pay["currency"], pay["initiated_by"]) == (
        "succeeded",
        "check",
        50_000,
        "USD",
        ACTOR,
    )
    assert balance(services, first) == 0 and balance(services, second) == 50_000
    manual = services.store.one("SELECT * FROM manual_payments WHERE payment_id = ?", (recorded.payment_id,))
    assert (manual["reference"], manual["received_on"], manual["note"]) == (
        "1042",
        "2026-03-09",
        "left at reception",
    )
    effects = {r["kind"]: [] for r in services.store.all("SELECT kind FROM outbox")}
    for r in services.store.all("SELECT kind, payload_json FROM outbox ORDER BY id"):
        effects[r["kind"]].append(json.loads(r["payload_json"]))
    assert sorted((p["invoice_remote_id"], p["amount_minor"]) for p in effects["psa_payment"]) == [
        ("inv-INV-1001", 30_000),
        ("inv-INV-1002", 20_000),
    ]
    (journal,) = effects["journal_payment"]
    assert (journal["method"], journal["amount_minor"], journal["allocations"]) == (
        "check",
        50_000,
        [["INV-1001", 30_000], ["INV-1002", 20_000]],
    )
    (receipt,) = effects["email"]
    assert receipt["template"] == "receipt" and receipt["to"] == ["ap@contoso.example"]
    assert receipt["context"]["method_label"] == "Check" and receipt["context"]["amount_minor"] == 50_000
    entry = services.store.one("SELECT * FROM audit_log WHERE action = 'payment.recorded_manually'")
    assert entry["actor"] == ACTOR and json.loads(entry["detail_json"])["allocations"] == {
        "INV-1001": 30_000,
        "INV-1002": 20_000,
    }


def test_the_same_form_sent_twice_records_one_payment(services, contoso):
    client_id, first, _ = contoso
    one = _record(services, client_id, [(first, 30_000)], amount=30_000)
    before = _counts(services)
    two = _record(services, client_id, [(first, 30_000)], amount=30_000)
    assert (one.is_new, two.is_new, one.payment_id) == (True, False, two.payment_id)
    assert _counts(services) == before


@pytest.mark.parametrize(
    ("allocations", "amount", "kw", "message"),
    [
        ([("first", 30_000), ("second", 10_000)], 50_000, {}, "add up to $400.00 but the payment is $500.00"),
        ([("first", 30_001)], 30_001, {}, "INV-1001 has $300.00 left to pay; $300.01 is more than that"),
        ([("first", -100), ("second", 200)], 100, {}, "cannot be negative"),
        ([], 100, {}, "at least one invoice"),
        ([("first", 100)], 100, {"reference": " "}, "Enter the check number"),
        ([("first", 100)], 100, {"method": "wire", "reference": ""}, "Enter the wire reference"),
        ([("first", 100)], 100, {"method": "bitcoin"}, "check, wire or cash"),
        ([("first", 100)], 100, {"received_on": date(2026, 3, 11)}, "is in the future"),
        ([("first", 100)], 0, {}, "must be more than zero"),
    ],
)
def test_a_payment_that_cannot_be_recorded_says_why_and_writes_nothing(
    services, contoso, allocations, amount, kw, message
):
    client_id, first, second = contoso
    ids = {"first": first, "second": second}
    before = _counts(services)
    with pytest.raises(ManualPaymentError, match=message.replace("$", r"\$").replace("(", r"\(")):
        _record(services, client_id, [(ids[k], a) for k, a in allocations], amount=amount, **kw)
    assert _counts(services) == before


def test_cash_needs_no_reference_and_an_invoice_of_another_client_is_refused(services, contoso):
    client_id, first, _ = contoso
    make_client(services, "300", "Fabrikam Builders", billing_email="ap@fabrikam.example")
    theirs = make_invoice(services, "INV-3001", client_remote_id="300", total_minor=240_000)
    with pytest.raises(ManualPaymentError, match="does not belong to this client"):
        _record(services, client_id, [(theirs, 100)], amount=100, method="cash", reference="")
    assert _record(services, client_id, [(first, 100)], amount=100, method="cash", reference="").is_new


def test_invoices_in_two_currencies_need_two_payments(services, contoso):
    client_id, first, _ = contoso
    cad = make_invoice(services, "INV-C1", total_minor=10_000, currency="CAD")
    with pytest.raises(ManualPaymentError, match="different currencies"):
        _record(services, client_id, [(first, 100), (cad, 100)], amount=200)


def test_the_idempotency_key_is_derived_from_the_form(services, contoso):
    client_id, first, _ = contoso
    recorded = _record(services, client_id, [(first, 100)], amount=100, key="abc")
    assert services.store.scalar("SELECT idem_key FROM payments WHERE id = ?", (recorded.payment_id,)) == (
        derive_key("manual-payment", request="abc")
    )
