"""The journal as QuickBooks Desktop IIF, and the payout deposit in both journal formats: header
rows, every transaction summing to zero, exact amounts in USD, JPY and a 3-decimal currency,
MM/DD/YYYY dates, one entry per key, and a deposit whose bank line is the payout."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from app.services import build_services
from sync.accounting import iif
from sync.accounting.journal import BANK_ACCOUNT, CLEARING_ACCOUNT, FEE_ACCOUNT, JournalSink
from sync.base import DepositLine, JournalDeposit, JournalPayment, JournalReversal
from tests.conftest import make_config


def _payment(currency: str, amount: int, split: tuple[int, int], **over) -> JournalPayment:
    values = dict(
        payment_token="tok1", processor_ref="pi_1", method="card", received_on=date(2026, 3, 31),
        currency=currency, amount_minor=amount, client_name="Contoso\tDental", client_remote_id="250",
        allocations=(("INV-1", split[0]), ("INV-2", split[1])),
    )
    values.update(over)
    return JournalPayment(**values)


def _deposit(currency: str = "USD") -> JournalDeposit:
    lines = (
        DepositLine(kind="payment", processor_ref="ch_1", amount_minor=10_000, fee_minor=320,
                    payment_token="tok1", client_name="Contoso"),
        DepositLine(kind="payment", processor_ref="ch_2", amount_minor=2_500, fee_minor=103,
                    payment_token="tok2", client_name="Fabrikam"),
        DepositLine(kind="refund", processor_ref="re_1", amount_minor=-1_000, fee_minor=0,
                    payment_token="tok2", reference="rf1", client_name="Fabrikam"),
    )
    return JournalDeposit(payout_id="po_1", arrival_on=date(2026, 4, 2), currency=currency,
                          amount_minor=10_000 + 2_500 - 1_000 - 423, fee_minor=423, lines=lines)


def _transactions(path) -> tuple[list[str], list[list[list[str]]]]:
    """The file's header rows and its transactions, each a list of TRNS/SPL lines split on tabs."""
    raw = path.read_bytes().decode("utf-8")
    assert "\r\n" in raw and "\n" not in raw.replace("\r\n", "")
    lines = raw.split("\r\n")
    assert lines[-1] == ""
    header, body = lines[:3], lines[3:-1]
    out, current = [], []
    for line in body:
        if line == "ENDTRNS":
            out.append(current)
            current = []
        else:
            current.append(line.split("\t"))
    assert current == []
    return header, out


def _amounts(txn: list[list[str]]) -> list[str]:
    return [fields[6] for fields in txn]


def test_the_header_rows_and_every_transaction_sums_to_zero(tmp_path):
    sink = JournalSink(tmp_path / "journal.iif", format="iif")
    sink.push_payment(_payment("USD", 50_000, (30_000, 20_000)), key="k-pay")
    sink.push_reversal(JournalReversal(
        kind="refund", reference="rf1", payment_token="tok1", processor_ref="pi_1", method="card",
        occurred_on=date(2026, 4, 1), currency="USD", amount_minor=5_000, surcharge_minor=0,
        client_name="Contoso", client_remote_id="250", allocations=(("INV-2", 5_000),)), key="k-refund")
    sink.push_deposit(_deposit(), key="k-deposit")

    header, txns = _transactions(sink.path)

    assert header == [
        "!TRNS\tTRNSID\tTRNSTYPE\tDATE\tACCNT\tNAME\tAMOUNT\tDOCNUM\tMEMO",
        "!SPL\tSPLID\tTRNSTYPE\tDATE\tACCNT\tNAME\tAMOUNT\tDOCNUM\tMEMO",
        "!ENDTRNS",
    ]
    assert len(txns) == 3
    for txn in txns:
        assert [f[0] for f in txn] == ["TRNS"] + ["SPL"] * (len(txn) - 1)
        assert all(len(f) == 9 and f[2] == "GENERAL JOURNAL" for f in txn)
        assert sum(Decimal(a) for a in _amounts(txn)) == 0
    pay, refund, deposit = txns
    assert [(f[3], f[4], f[5], f[6]) for f in pay] == [
        ("03/31/2026", CLEARING_ACCOUNT, "Contoso Dental", "500.00"),
        ("03/31/2026", "Accounts receivable", "Contoso Dental", "-300.00"),
        ("03/31/2026", "Accounts receivable", "Contoso Dental", "-200.00"),
    ]
    assert pay[0][8].endswith("[key k-pay]")
    assert [(f[4], f[6]) for f in refund] == [(CLEARING_ACCOUNT, "-50.00"), ("Accounts receivable", "50.00")]
    assert [(f[3], f[4], f[6]) for f in deposit] == [
        ("04/02/2026", BANK_ACCOUNT, "110.77"),
        ("04/02/2026", FEE_ACCOUNT, "4.23"),
        ("04/02/2026", CLEARING_ACCOUNT, "-100.00"),
        ("04/02/2026", CLEARING_ACCOUNT, "-25.00"),
        ("04/02/2026", CLEARING_ACCOUNT, "10.00"),
    ]


@pytest.mark.parametrize(
    ("currency", "amount", "split", "expected"),
    [
        ("USD", 123_457, (100_001, 23_456), ["1234.57", "-1000.01", "-234.56"]),
        ("JPY", 15_001, (10_000, 5_001), ["15001", "-10000", "-5001"]),
        ("KWD", 12_345, (10_001, 2_344), ["12.345", "-10.001", "-2.344"]),
    ],
)
def test_amounts_keep_the_currencys_own_decimals_exactly(tmp_path, currency, amount, split, expected):
    sink = JournalSink(tmp_path / "journal.iif", format="iif")
    sink.push_payment(_payment(currency, amount, split), key=f"k-{currency}")
    sink.push_deposit(_deposit(currency), key=f"d-{currency}")

    _, (pay, deposit) = _transactions(sink.path)

    assert _amounts(pay) == expected
    assert sum(Decimal(a) for a in _amounts(pay)) == 0
    bank = Decimal(_amounts(deposit)[0]).scaleb({"USD": 2, "JPY": 0, "KWD": 3}[currency])
    assert bank == _deposit(currency).amount_minor == 11_077
    assert sum(Decimal(a) for a in _amounts(deposit)) == 0


def test_a_key_already_in_the_file_writes_nothing_and_an_unbalanced_entry_writes_nothing(tmp_path):
    sink = JournalSink(tmp_path / "journal.iif", format="iif")
    for _ in range(3):
        sink.push_payment(_payment("USD", 50_000, (30_000, 20_000)), key="k1")
        sink.push_deposit(_deposit(), key="d1")
    before = sink.path.read_bytes()
    bad = _deposit()
    with pytest.raises(ValueError, match="do not add up"):
        sink.push_deposit(JournalDeposit(payout_id="po_2", arrival_on=bad.arrival_on, currency="USD",
                                         amount_minor=bad.amount_minor + 1, fee_minor=bad.fee_minor,
                                         lines=bad.lines), key="d2")
    with pytest.raises(iif.IifError, match="does not balance"):
        iif.append(sink.path, "k-odd", [
            {"entry_date": "2026-03-31", "account": "Bank", "debit": "1.00", "credit": ""},
            {"entry_date": "2026-03-31", "account": "Sales", "debit": "", "credit": "0.99"},
        ])

    _, txns = _transactions(sink.path)
    assert len(txns) == 2
    assert sink.path.read_bytes() == before
    assert iif.keys_in(before.decode()) == {"k1", "d1"}


def test_the_csv_deposit_balances_and_its_bank_line_is_the_payout(tmp_path):
    import csv

    sink = JournalSink(tmp_path / "journal.csv")
    sink.push_deposit(_deposit(), key="d1")
    sink.push_deposit(_deposit(), key="d1")
    with sink.path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    assert [(r["account"], r["debit"], r["credit"]) for r in rows] == [
        (BANK_ACCOUNT, "110.77", ""),
        (FEE_ACCOUNT, "4.23", ""),
        (CLEARING_ACCOUNT, "", "100.00"),
        (CLEARING_ACCOUNT, "", "25.00"),
        (CLEARING_ACCOUNT, "10.00", ""),
    ]
    assert {r["entry_key"] for r in rows} == {"d1"} and {r["entry_date"] for r in rows} == {"2026-04-02"}
    assert [r["payment_reference"] for r in rows[2:]] == ["tok1", "tok2", "tok2"]


def test_format_iif_in_the_config_makes_the_journal_an_iif_file(tmp_path, frozen_clock):
    cfg = make_config(tmp_path, extra='\n[accounting.journal]\nformat = "iif"\n')
    services = build_services(cfg, clock=frozen_clock)
    services.accounting.push_payment(_payment("USD", 50_000, (30_000, 20_000)), key="k1")

    assert cfg.journal_path == tmp_path / "journal.iif"
    assert cfg.journal_path.read_bytes().startswith(b"!TRNS\t")
    with pytest.raises(Exception, match=r"accounting\.journal\.format"):
        make_config(tmp_path, extra='\n[accounting.journal]\nformat = "qbx"\n')
