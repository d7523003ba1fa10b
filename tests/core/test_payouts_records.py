"""Recording payouts in the store, as Stripe reported them: a payout whose transactions do not add up
is still booked at the bank line with the gap as an adjustment and an exception saying how much; a
payout that fails after it was booked says to reverse the deposit; replays change nothing."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from app.core import payouts
from sync.payments.stripe import BalanceItem, PayoutState

TZ = ZoneInfo("America/Chicago")
ARRIVAL = 1_774_000_000  # 2026-03-20 09:46 UTC


def _payout(status: str = "paid", amount: int = 9_000, **over) -> PayoutState:
    values = dict(payout_id="po_1", status=status, amount_minor=amount, currency="USD", arrival_date=ARRIVAL,
                  created=ARRIVAL, reconciled=True)
    values.update(over)
    return PayoutState(**values)


def _item(txn: str, amount: int, fee: int, *, type_: str = "charge", source: str = "ch_x",
          currency: str = "USD") -> BalanceItem:
    return BalanceItem(txn, type_, source, amount, fee, amount - fee, currency)


def _exceptions(s):
    return s.store.all("SELECT kind, ref, summary FROM exceptions ORDER BY id")


def test_transactions_short_of_the_payout_are_booked_as_an_adjustment_and_said_so(services):
    s = services
    items = [
        _item("txn_1", 5_000, 175, source="ch_a"),
        _item("txn_own", -9_000, 0, type_="payout", source="po_1"),
    ]

    result = payouts.record_paid(s.store, s.clock, _payout(), items, timezone=TZ)
    again = payouts.record_paid(s.store, s.clock, _payout(), items, timezone=TZ)

    assert (result, again) == ("booked", "already booked")
    entries = s.store.all("SELECT idem_key, payload_json FROM outbox WHERE kind = 'accounting_deposit'")
    assert [e["idem_key"] for e in entries] == [payouts.deposit_key("po_1")]
    payload = json.loads(entries[0]["payload_json"])
    assert payload["arrival_on"] == "2026-03-20"
    assert [(ln["kind"], ln["amount_minor"], ln["fee_minor"]) for ln in payload["lines"]] == [
        ("adjustment", 5_000, 175),
        ("adjustment", 4_175, 0),
    ]
    assert sum(ln["amount_minor"] for ln in payload["lines"]) - payload["fee_minor"] == 9_000
    (exc,) = _exceptions(s)
    assert (exc["kind"], exc["ref"]) == ("payout_mismatch", "payout:po_1")
    assert "charge ch_a is not a Cashloop payment" in exc["summary"]
    assert "add up to 48.25 USD, 41.75 USD short of the bank line" in exc["summary"]
    assert s.store.scalar("SELECT COUNT(*) FROM payout_items") == 1  # the payout's own one is not an item


def test_a_payout_that_fails_after_it_was_booked_says_to_reverse_the_deposit(services):
    s = services
    items = [_item("txn_1", 9_300, 300, type_="adjustment", source="")]
    payouts.record_paid(s.store, s.clock, _payout(), items, timezone=TZ)

    failed = _payout("failed", failure_code="could_not_process",
                     failure_message="The bank could not process it.")
    first = payouts.record_failed(s.store, s.clock, failed, timezone=TZ)
    second = payouts.record_failed(s.store, s.clock, failed, timezone=TZ)

    assert (first, second) == ("failed", "unchanged")
    kinds = [e["kind"] for e in _exceptions(s)]
    assert kinds == ["payout_mismatch", "payout_failed"]
    summary = _exceptions(s)[1]["summary"]
    assert "could_not_process: The bank could not process it." in summary
    assert "its deposit was already booked: reverse it in the books" in summary
    assert s.store.one("SELECT status, failure_reason FROM payouts")["status"] == "failed"
    assert s.store.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'accounting_deposit'") == 1


def test_an_item_in_another_currency_is_named(services):
    s = services
    items = [_item("txn_eur", 9_000, 0, type_="adjustment", source="", currency="EUR")]

    payouts.record_paid(s.store, s.clock, _payout(), items, timezone=TZ)

    (exc,) = _exceptions(s)
    assert "txn_eur is in EUR, the payout in USD" in exc["summary"]
    assert "Stripe adjustment is not something Cashloop made" in exc["summary"]
