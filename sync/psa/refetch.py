"""Records read again by id (`refresh`), for connectors whose API reads one invoice at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sync.base import ConnectorError, Page

PAGE = 50  # records read one by one, stored this many to a transaction


def by_id(
    remote_ids: Iterable[str], get: Callable[[str], Any], mapper: Callable[[Any], Any]
) -> Iterator[Page]:
    """Pages of mapper(get(id)) for each numeric id; an id the PSA answers 404 for (deleted there)
    is left out, any other error ends the read."""
    items: list[Any] = []
    for remote_id in remote_ids:
        if not remote_id.isdigit():
            continue
        try:
            raw = get(remote_id)
        except ConnectorError as exc:
            if exc.status == 404:
                continue
            raise
        items.append(mapper(raw))
        if len(items) == PAGE:
            yield Page(items, None)
            items = []
    if items:
        yield Page(items, None)
