"""Computed invoice-list pages and each client's book of invoices (app.web.invoice_list), kept per
client until that client's data changes.

`client_data_versions` (migration 0005) holds a counter per client that triggers move on every
write the list shows (invoice updates, allocations, payment status, line disputes, approvals); the
number of the client's invoices covers new ones. A page is stored under (database, client, that
version, filters, local date, approval thresholds), so a change by
anyone, in any process, makes the next request compute afresh; nothing is ever invalidated by
hand. Reading the version is one primary-key lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from app.core.store import Store

T = TypeVar("T")
MAX_ENTRIES = 512


def client_version(store: Store, client_id: int) -> tuple[int, int]:
    """(change counter, number of invoices): new invoices move the count, everything else the counter."""
    row = store.one(
        "SELECT (SELECT version FROM client_data_versions WHERE client_id = :c), "
        "(SELECT COUNT(*) FROM invoices WHERE client_id = :c)",
        {"c": client_id},
    )
    return (int(row[0] or 0), int(row[1] or 0))


class LruCache:
    """A small thread-safe LRU map; values are computed outside the lock (a race computes twice)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._max:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


pages = LruCache()
tables = LruCache()
options = LruCache(128)
# Whole invoice books of a client (app.web.invoice_list._Book, ~1.5 KB an invoice): a few clients.
books = LruCache(8)
