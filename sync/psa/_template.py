"""Skeleton of a PSA connector: copy to sync/psa/<kind>.py, fill in, register in sync/registry.py.

Checklist (connectwise.py is the worked example):
- settings dataclass in app/config.py (every field with doc=) and a section in config.example.toml;
- pure `*_from_api(raw) -> Remote*` functions raising RecordError with a specific reason;
- all HTTP through sync.http.HttpClient (it owns timeouts, retries, Retry-After and quiet logs);
- money through Money.from_vendor_number / from_decimal (or sync.psa.amounts), dates through
  parse_vendor_date;
- cursors through sync.sweep: pages of a sweep carry its position (resumable after a kill), the
  last page the change cursor; `invoice_ids()` + `supports_deletion_check` close deleted invoices;
- a loopback fake in tests/fakes/<kind>.py that checks requests against tests/specs (tests/fakes/_spec.py
  does the checking), and a world in tests/psa_worlds.py so tests/jobs/test_psa_intake.py runs on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from app.core.clock import Clock
from sync.base import Page, PaymentWriteBack, RecordError, Rejected, RemoteInvoice
from sync.http import HttpClient


def invoice_from_api(raw: Mapping[str, Any]) -> RemoteInvoice:
    """Map one vendor invoice. Raise RecordError("missing total") etc.; never return half a record."""
    raise RecordError("not implemented")


class TemplatePsa:
    kind = "template"  # same string in config, registry, DB `source` column and logs
    supports_payment_writeback = False  # True once record_payment is real and idempotent

    def __init__(self, settings: Any, http: HttpClient, clock: Clock) -> None:
        self._settings, self._http, self._clock = settings, http, clock

    def companies(self, cursor: str | None) -> Iterator[Page]:
        return iter(())

    def contacts(self, cursor: str | None) -> Iterator[Page]:
        return iter(())

    def invoices(self, cursor: str | None) -> Iterator[Page]:
        # One Page per vendor page. Map each record; a RecordError becomes Rejected, the page goes on.
        # Only move the cursor to a point where everything before it has been yielded: if pages do
        # not come in change order, keep the old cursor until the last page.
        for records in self._vendor_pages(cursor):
            items: list[Any] = []
            for raw in records:
                try:
                    items.append(invoice_from_api(raw))
                except RecordError as exc:
                    items.append(Rejected("invoice", str(raw.get("id", "")), str(exc), raw))
            yield Page(items, cursor)

    def record_payment(self, payment: PaymentWriteBack, *, key: str) -> str:
        # Look for a payment already carrying `key` first (a lost response must not pay twice),
        # then create it with `key` stored somewhere the vendor echoes back.
        raise NotImplementedError

    def _vendor_pages(self, cursor: str | None) -> Iterator[list[dict[str, Any]]]:
        return iter(())
