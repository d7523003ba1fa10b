"""Removing a saved method: Cashloop stops using it at once, and the outbox detaches it at Stripe
exactly once, however often the entry is delivered, and also when Stripe has it detached already.
Against the Stripe double with the tests' extension, whose request log counts the detach calls."""

from __future__ import annotations

import pytest

from app.core import saved_methods
from app.jobs import drain_outbox, method_detach
from tests.autopay_world import engine_services, saved_bank, saved_card, stripe_client
from tests.factories import make_client


def _detaches(stripe_ext, ref: str) -> list[dict]:
    return [r for r in stripe_ext.requests() if r["path"] == f"/v1/payment_methods/{ref}/detach"]


def _remove(s, client_id: int, ref: str) -> None:
    with s.store.write() as db:
        saved_methods.remove_method(
            db, s.clock, client_id=client_id, processor_ref=ref, actor="dana@contoso.example"
        )


def _ref(s, method_id: int) -> str:
    return str(s.store.scalar("SELECT processor_ref FROM payment_methods WHERE id = ?", (method_id,)))


def test_a_removed_card_is_detached_at_stripe_once(tmp_path, frozen_clock, stripe_ext, mail):
    s = engine_services(tmp_path, frozen_clock, stripe_ext.double, mail)
    client_id = make_client(s)
    ref = _ref(s, saved_card(s, stripe_ext.double, client_id))
    _remove(s, client_id, ref)
    assert saved_methods.list_methods(s.store.db, client_id) == []  # never offered or charged again
    for _ in range(3):
        drain_outbox.run(s)
    [detach] = _detaches(stripe_ext, ref)
    assert detach["key"] == f"detach-{ref}"
    assert stripe_client(stripe_ext.double).v1.payment_methods.retrieve(ref).customer is None
    row = s.store.one("SELECT status, attempts FROM outbox WHERE kind = 'stripe_detach_method'")
    assert (row["status"], row["attempts"]) == ("done", 1)

    # The same entry handled again (a crash after Stripe answered, before the outbox recorded it).
    handle = method_detach.handler(s)
    assert handle({"processor_ref": ref, "client_id": client_id}, f"detach-method:{ref}") == ref
    assert len(_detaches(stripe_ext, ref)) == 1


def test_a_bank_account_detached_at_stripe_already_is_left_alone(tmp_path, frozen_clock, stripe_ext, mail):
    s = engine_services(tmp_path, frozen_clock, stripe_ext.double, mail)
    client_id = make_client(s)
    ref = _ref(s, saved_bank(s, stripe_ext.double, client_id))
    stripe_client(stripe_ext.double).v1.payment_methods.detach(ref)  # someone did it in the Dashboard
    stripe_ext.reset()
    _remove(s, client_id, ref)
    drain_outbox.run(s)
    assert _detaches(stripe_ext, ref) == []
    assert s.store.scalar("SELECT status FROM outbox WHERE kind = 'stripe_detach_method'") == "done"


def test_removing_twice_queues_one_detachment(tmp_path, frozen_clock, stripe_ext, mail):
    s = engine_services(tmp_path, frozen_clock, stripe_ext.double, mail)
    client_id = make_client(s)
    ref = _ref(s, saved_card(s, stripe_ext.double, client_id))
    _remove(s, client_id, ref)
    with pytest.raises(saved_methods.MethodError, match="not available"):
        _remove(s, client_id, ref)
    assert s.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'stripe_detach_method'") == 1
