"""A folder of exported records as a PSA (the format is in FILES_FORMAT.md next to this module).

JSON files hold ConnectWise REST records and go through the ConnectWise mapping; the CSV files are
Cashloop's own flat layout. Everything streams, so a 100k-invoice export is read record by record
and handed over in pages of PAGE_SIZE.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from app.core.clock import Clock, parse_vendor_date, parse_vendor_time, to_db
from app.core.money import Money, MoneyError, check_currency
from sync.base import (
    ConnectorError,
    InvoiceKind,
    Page,
    PaymentWriteBack,
    RecordError,
    Rejected,
    RemoteCompany,
    RemoteContact,
    RemoteInvoice,
    RemoteLine,
)
from sync.psa.connectwise import (
    MappingRules,
    company_from_api,
    contact_from_api,
    invoice_from_api,
    last_updated,
    make_line,
    map_or_reject,
)

if TYPE_CHECKING:
    from app.config import FilesSettings

PAGE_SIZE = 500
PAYMENTS_FILE = "payments.out.jsonl"
CURSOR_PREFIX = "files1:"
KINDS = ("agreement", "project", "time_and_materials", "product", "credit_memo", "other")
# Invoice-level columns: the first non-empty value in an invoice's rows counts; others must agree.
_HEADER_COLUMNS = (
    "company_id",
    "company_name",
    "invoice_date",
    "due_date",
    "currency",
    "kind",
    "status",
    "tax",
    "amount_paid",
)
_REQUIRED_INVOICE_COLUMNS = ("invoice_number", "company_id", "invoice_date", "due_date", "line_description")
_REQUIRED_CONTACT_COLUMNS = ("company_id", "email")
_YES, _NO = frozenset({"yes", "y", "true", "1"}), frozenset({"no", "n", "false", "0", ""})

Reader = Callable[[Path, Mapping[str, Any], dict[str, Any]], Iterator[Any]]


class FilesSource:
    """PsaSource over a folder. Raises ConnectorError for an unreadable file (bad records are Rejected)."""

    kind = "files"
    supports_payment_writeback = True
    supports_payment_reversal = True  # a refund or dispute is written as a line with a negative amount

    def __init__(self, settings: FilesSettings, clock: Clock) -> None:
        self._folder = Path(settings.path)
        self._rules = MappingRules.from_settings(settings)
        self._clock = clock

    def companies(self, cursor: str | None) -> Iterator[Page]:
        """companies.json records changed since the cursor, then companies first named in invoices.csv."""
        return self._poll(
            cursor,
            [
                ("companies.json", self._json("company", company_from_api)),
                ("invoices.csv", self._csv_companies),
            ],
        )

    def contacts(self, cursor: str | None) -> Iterator[Page]:
        """contacts.json records changed since the cursor, then every row of a changed contacts.csv."""
        return self._poll(
            cursor,
            [
                ("contacts.json", self._json("contact", contact_from_api)),
                ("contacts.csv", self._csv_contacts),
            ],
        )

    def invoices(self, cursor: str | None) -> Iterator[Page]:
        """invoices.json records changed since the cursor, then every invoice of a changed invoices.csv."""
        return self._poll(
            cursor,
            [
                ("invoices.json", self._json("invoice", invoice_from_api)),
                ("invoices.csv", self._csv_invoices),
            ],
        )

    def record_payment(self, payment: PaymentWriteBack, *, key: str) -> str:
        """Append one line to payments.out.jsonl; returns `key`. Idempotent: a key already there is not
        written again. Raises ConnectorError (PermissionError is not retryable, other I/O errors are)."""
        line = {
            "key": key,
            "invoice_remote_id": payment.invoice_remote_id,
            "amount": str(Money(payment.amount_minor, payment.currency).to_decimal()),
            "currency": payment.currency.upper(),
            "paid_on": payment.paid_on.isoformat(),
            "reference": payment.reference,
            "written_at": to_db(self._clock.utc_now()),
        }
        path = self._folder / PAYMENTS_FILE
        try:
            with path.open("a+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # two outbox workers must not both miss and append
                fh.seek(0)
                last = b""
                for raw in fh:
                    last = raw
                    if key.encode() in raw and _line_key(raw) == key:
                        return key
                # A torn last line (crash mid-write) must not swallow ours.
                gap = b"\n" if last and not last.endswith(b"\n") else b""
                fh.write(gap + json.dumps(line, ensure_ascii=False).encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise ConnectorError(
                f"{path}: cannot record payment: {exc.strerror or exc}",
                retryable=not isinstance(exc, PermissionError),
            ) from exc
        return key

    # ---- polling --------------------------------------------------------------------------------

    def _poll(self, cursor: str | None, sources: list[tuple[str, Reader]]) -> Iterator[Page]:
        """Read each source file that changed since `cursor`, in pages of PAGE_SIZE.

        The cursor is per file ({name: {sig, max | sha256}}); a file's new state joins it only
        after the file's last record has been paged out, so a crash mid-file re-reads that file.
        Unchanged files (same mtime and size) are not opened: an idle poll is a few stat() calls.
        """
        before = load_cursor(cursor)
        committed = dict(before)
        buffer: list[Any] = []
        for name, reader in sources:
            path = self._folder / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                committed.pop(name, None)
                continue
            # Taken before reading, so a write that lands during the read shows up next poll.
            sig = f"{stat.st_mtime_ns}:{stat.st_size}"
            old = before.get(name, {})
            if old.get("sig") == sig:
                continue
            new = {"sig": sig}
            try:
                for item in reader(path, old, new):
                    buffer.append(item)
                    if len(buffer) >= PAGE_SIZE:
                        yield Page(buffer, dump_cursor(committed))
                        buffer = []
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start]
                raise ConnectorError(
                    f"{name}: not UTF-8 text (byte {exc.start} is {bad:#x}); save the export as UTF-8",
                    retryable=False,
                ) from exc
            except csv.Error as exc:
                raise ConnectorError(f"{name}: cannot read it as CSV: {exc}", retryable=False) from exc
            committed[name] = new
        if buffer or committed != before:
            yield Page(buffer, dump_cursor(committed))

    def _json(self, obj: str, mapper: Callable[..., Any]) -> Reader:
        def read(path: Path, old: Mapping[str, Any], new: dict[str, Any]) -> Iterator[Any]:
            since = _time(old.get("max"))
            newest = since
            for raw in iter_json_array(path):
                seen = last_updated(raw) if isinstance(raw, dict) else None
                if seen and since and seen <= since:
                    continue  # unchanged since the last read; records without lastUpdated always count
                if seen and (newest is None or seen > newest):
                    newest = seen
                yield map_or_reject(obj, mapper, raw, self._rules)
            new["max"] = newest.isoformat() if newest else None

        return read

    def _csv_companies(self, path: Path, old: Mapping[str, Any], new: dict[str, Any]) -> Iterator[Any]:
        if not _content_changed(path, old, new):
            return
        known = self._json_ids("companies.json")
        nameless: dict[str, int] = {}  # company_id -> first row, until some row names the company
        for n, row in _csv_rows(path, ("company_id",)):
            company_id, name = row.get("company_id", ""), row.get("company_name", "")
            if not company_id or company_id in known:
                continue
            if not name:
                nameless.setdefault(company_id, n)
                continue
            known.add(company_id)
            nameless.pop(company_id, None)
            yield RemoteCompany(remote_id=company_id, name=name, raw={"source": path.name, "row": n})
        for company_id, n in nameless.items():
            yield Rejected(
                "company",
                company_id,
                f"row {n}: company {company_id} is not in companies.json and no row gives its company_name",
                {"source": path.name, "row": n},
            )

    def _csv_contacts(self, path: Path, old: Mapping[str, Any], new: dict[str, Any]) -> Iterator[Any]:
        if not _content_changed(path, old, new):
            return
        for n, row in _csv_rows(path, _REQUIRED_CONTACT_COLUMNS):
            try:
                yield csv_contact(n, row)
            except RecordError as exc:
                remote_id = row.get("contact_id") or f"{path.name}#row{n}"
                yield Rejected("contact", remote_id, str(exc), {"source": path.name, "row": n, **row})

    def _csv_invoices(self, path: Path, old: Mapping[str, Any], new: dict[str, Any]) -> Iterator[Any]:
        if not _content_changed(path, old, new):
            return
        scattered = _scattered_numbers(path)
        reported: set[str] = set()
        for number, rows in _invoice_groups(path):
            raw = {"source": path.name, "rows": [{"row": n, **row} for n, row in rows]}
            if not number:
                n = rows[0][0]
                yield Rejected("invoice", f"{path.name}#row{n}", f"row {n}: missing invoice_number", raw)
            elif number in scattered:
                if number not in reported:
                    reported.add(number)
                    yield Rejected(
                        "invoice",
                        number,
                        f"row {rows[0][0]}: rows of invoice {number} are not "
                        "next to each other; sort the file by invoice_number",
                        raw,
                    )
            else:
                try:
                    yield csv_invoice(number, rows, self._rules)
                except RecordError as exc:
                    yield Rejected("invoice", number, str(exc), raw)

    def _json_ids(self, name: str) -> set[str]:
        path = self._folder / name
        if not path.exists():
            return set()
        return {
            str(r["id"]) for r in iter_json_array(path) if isinstance(r, dict) and r.get("id") is not None
        }


# ---- CSV rows to value types (pure) ------------------------------------------------------------


def csv_contact(n: int, row: Mapping[str, str]) -> RemoteContact:
    """One contacts.csv row (numbered as a spreadsheet shows it); raises RecordError."""
    company_id, email = row.get("company_id", ""), row.get("email", "")
    if not company_id:
        raise RecordError(f"row {n}: missing company_id")
    if "@" not in email:
        raise RecordError(f"row {n}: missing or invalid email {email!r}")
    billing = row.get("billing", "").lower()
    if billing not in _YES | _NO:
        raise RecordError(f"row {n}: billing must be yes or no, got {row.get('billing')!r}")
    return RemoteContact(
        remote_id=row.get("contact_id") or f"{company_id}:{email.lower()}",
        company_remote_id=company_id,
        email=email,
        first_name=row.get("first_name", ""),
        last_name=row.get("last_name", ""),
        is_billing=billing in _YES,
        raw={"source": "contacts.csv", "row": n, **row},
    )


def csv_invoice(number: str, rows: list[tuple[int, dict[str, str]]], rules: MappingRules) -> RemoteInvoice:
    """One invoice from its consecutive invoices.csv rows; raises RecordError naming row numbers."""
    problems: list[str] = []
    head, where = _invoice_header(rows, problems)
    first = rows[0][0]

    def at(column: str) -> int:  # the row a header value came from, for the reason text
        return where.get(column, first)

    if not head.get("company_id"):
        problems.append(f"row {first}: missing company_id")
    currency = rules.currency
    if head.get("currency"):
        try:
            currency = check_currency(head["currency"])
        except MoneyError:
            problems.append(f"row {at('currency')}: unknown currency {head['currency']!r}")
    dates = {}
    for column in ("invoice_date", "due_date"):
        try:
            dates[column] = parse_vendor_date(head.get(column, ""))
        except ValueError:
            value = head.get(column)
            problems.append(
                f"row {at(column)}: unparseable {column} {value!r} (use YYYY-MM-DD)"
                if value
                else f"row {first}: missing {column}"
            )
    kind = head.get("kind", "").lower()
    if kind and kind not in KINDS:
        problems.append(f"row {at('kind')}: kind must be one of {', '.join(KINDS)}, got {head['kind']!r}")
    lines: list[RemoteLine] = []
    for n, row in rows:
        try:
            lines.append(
                make_line(
                    description=row.get("line_description"),
                    quantity=row.get("quantity"),
                    unit_price=row.get("unit_price"),
                    amount=row.get("line_amount"),
                    currency=currency,
                    where=f"row {n}",
                    refs=row,
                )
            )
        except RecordError as exc:
            problems.append(str(exc))
    amounts = {}
    for column in ("tax", "amount_paid"):
        try:
            amounts[column] = Money.from_decimal(head.get(column) or "0", currency).amount_minor
        except MoneyError as exc:
            problems.append(f"row {at(column)}: {column}: {exc}")
    if problems:
        raise RecordError("; ".join(problems))
    refs = {
        k: next((getattr(line, k) for line in lines if getattr(line, k)), None)
        for k in ("agreement", "project", "phase", "ticket")
    }
    subtotal = sum(line.amount_minor for line in lines)
    status = head.get("status", "").lower()
    return RemoteInvoice(
        remote_id=number,
        number=number,
        company_remote_id=head["company_id"],
        kind=cast(InvoiceKind, kind or _kind_from_refs(refs)),
        currency=currency,
        issued_on=dates["invoice_date"],
        due_on=dates["due_date"],
        subtotal_minor=subtotal,
        tax_minor=amounts["tax"],
        total_minor=subtotal + amounts["tax"],
        paid_minor=amounts["amount_paid"],
        lines=tuple(lines),
        is_void=status in rules.void_statuses,
        is_approved=status not in rules.unapproved_statuses,
        raw={"source": "invoices.csv", "rows": [{"row": n, **row} for n, row in rows]},
        **refs,
    )


def _invoice_header(
    rows: list[tuple[int, dict[str, str]]], problems: list[str]
) -> tuple[dict[str, str], dict[str, int]]:
    head: dict[str, str] = {}
    where: dict[str, int] = {}
    for n, row in rows:
        for column in _HEADER_COLUMNS:
            value = row.get(column, "")
            if not value:
                continue
            if column not in head:
                head[column], where[column] = value, n
            elif value != head[column]:
                problems.append(
                    f"row {n}: {column} {value!r} differs from {head[column]!r} in row {where[column]}"
                )
    return head, where


def _kind_from_refs(refs: Mapping[str, str | None]) -> str:
    if refs.get("agreement"):
        return "agreement"
    if refs.get("project") or refs.get("phase"):
        return "project"
    if refs.get("ticket"):
        return "time_and_materials"
    return "other"


# ---- streaming readers -------------------------------------------------------------------------


def iter_json_array(path: Path, chunk: int = 1 << 20) -> Iterator[Any]:
    """The elements of a top-level JSON array, one at a time, without loading the whole file.

    Raises ConnectorError (retryable: a half-written export is usually complete by the next poll).
    """
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8-sig") as fh:
        buf, pos, eof = "", 0, False

        def more() -> bool:
            nonlocal buf, pos, eof
            data = fh.read(chunk)
            buf, pos, eof = buf[pos:] + data, 0, not data
            return bool(data)

        def next_char() -> str:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not more():
                    return buf[pos] if pos < len(buf) else ""

        def fail(what: str) -> ConnectorError:
            return ConnectorError(
                f"{path.name}: {what} (write the file elsewhere and rename it into place)", retryable=True
            )

        if next_char() != "[":
            raise fail("not a JSON array")
        pos += 1
        if next_char() == "]":
            return
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                complete = end < len(buf) or eof  # a number at the buffer's end may continue
            except json.JSONDecodeError:
                complete = False
            if not complete:
                if not more():
                    raise fail("not valid JSON (truncated?)")
                continue
            yield value
            pos = end
            sep = next_char()
            pos += 1
            if sep == "]":
                if next_char():
                    raise fail("text after the closing ]")
                return
            if sep != ",":
                raise fail(f"expected , or ] but found {sep!r}")
            next_char()


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, {column: stripped value}) with the header as row 1; fully empty rows are skipped."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ConnectorError(f"{path.name}: missing column(s) {', '.join(missing)}", retryable=False)
        for n, values in enumerate(reader, start=2):
            if any(v.strip() for v in values):
                yield n, {h: v.strip() for h, v in zip(header, values, strict=False) if h}


def _invoice_groups(path: Path) -> Iterator[tuple[str, list[tuple[int, dict[str, str]]]]]:
    """Consecutive rows sharing an invoice_number; a row without one is a group of its own."""
    number: str | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for n, row in _csv_rows(path, _REQUIRED_INVOICE_COLUMNS):
        this = row.get("invoice_number", "")
        if rows and (this != number or not this):
            yield number or "", rows
            rows = []
        number = this
        rows.append((n, row))
    if rows:
        yield number or "", rows


def _scattered_numbers(path: Path) -> set[str]:
    """Invoice numbers whose rows are not all together (a pre-pass, so such an invoice is never half-read)."""
    finished: set[str] = set()
    scattered: set[str] = set()
    current = None
    for _, row in _csv_rows(path, _REQUIRED_INVOICE_COLUMNS):
        this = row.get("invoice_number", "")
        if this and this != current:
            if this in finished:
                scattered.add(this)
            if current:
                finished.add(current)
            current = this
    return scattered


def _content_changed(path: Path, old: Mapping[str, Any], new: dict[str, Any]) -> bool:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    new["sha256"] = digest.hexdigest()
    return new["sha256"] != old.get("sha256")


# ---- cursor ------------------------------------------------------------------------------------


def load_cursor(cursor: str | None) -> dict[str, dict[str, Any]]:
    """The per-file state inside a files cursor; raises ConnectorError (not retryable) if unreadable."""
    if not cursor:
        return {}
    try:
        if not cursor.startswith(CURSOR_PREFIX):
            raise ValueError(cursor)
        state = json.loads(cursor[len(CURSOR_PREFIX) :])
        if not isinstance(state, dict):
            raise ValueError(cursor)
    except ValueError:
        raise ConnectorError(f"unreadable files cursor {cursor[:40]!r}", retryable=False) from None
    return state


def dump_cursor(state: Mapping[str, Any]) -> str:
    return CURSOR_PREFIX + json.dumps(state, sort_keys=True, separators=(",", ":"))


def _time(text: Any) -> datetime | None:
    return parse_vendor_time(text) if isinstance(text, str) and text else None


def _line_key(raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value.get("key") if isinstance(value, dict) else None
