"""The journal as QuickBooks Desktop IIF: the same balanced entries as the CSV, importable as-is.

An IIF file is tab-separated. It opens with three header rows naming the columns of the
transaction lines (!TRNS, !SPL, !ENDTRNS); each entry is then one TRNS line (its first posting),
one SPL line per other posting and an ENDTRNS line. An amount is positive for a debit and
negative for a credit, written with the currency's own decimals; the lines of one entry sum to
zero, which QuickBooks requires. Dates are MM/DD/YYYY. The entry's key is kept at the end of the
TRNS line's memo ("[key ...]"), so a repeated key writes nothing, as in the CSV.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

TRNS_TYPE = "GENERAL JOURNAL"
FIELDS = ["TRNSID", "TRNSTYPE", "DATE", "ACCNT", "NAME", "AMOUNT", "DOCNUM", "MEMO"]
HEADER = [
    "\t".join(["!TRNS", *FIELDS]),
    "\t".join(["!SPL", "SPLID", *FIELDS[1:]]),
    "!ENDTRNS",
]
NEWLINE = "\r\n"  # QuickBooks Desktop runs on Windows
_KEY = re.compile(r"\[key ([^\]]+)\]$")


class IifError(ValueError):
    """An entry that cannot be written as IIF (it does not balance, or has no lines)."""


def _text(value: str) -> str:
    # Tabs and line breaks would start a new field or line; quotes confuse the importer.
    return re.sub(r"[\t\r\n]+", " ", value).replace('"', "").strip()


def _amount(row: Mapping[str, str]) -> Decimal:
    debit, credit = row.get("debit") or "", row.get("credit") or ""
    if bool(debit) == bool(credit):
        raise IifError(f"a journal line needs exactly one of debit and credit: {dict(row)}")
    return Decimal(debit) if debit else -Decimal(credit)


def _date(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%m/%d/%Y")


def entry_text(key: str, rows: Sequence[Mapping[str, str]]) -> str:
    """One entry's TRNS, SPL and ENDTRNS lines from journal rows (the CSV's columns)."""
    if not rows:
        raise IifError(f"entry {key} has no lines")
    amounts = [_amount(r) for r in rows]
    if sum(amounts) != 0:
        raise IifError(f"entry {key} does not balance: its lines sum to {sum(amounts)}")
    out = []
    for i, (row, amount) in enumerate(zip(rows, amounts, strict=True)):
        memo = _text(row.get("memo", ""))
        if i == 0:
            memo = f"{memo} [key {_text(key)}]".strip()
        out.append("\t".join([
            "TRNS" if i == 0 else "SPL",
            "",
            TRNS_TYPE,
            _date(row["entry_date"]),
            _text(row["account"]),
            _text(row.get("customer", "")),
            str(amount),
            _text(row.get("payment_reference", "")),
            memo,
        ]))
    out.append("ENDTRNS")
    return NEWLINE.join(out) + NEWLINE


def keys_in(text: str) -> set[str]:
    """The entry keys already written to an IIF file's text."""
    found = set()
    for line in text.splitlines():
        if line.startswith("TRNS\t"):
            m = _KEY.search(line.rsplit("\t", 1)[-1])
            if m:
                found.add(m.group(1))
    return found


def append(path: Path, key: str, rows: Sequence[Mapping[str, str]]) -> str:
    """Append the entry unless `key` is already in the file; returns `key`. Raises IifError."""
    text = entry_text(key, rows)  # checked before the file is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8", newline="") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        existing = fh.read()
        if _text(key) in keys_in(existing):
            return key
        if not existing:
            fh.write(NEWLINE.join(HEADER) + NEWLINE)
        fh.write(text)
        fh.flush()
    return key
