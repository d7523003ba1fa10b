"""CSV files a finance person opens in Excel: UTF-8 with a BOM, and no cell a spreadsheet runs.

A cell starting with = + - @ (or a tab or carriage return, which some spreadsheets skip before
reading a formula) is prefixed with an apostrophe, so "=HYPERLINK(...)" in a client name from
the PSA stays text (https://owasp.org/www-community/attacks/CSV_Injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def safe_cell(value: object) -> str:
    """The text of `value` as it goes in a cell, neutralised if a spreadsheet would run it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """The whole file: BOM, header, rows; every cell passed through `safe_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return (BOM + out.getvalue()).encode("utf-8")
