"""QuickBooks Online connector against the loopback QBO fake: payments applied to invoices, invoice
matching, exact currencies, payout deposits and the tie-out reads. Every test ends with the fake's
check that no request broke the XSD, the query forms or the protocol (`violations == []`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from app.config import QuickBooksSettings, Secret
from sync.accounting.qbo_wire import api_base
from sync.base import ConnectorError, DepositLine, JournalDeposit, JournalPayment, JournalReversal, MatchError
from tests.fakes.qbo import QboFake, connect

DAY = date(2026, 12, 4)


@pytest.fixture
def fake() -> Iterator[QboFake]:
    with QboFake() as qbo:
        yield qbo
        assert qbo.violations == []


def pay(token: str, *allocations: tuple[str, int], client: str = "Contoso", surcharge: int = 0,
        currency: str = "USD", ref: str | None = None) -> JournalPayment:
    return JournalPayment(payment_token=token, processor_ref=ref or f"pi_{token}", method="card",
                          received_on=DAY, currency=currency,
                          amount_minor=sum(a for _, a in allocations) + surcharge, client_name=client,
                          client_remote_id="cw-1", allocations=tuple(allocations), surcharge_minor=surcharge)


def posted(fake: QboFake, path: str) -> list:
    return [s for s in fake.requests if s.method == "POST" and s.path == path]


# ---- 1. one payment over several invoices --------------------------------------------------------

def test_250_over_three_invoices_is_one_payment_with_lines_100_100_50(fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    a, b, c = (fake.add_invoice(n, contoso, t) for n, t in (("1001", "100.00"), ("1002", "100.00"),
                                                           ("1003", "120.00")))
    qbo = connect(fake).qbo

    payment_250 = pay("tok250", ("1001", 10000), ("1002", 10000), ("1003", 5000))
    ref = qbo.push_payment(payment_250, key="v1-journal-1")

    [payment] = fake.live(fake.payments)
    assert ref == payment["Id"]
    assert [str(line["Amount"]) for line in payment["Line"]] == ["100.00", "100.00", "50.00"]
    assert [line["LinkedTxn"] for line in payment["Line"]] == [
        [{"TxnId": inv["Id"], "TxnType": "Invoice"}] for inv in (a, b, c)]
    assert str(payment["TotalAmt"]) == "250.00" and payment["UnappliedAmt"] == 0
    assert [str(fake.invoice(n)["Balance"]) for n in ("1001", "1002", "1003")] == ["0.00", "0.00", "70.00"]
    assert payment["DepositToAccountRef"]["value"] == fake.accounts[0]["Id"]  # Undeposited Funds
    assert payment["PrivateNote"] == "Cashloop payment tok250 (card, pi_tok250)"
    assert payment["TxnDate"] == "2026-12-04" and "CurrencyRef" not in posted(fake, "/payment")[0].body


def test_the_surcharge_stays_off_the_payment_and_a_long_token_fits_payment_ref_num(fake: QboFake) -> None:
    fake.add_invoice("CW-7", fake.add_customer("Contoso"), "100.00")
    qbo = connect(fake, number_prefix="CW-").qbo
    token = "Zk3v0pQm7Rt2Lx9Nc4Wb1A"  # 22 characters, like public_token()

    qbo.push_payment(pay(token, ("7", 10000), surcharge=300), key="v1-journal-2")

    [payment] = fake.live(fake.payments)
    assert str(payment["TotalAmt"]) == "100.00"  # the 3.00 surcharge is booked at the payout
    assert payment["PaymentRefNum"] == token[:21] and token in payment["PrivateNote"]


def test_allocations_that_do_not_add_up_are_refused_before_any_call(fake: QboFake) -> None:
    qbo = connect(fake).qbo
    bad = replace(pay("t1", ("1001", 10000)), amount_minor=9999)
    with pytest.raises(ValueError, match="do not add up"):
        qbo.push_payment(bad, key="k")
    assert fake.requests == []


def test_allocations_of_two_customers_make_one_payment_each(fake: QboFake) -> None:
    fake.add_invoice("1001", fake.add_customer("Contoso"), "100.00")
    fake.add_invoice("2001", fake.add_customer("Contoso Labs"), "40.00")
    qbo = connect(fake).qbo

    ref = qbo.push_payment(pay("tok2", ("1001", 10000), ("2001", 4000)), key="v1-journal-3")

    payments = fake.live(fake.payments)
    assert ref == ",".join(p["Id"] for p in payments) and len(payments) == 2
    assert [str(p["TotalAmt"]) for p in payments] == ["100.00", "40.00"]
    ids = [s.query["requestid"] for s in posted(fake, "/payment")]
    assert len(set(ids)) == 2 and all(len(i) <= 50 for i in ids)


# ---- 6. matching -----------------------------------------------------------------------------------

def test_a_missing_invoice_raises_a_match_error_naming_it(fake: QboFake) -> None:
    fake.add_invoice("CW-1001", fake.add_customer("Contoso"), "100.00")
    qbo = connect(fake, number_prefix="CW-").qbo
    with pytest.raises(MatchError, match=r"invoice CW-9999: QuickBooks has no invoice with that number"):
        qbo.push_payment(pay("t", ("9999", 10000)), key="k")
    assert fake.payments == []


def test_two_invoices_with_one_number_are_ambiguous(fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    first, second = fake.add_invoice("1001", contoso, "100.00"), fake.add_invoice("1001", contoso, "100.00")
    qbo = connect(fake).qbo
    with pytest.raises(MatchError) as err:
        qbo.push_payment(pay("t", ("1001", 10000)), key="k")
    assert str(err.value) == (f"invoice 1001: QuickBooks has 2 invoices with that number "
                              f"(ids {first['Id']}, {second['Id']}); make the number unique")
    assert fake.payments == []


def test_number_then_customer_finds_the_one_open_invoice_of_that_amount(fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    fake.add_invoice("Q-1", contoso, "50.00")
    target = fake.add_invoice("Q-2", contoso, "80.00")
    fake.add_invoice("Q-3", fake.add_customer("Other Co"), "80.00")
    qbo = connect(fake, invoice_match="number_then_customer").qbo

    qbo.push_payment(pay("t", ("PSA-77", 8000)), key="k")

    [payment] = fake.live(fake.payments)
    assert payment["Line"][0]["LinkedTxn"] == [{"TxnId": target["Id"], "TxnType": "Invoice"}]
    assert fake.invoice("Q-2")["Balance"] == 0 and str(fake.invoice("Q-1")["Balance"]) == "50.00"


@pytest.mark.parametrize(("invoices", "client", "message"), [
    ((("Q-1", "80.00"), ("Q-2", "80.00")), "Contoso",
     "invoice PSA-77: no invoice with that number, and customer 'Contoso' has 2 open invoices of "
     "80.00 USD (Q-1, Q-2); cannot tell which"),
    ((("Q-1", "50.00"),), "Contoso",
     "invoice PSA-77: no invoice with that number, and customer 'Contoso' has no open invoice of "
     "80.00 USD (open: Q-1: 50.00 USD)"),
    ((), "Nobody's Bakery",
     "invoice PSA-77: no invoice with that number, and QuickBooks has no customer named \"Nobody's Bakery\""),
])
def test_number_then_customer_never_guesses(fake: QboFake, invoices, client, message) -> None:
    contoso = fake.add_customer("Contoso")
    for number, total in invoices:
        fake.add_invoice(number, contoso, total)
    qbo = connect(fake, invoice_match="number_then_customer").qbo
    with pytest.raises(MatchError) as err:
        qbo.push_payment(pay("t", ("PSA-77", 8000), client=client), key="k")
    assert str(err.value) == message
    assert fake.payments == []


def test_an_invoice_in_another_currency_is_not_a_match(fake: QboFake) -> None:
    fake.add_invoice("1001", fake.add_customer("Contoso"), "100.00", currency="EUR")
    with pytest.raises(MatchError, match="in EUR, the payment in USD"):
        connect(fake).qbo.push_payment(pay("t", ("1001", 10000)), key="k")


# ---- 5. exact currencies ---------------------------------------------------------------------------

@pytest.mark.parametrize(("currency", "total", "paid_minor", "wire", "open_left"), [
    ("JPY", "125000", 120000, "120000", 5000),
    ("KWD", "12.345", 10001, "10.001", 2344),
    ("BHD", "0.999", 999, "0.999", 0),
])
def test_zero_and_three_decimal_currencies_round_trip_exactly(fake: QboFake, currency, total, paid_minor,
                                                             wire, open_left) -> None:
    inv = fake.add_invoice("X-1", fake.add_customer("Contoso"), total, currency=currency)
    qbo = connect(fake).qbo

    qbo.push_payment(pay("tokfx", ("X-1", paid_minor), currency=currency), key="k")

    body = posted(fake, "/payment")[0].body
    assert body["CurrencyRef"] == {"value": currency}
    assert str(body["TotalAmt"]) == wire and str(body["Line"][0]["Amount"]) == wire
    [remote] = list(qbo.payments_between(DAY, DAY))
    assert (remote.reference, remote.currency, remote.amount_minor) == ("tokfx", currency, paid_minor)
    opened = list(qbo.open_invoices())
    assert [(o.number, o.balance_minor) for o in opened] == ([("X-1", open_left)] if open_left else [])
    assert inv["Balance"] == Decimal(total) - Decimal(wire)


def test_a_foreign_currency_in_a_company_without_multicurrency_is_refused_clearly() -> None:
    with QboFake(multicurrency=False) as fake:
        fake.add_invoice("1", fake.add_customer("Contoso"), "100", currency="JPY")
        with pytest.raises(ConnectorError, match="currency is USD and multicurrency is off: cannot book JPY"):
            connect(fake).qbo.push_payment(pay("t", ("1", 100), currency="JPY"), key="k")
        assert fake.payments == [] and fake.violations == []


# ---- 2. the payout deposit -------------------------------------------------------------------------

def _five_payments_and_a_refund(fake: QboFake, **settings) -> tuple[object, JournalDeposit]:
    qbo = connect(fake, **settings).qbo
    lines = []
    fees = [320, 175, 29, 1480, 90]
    for i, (total, fee) in enumerate(zip(("100.00", "45.50", "8.99", "480.00", "12.00"), fees, strict=True)):
        cust = fake.add_customer(f"Client {i}")
        fake.add_invoice(f"50{i}", cust, total)
        minor = int(Decimal(total) * 100)
        surcharge = 300 if i == 0 else 0
        p = pay(f"tok{i}", (f"50{i}", minor), client=f"Client {i}", surcharge=surcharge, ref=f"ch_{i}")
        ref = qbo.push_payment(p, key=f"v1-journal-{i}")
        lines.append(DepositLine(kind="payment", processor_ref=f"ch_{i}", amount_minor=p.amount_minor,
                                 fee_minor=fee, surcharge_minor=surcharge, payment_token=p.payment_token,
                                 client_name=f"Client {i}", remote_payment_ref=ref))
    refund = JournalReversal(kind="refund", reference="rf_1", payment_token="tok3", processor_ref="re_1",
                             method="card", occurred_on=DAY, currency="USD", amount_minor=8000,
                             surcharge_minor=0, client_name="Client 3", client_remote_id="cw-3",
                             allocations=(("503", 8000),))
    qbo.push_reversal(refund, key="v1-reversal-1")
    lines.append(DepositLine(kind="refund", processor_ref="re_1", amount_minor=-8000, fee_minor=0,
                             payment_token="tok3", reference="rf_1", client_name="Client 3"))
    gross, fee_total = sum(x.amount_minor for x in lines), sum(fees)
    return qbo, JournalDeposit(payout_id="po_1QxYz2LkdIwHu7ixAbCdEfGh", arrival_on=date(2026, 12, 6),
                               currency="USD", amount_minor=gross - fee_total, fee_minor=fee_total,
                               lines=tuple(lines))


def test_a_payout_of_five_payments_and_a_refund_is_one_deposit_to_the_cent(fake: QboFake) -> None:
    qbo, payout = _five_payments_and_a_refund(fake)

    ref = qbo.push_deposit(payout, key="v1-deposit-1")

    [deposit] = fake.live(fake.deposits)
    assert ref == deposit["Id"] and str(deposit["TotalAmt"]) == "548.55"  # 646.49 + 3.00 - 80.00 - 20.94
    assert deposit["TotalAmt"] == Decimal(payout.amount_minor) / 100
    linked = [ln for ln in deposit["Line"] if ln.get("LinkedTxn")]
    assert sorted(ln["LinkedTxn"][0]["TxnId"] for ln in linked) == sorted(
        p["Id"] for p in fake.live(fake.payments))
    by_account = {}
    for ln in deposit["Line"]:
        if "DepositLineDetail" in ln:
            name = next(a["Name"] for a in fake.accounts
                        if a["Id"] == ln["DepositLineDetail"]["AccountRef"]["value"])
            by_account.setdefault(name, []).append(str(ln["Amount"]))
    assert by_account == {"Card surcharge income": ["3.00"], "Undeposited Funds": ["-80.00"],
                          "Stripe fees": ["-20.94"]}
    checking = next(a["Id"] for a in fake.accounts if a["Name"] == "Checking")
    assert deposit["DepositToAccountRef"]["value"] == checking
    # The refund reopened 80.00 of invoice 503 and the payment still totals 480.00 (already deposited).
    assert str(fake.invoice("503")["Balance"]) == "80.00"
    assert all(p.get("_deposit") == deposit["Id"] for p in fake.payments)

    assert qbo.push_deposit(payout, key="v1-deposit-1") == ref  # a repeat finds it
    assert len(fake.live(fake.deposits)) == 1 and len(posted(fake, "/deposit")) == 1


def test_a_deposit_whose_lines_miss_the_payout_by_a_cent_is_not_sent(fake: QboFake) -> None:
    qbo, payout = _five_payments_and_a_refund(fake)
    with pytest.raises(ValueError, match=r"the deposit lines total 548.55 USD, the payout is 548.54 USD"):
        qbo.push_deposit(replace(payout, amount_minor=payout.amount_minor - 1), key="v1-deposit-2")
    assert fake.deposits == []


def test_a_payout_whose_fee_is_not_the_sum_of_its_lines_fees_is_not_sent(fake: QboFake) -> None:
    qbo, payout = _five_payments_and_a_refund(fake)
    skewed = replace(payout, fee_minor=payout.fee_minor + 1, amount_minor=payout.amount_minor - 1)
    with pytest.raises(ValueError, match="the lines' fees do not add up to its fee_minor"):
        qbo.push_deposit(skewed, key="v1-deposit-5")
    assert fake.deposits == []


def test_a_payment_not_booked_yet_makes_the_deposit_wait(fake: QboFake) -> None:
    qbo, payout = _five_payments_and_a_refund(fake)
    waiting = replace(payout, lines=(replace(payout.lines[0], remote_payment_ref=None), *payout.lines[1:]))
    with pytest.raises(ConnectorError, match="waiting for payment tok0 to be booked") as err:
        qbo.push_deposit(waiting, key="v1-deposit-3")
    assert err.value.retryable and fake.deposits == []


def test_with_a_bank_type_clearing_account_the_payments_are_drawn_from_it(fake: QboFake) -> None:
    qbo, payout = _five_payments_and_a_refund(fake, clearing_account="Stripe clearing")
    qbo.push_deposit(payout, key="v1-deposit-4")
    [deposit] = fake.live(fake.deposits)
    assert deposit["TotalAmt"] == Decimal(payout.amount_minor) / 100
    assert not any(ln.get("LinkedTxn") for ln in deposit["Line"])  # QBO links only Undeposited Funds


# ---- tie-out reads ---------------------------------------------------------------------------------

def test_open_invoices_pages_through_more_than_a_thousand(fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    for n in range(1, 1003):
        fake.add_invoice(f"CW-{n}", contoso, "1.00")
    fake.add_invoice("CW-0", contoso, "0.00")
    found = list(connect(fake, number_prefix="CW-").qbo.open_invoices())
    assert len(found) == 1002 and found[0].number == "1" and found[0].customer_name == "Contoso"
    pages = [s.query["query"] for s in fake.requests if s.path == "/query"]
    assert pages == ["select * from Invoice where Balance > '0' startposition 1 maxresults 1000",
                     "select * from Invoice where Balance > '0' startposition 1001 maxresults 1000"]


def test_payments_between_lists_only_ours_in_the_period(fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    fake.add_invoice("1", contoso, "10.00")
    fake.add_invoice("2", contoso, "20.00")
    qbo = connect(fake).qbo
    qbo.push_payment(pay("mine", ("1", 1000)), key="k1")
    qbo.push_payment(replace(pay("later", ("2", 2000)), received_on=date(2026, 12, 9)), key="k2")
    assert [(p.reference, p.amount_minor) for p in qbo.payments_between(date(2026, 12, 1), DAY)] == [
        ("mine", 1000)]


# ---- the wire ---------------------------------------------------------------------------------------

def test_every_call_carries_minorversion_75_and_a_bearer_token(fake: QboFake) -> None:
    fake.add_invoice("1001", fake.add_customer("Jim's \\ Bar"), "100.00")
    connected = connect(fake, invoice_match="number_then_customer")
    connected.qbo.push_payment(pay("t", ("9", 10000), client="Jim's \\ Bar"), key="k")
    token = connected.vault.tokens.access_token
    api = [s for s in fake.requests if s.path != "/oauth2/v1/tokens/bearer"]
    assert api and all(s.query["minorversion"] == "75" for s in api)
    assert all(s.headers["authorization"] == f"Bearer {token}" for s in api)
    assert any(s.query.get("query", "").startswith(
        "select * from Customer where DisplayName = 'Jim\\'s \\\\ Bar' ") for s in api)


def test_the_fake_reports_a_field_the_xsd_does_not_define(fake: QboFake) -> None:
    api = connect(fake).qbo.api
    with pytest.raises(ConnectorError, match="unsupported property"):
        api.post("/payment", {"TotalAmt": Decimal("1.00"),
                              "Line": [{"Amount": Decimal("1.00"), "Memo": "x"}]}, request_id="rid-1")
    assert fake.violations == ["POST /payment: Request has invalid or unsupported property: "
                               "Payment.Line[0].Memo is not defined for Line in the XSD"]
    fake.violations.clear()


def test_the_fake_answers_a_query_form_it_does_not_know_with_the_4001_fault(fake: QboFake) -> None:
    api = connect(fake).qbo.api
    with pytest.raises(ConnectorError, match="HTTP 400: Invalid query") as err:
        api.query("Invoice", "TotalAmt > '5'")
    assert not err.value.retryable
    assert fake.violations == ["GET /query: Invalid query: QueryValidationError: unsupported condition in "
                               "\"TotalAmt > '5'\""]
    fake.violations.clear()


def test_the_fake_refuses_a_line_above_the_open_balance(fake: QboFake) -> None:
    contoso = fake.add_customer("Contoso")
    inv = fake.add_invoice("1001", contoso, "100.00")
    api = connect(fake).qbo.api
    with pytest.raises(ConnectorError, match="Amount exceeds balance"):
        api.post("/payment", {"CustomerRef": {"value": contoso}, "TotalAmt": Decimal("100.01"),
                              "DepositToAccountRef": {"value": fake.accounts[0]["Id"]},
                              "Line": [{"Amount": Decimal("100.01"),
                                        "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}]},
                 request_id="rid-2")
    assert fake.payments == [] and str(inv["Balance"]) == "100.00"


def test_old_style_403_throttling_is_a_retryable_wait(fake: QboFake) -> None:
    fake.add_invoice("1001", fake.add_customer("Contoso"), "100.00")
    fake.throttle_next(1, status=403)
    with pytest.raises(ConnectorError) as err:
        connect(fake).qbo.push_payment(pay("t", ("1001", 10000)), key="k")
    assert (err.value.retryable, err.value.status, err.value.retry_after) == (True, 429, 60.0)


def test_a_payment_booked_as_two_qbo_payments_is_deposited_as_both(fake: QboFake) -> None:
    fake.add_invoice("1001", fake.add_customer("Contoso"), "100.00")
    fake.add_invoice("2001", fake.add_customer("Contoso Labs"), "40.00")
    qbo = connect(fake).qbo
    ref = qbo.push_payment(pay("tok2", ("1001", 10000), ("2001", 4000)), key="k")
    line = DepositLine(kind="payment", processor_ref="ch_2", amount_minor=14000, fee_minor=436,
                       payment_token="tok2", remote_payment_ref=ref)
    qbo.push_deposit(JournalDeposit(payout_id="po_2", arrival_on=DAY, currency="USD", amount_minor=13564,
                                    fee_minor=436, lines=(line,)), key="kd")
    [deposit] = fake.live(fake.deposits)
    assert [str(ln["Amount"]) for ln in deposit["Line"]] == ["100.00", "40.00", "-4.36"]
    assert str(deposit["TotalAmt"]) == "135.64"


def test_the_base_url_follows_the_environment() -> None:
    common = {"client_id": "c", "client_secret": Secret("s"), "bank_account": "Checking"}
    assert api_base(QuickBooksSettings(**common)) == "https://quickbooks.api.intuit.com/v3"
    assert api_base(QuickBooksSettings(environment="sandbox", **common)) == \
        "https://sandbox-quickbooks.api.intuit.com/v3"
