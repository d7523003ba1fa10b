"""QuickBooks Online connector when things go wrong: a lost response (cases B11), a deleted Payment
re-pushed, tokens expiring or revoked, throttling, a stale SyncToken; and refunds and disputes
booked so the invoices, A/R and the clearing account stay right."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import pytest

from sync.base import AccountingAuthError, ConnectorError, JournalPayment, JournalReversal, MatchError
from tests.fakes.qbo import QboFake, connect

DAY = date(2026, 12, 4)


@pytest.fixture
def fake() -> Iterator[QboFake]:
    with QboFake() as qbo:
        yield qbo
        assert qbo.violations == []


def inv2001(fake: QboFake) -> dict:
    return fake.add_invoice("INV-2001", fake.add_customer("Contoso"), "1250.00")


def pay_a(**changes) -> JournalPayment:
    base = {"payment_token": "tokA", "processor_ref": "pi_A", "method": "card", "received_on": DAY,
            "currency": "USD", "amount_minor": 125000, "client_name": "Contoso", "client_remote_id": "cw-1",
            "allocations": (("INV-2001", 125000),)}
    return JournalPayment(**{**base, **changes})


def ours(fake: QboFake) -> list[dict]:
    return [p for p in fake.live(fake.payments) if "Cashloop payment tokA " in p["PrivateNote"]]


def creates(fake: QboFake) -> list:
    return [s for s in fake.requests if s.method == "POST" and s.path == "/payment" and "Id" not in s.body]


# ---- 3. B11: a lost response, then a retry ---------------------------------------------------------

def test_b11_a_timeout_after_qbo_committed_then_a_retry_leaves_one_payment(fake: QboFake) -> None:
    inv2001(fake)
    qbo = connect(fake, timeout=1.0).qbo
    fake.drop_next_response("/payment", hang=2.5)

    with pytest.raises(ConnectorError) as lost:
        qbo.push_payment(pay_a(), key="v1-journal-b11")
    assert lost.value.retryable  # the outbox tries again later

    ref = qbo.push_payment(pay_a(), key="v1-journal-b11")  # step 2: the retry

    [payment] = ours(fake)
    assert ref == payment["Id"] and str(payment["TotalAmt"]) == "1250.00"
    assert payment["Line"][0]["LinkedTxn"][0]["TxnId"] == fake.invoice("INV-2001")["Id"]
    assert fake.invoice("INV-2001")["Balance"] == 0
    assert len(creates(fake)) == 1  # the retry found the committed Payment instead of creating again


def test_b11_variant_deleted_then_repushed_with_a_new_key_is_one_live_payment_with_a_new_id(
        fake: QboFake) -> None:
    inv2001(fake)
    qbo = connect(fake).qbo
    first = qbo.push_payment(pay_a(), key="v1-journal-old")
    fake.delete_payment(first)  # a bookkeeper deletes it; the invoice reopens
    assert str(fake.invoice("INV-2001")["Balance"]) == "1250.00"

    second = qbo.push_payment(pay_a(), key="v1-journal-new")  # the admin's re-push: a new key

    [live] = ours(fake)
    assert second == live["Id"] and second != first
    assert fake.invoice("INV-2001")["Balance"] == 0
    ids = [s.query["requestid"] for s in creates(fake)]
    assert len(ids) == 2 and ids[0] != ids[1]


def test_a_requestid_replayed_with_a_deleted_payment_is_never_mapped(fake: QboFake) -> None:
    inv2001(fake)
    qbo = connect(fake).qbo
    first = qbo.push_payment(pay_a(), key="v1-journal-old")
    fake.delete_payment(first)

    with pytest.raises(ConnectorError) as err:  # the same key again: QBO replays the first answer
        qbo.push_payment(pay_a(), key="v1-journal-old")

    assert not err.value.retryable
    assert str(err.value) == (f"QuickBooks answered payment tokA with Payment {first}, which was deleted: "
                              f"re-push it (a re-push uses a new key)")
    assert ours(fake) == []


# ---- 4. tokens ---------------------------------------------------------------------------------------

def test_an_access_token_expiring_mid_run_is_refreshed_and_the_rotated_refresh_token_saved(
        fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    fake.add_invoice("1", contoso, "10.00")
    fake.add_invoice("2", contoso, "20.00")
    connected = connect(fake)
    first_tokens = connected.vault.tokens
    connected.qbo.push_payment(pay_a(payment_token="t1", amount_minor=1000, allocations=(("1", 1000),)),
                               key="k1")
    fake.expire_access_tokens()  # QBO stops accepting it before our clock says so: a 401

    connected.qbo.push_payment(pay_a(payment_token="t2", amount_minor=2000, allocations=(("2", 2000),)),
                               key="k2")

    assert len(fake.live(fake.payments)) == 2
    [saved] = connected.vault.saved
    assert saved.refresh_token != first_tokens.refresh_token and saved.tenant_id == first_tokens.tenant_id
    assert saved.access_token != first_tokens.access_token
    refresh = [s for s in fake.requests if s.path == "/oauth2/v1/tokens/bearer"]
    assert [s.body for s in refresh] == [{"grant_type": "refresh_token",
                                          "refresh_token": first_tokens.refresh_token}]


def test_a_token_about_to_expire_is_refreshed_before_the_call(fake: QboFake) -> None:
    fake.add_invoice("1", fake.add_customer("Contoso"), "10.00")
    connected = connect(fake)
    connected.clock.advance(timedelta(minutes=56))  # within the 5-minute margin of the hour
    connected.qbo.push_payment(pay_a(amount_minor=1000, allocations=(("1", 1000),)), key="k1")
    assert len(connected.vault.saved) == 1
    assert fake.requests[0].path == "/oauth2/v1/tokens/bearer"  # before any API call


def test_a_revoked_refresh_token_raises_auth_error_and_marks_the_vault_revoked(fake: QboFake) -> None:
    inv2001(fake)
    connected = connect(fake)
    fake.expire_access_tokens()
    fake.revoke_refresh_tokens()

    with pytest.raises(AccountingAuthError, match="refused the sign-in"):
        connected.qbo.push_payment(pay_a(), key="k")

    assert len(connected.vault.revoked) == 1 and "invalid_grant" in connected.vault.revoked[0]
    assert fake.payments == []


# ---- 8. throttling --------------------------------------------------------------------------------

def test_429_then_success_waits_what_retry_after_says(fake: QboFake) -> None:
    inv2001(fake)
    connected = connect(fake)
    fake.throttle_next(2, retry_after=7, path="/query")

    connected.qbo.push_payment(pay_a(), key="k")

    assert connected.sleeps == [7.0, 7.0]
    assert len(ours(fake)) == 1


def test_throttling_that_outlasts_the_retries_is_a_retryable_error_with_retry_after(fake: QboFake) -> None:
    inv2001(fake)
    connected = connect(fake, max_retries=2)
    fake.throttle_next(10, retry_after=4)

    with pytest.raises(ConnectorError) as err:
        connected.qbo.push_payment(pay_a(), key="k")

    assert (err.value.retryable, err.value.status, err.value.retry_after) == (True, 429, 4.0)
    assert "ThrottleExceeded" in str(err.value) and connected.sleeps == [4.0, 4.0]


# ---- refunds and disputes, and 7. a stale SyncToken ------------------------------------------------

def _paid_over_two(fake: QboFake):
    contoso = fake.add_customer("Contoso")
    fake.add_invoice("1001", contoso, "100.00")
    fake.add_invoice("1002", contoso, "150.00")
    qbo = connect(fake).qbo
    ref = qbo.push_payment(pay_a(amount_minor=25300, surcharge_minor=300,
                                 allocations=(("1001", 10000), ("1002", 15000))), key="k-pay")
    return qbo, ref


def reversal(kind: str, *allocations: tuple[str, int], surcharge: int = 0, reference: str = "rf_1"
             ) -> JournalReversal:
    return JournalReversal(kind=kind, reference=reference, payment_token="tokA", processor_ref="re_1",
                           method="card", occurred_on=date(2026, 12, 10), currency="USD",
                           amount_minor=sum(a for _, a in allocations) + surcharge, surcharge_minor=surcharge,
                           client_name="Contoso", client_remote_id="cw-1", allocations=tuple(allocations))


def test_a_refund_reopens_the_invoices_keeps_the_payment_total_and_balances_the_books(fake: QboFake) -> None:
    qbo, ref = _paid_over_two(fake)

    entry_id = qbo.push_reversal(reversal("refund", ("1001", 4000), ("1002", 15000), surcharge=300),
                                 key="k-refund")

    [entry] = fake.live(fake.journal_entries)
    assert entry_id == entry["Id"] and str(entry["TotalAmt"]) == "193.00"
    names = {a["Id"]: a["Name"] for a in fake.accounts}
    details = [(ln["JournalEntryLineDetail"], str(ln["Amount"])) for ln in entry["Line"]]
    booked = [(d["PostingType"], names[d["AccountRef"]["value"]], amount) for d, amount in details]
    ar = "Accounts Receivable (A/R)"
    assert booked == [("Debit", ar, "40.00"), ("Debit", ar, "150.00"),
                      ("Debit", "Card surcharge income", "3.00"), ("Credit", "Undeposited Funds", "193.00")]
    assert {d["Entity"]["EntityRef"]["value"] for d, _ in details[:2]} == {fake.customers[0]["Id"]}
    assert [str(fake.invoice(n)["Balance"]) for n in ("1001", "1002")] == ["40.00", "150.00"]
    [payment] = fake.live(fake.payments)
    assert payment["Id"] == ref and str(payment["TotalAmt"]) == "250.00" and payment["UnappliedAmt"] == 0
    assert [(ln["LinkedTxn"][0]["TxnType"], str(ln["Amount"])) for ln in payment["Line"]] == [
        ("Invoice", "60.00"), ("JournalEntry", "190.00")]
    assert fake.journal_entries[0]["_open"] == {payment["CustomerRef"]["value"]: 0}  # its A/R is settled

    assert qbo.push_reversal(reversal("refund", ("1001", 4000), ("1002", 15000), surcharge=300),
                             key="k-refund") == entry_id  # a repeat changes nothing
    assert len(fake.journal_entries) == 1 and payment["SyncToken"] == fake.live(fake.payments)[0]["SyncToken"]


def test_a_stale_sync_token_is_re_read_and_the_update_retried(fake: QboFake) -> None:
    qbo, _ = _paid_over_two(fake)
    fake.conflict_next_update()  # someone edits the Payment between our read and our write

    qbo.push_reversal(reversal("refund", ("1001", 2500)), key="k-refund")

    updates = [s for s in fake.requests if s.method == "POST" and s.path == "/payment" and "Id" in s.body]
    assert [u.body["SyncToken"] for u in updates] == ["0", "1"]  # refused with 5010, then re-read
    assert updates[0].query["requestid"] != updates[1].query["requestid"]
    assert str(fake.invoice("1001")["Balance"]) == "25.00"
    assert fake.live(fake.payments)[0]["SyncToken"] == "2"


def test_a_dispute_and_its_win_leave_the_invoices_paid_again(fake: QboFake) -> None:
    qbo, _ = _paid_over_two(fake)
    qbo.push_reversal(reversal("dispute", ("1002", 15000), reference="dp_1"), key="k-dispute")
    assert str(fake.invoice("1002")["Balance"]) == "150.00"

    qbo.push_reversal(reversal("dispute_won", ("1002", 15000), reference="dp_1"), key="k-won")

    assert fake.invoice("1002")["Balance"] == 0 and fake.invoice("1001")["Balance"] == 0
    lost, won = fake.journal_entries
    assert lost["Line"][0]["JournalEntryLineDetail"]["PostingType"] == "Debit"
    assert won["Line"][0]["JournalEntryLineDetail"]["PostingType"] == "Credit"
    [payment] = fake.live(fake.payments)
    assert str(payment["TotalAmt"]) == "250.00" and payment["UnappliedAmt"] == 0
    assert sorted((ln["LinkedTxn"][0]["TxnType"], str(ln["Amount"])) for ln in payment["Line"]) == [
        ("Invoice", "100.00"), ("Invoice", "150.00"), ("JournalEntry", "150.00"), ("JournalEntry", "150.00")]
    assert all(v == 0 for je in (lost, won) for v in je["_open"].values())


def test_a_refund_larger_than_what_the_payment_applied_is_a_match_error(fake: QboFake) -> None:
    qbo, _ = _paid_over_two(fake)
    with pytest.raises(MatchError, match=r"applies only 100\.00 USD to it, less than the 120\.00 USD"):
        qbo.push_reversal(reversal("refund", ("1001", 12000)), key="k")
    assert Decimal(fake.invoice("1001")["Balance"]) == 0


def test_a_refund_of_an_invoice_our_payment_never_touched_is_a_match_error(fake: QboFake) -> None:
    qbo, _ = _paid_over_two(fake)
    fake.add_invoice("1003", fake.customers[0]["Id"], "10.00")
    with pytest.raises(MatchError, match=r"invoice 1003: QuickBooks Payment \d+ applies only 0\.00 USD"):
        qbo.push_reversal(reversal("refund", ("1003", 1000)), key="k")
    assert fake.journal_entries == []
