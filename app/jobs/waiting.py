"""Quarantined PSA records that wait for something other than a change at the source: their
company (an invoice or contact sent before its company could be stored) or their invoice number
(held by another invoice that was since deleted or renumbered, or swapped across two pages).
Fixing those does not change the waiting record at the PSA, so an incremental poll would not
read it again; poll_psa reads these again by id (or, for contacts, in a sweep of all of them).
"""

from __future__ import annotations

from app.jobs.intake import NUMBER_WAITS, UNKNOWN_COMPANY
from app.services import Services

# At most this many quarantined invoices are read again a poll (one request each at some PSAs).
REREAD_LIMIT = 500


def for_company(
    services: Services, connector: str, obj: str, skip: set[str], *, limit: int = REREAD_LIMIT
) -> list[str]:
    """Records of `obj` quarantined because their company was unknown, whose company has arrived.

    An incremental sweep reads a record only when it changes, and fixing its company at the PSA
    does not change it: without this it would wait for the next full sweep.
    """
    before, after = UNKNOWN_COMPANY[obj].split("{}")
    rows = services.store.all(
        # The company id cut out of the reason finds its client by the (source, remote_id) index.
        "SELECT q.remote_id FROM quarantine q JOIN clients c ON c.source = q.source "
        "AND c.remote_id = substr(q.reason, length(:before) + 1, "
        "length(q.reason) - length(:before) - length(:after)) "
        "WHERE q.source = :source AND q.object = :obj AND q.resolved_at IS NULL "
        "AND q.reason = :before || c.remote_id || :after ORDER BY q.id LIMIT :limit",
        {"before": before, "after": after, "source": connector, "obj": obj, "limit": limit + len(skip)},
    )
    return [r[0] for r in rows if r[0] not in skip][:limit]


def _number_wait(reason: str) -> tuple[str, str] | None:
    """(number, holder's remote id) of a reason saying an invoice waits for its number, else None.

    Read from the right: the holder is an id, while the number is the PSA's text and may hold
    any words, those of the reason included."""
    for template in NUMBER_WAITS:
        before, middle, after = template.split("{}")
        if reason.startswith(before) and reason.endswith(after) and middle in reason:
            number, _, holder = reason[len(before) : len(reason) - len(after)].rpartition(middle)
            if number and holder and " " not in holder:
                return number, holder
    return None


_NUMBER_WAIT_SQL = " OR ".join(
    "reason LIKE '" + template.replace("{}", "%").replace("'", "''") + "'" for template in NUMBER_WAITS
)


def for_number(
    services: Services, connector: str, *, limit: int = REREAD_LIMIT
) -> tuple[list[str], dict[str, str]]:
    """Invoices quarantined because another invoice had their number, to read again: those whose
    number no open invoice has now (the other was deleted or renumbered, which does not change
    the waiting invoice at the source), and invoices that wait for each other's numbers in a ring
    (numbers the PSA swapped across two pages), read side by side so that one page swaps them.

    Returns the ids in the order to read them, and the reason of each one read as part of a ring.
    """
    rows = services.store.all(
        f"SELECT remote_id, reason FROM quarantine WHERE source = ? AND object = 'invoice' "
        f"AND resolved_at IS NULL AND ({_NUMBER_WAIT_SQL}) ORDER BY id",
        (connector,),
    )
    reasons = {r[0]: r[1] for r in rows}
    waits = {rid: wait for rid, reason in reasons.items() if (wait := _number_wait(reason))}
    order: list[str] = []
    rings: dict[str, str] = {}
    for remote_id, (number, _holder) in waits.items():
        if len(order) >= limit:
            break
        if remote_id in rings:
            continue
        ring = _ring(waits, remote_id)
        if ring:
            order += ring
            rings.update((rid, reasons[rid]) for rid in ring)
        elif not services.store.one(
            "SELECT 1 FROM invoices WHERE source = ? AND number = ? AND status != 'deleted' "
            "AND remote_id != ?",
            (connector, number, remote_id),
        ):
            order.append(remote_id)
    return order, rings


def _ring(waits: dict[str, tuple[str, str]], start: str, *, longest: int = 20) -> list[str]:
    """The invoices that wait, one for the next, until the last waits for `start`; else []."""
    ring = [start]
    holder = waits[start][1]
    while holder in waits and holder not in ring and len(ring) < longest:
        ring.append(holder)
        holder = waits[holder][1]
    return ring if holder == start and len(ring) > 1 else []


def still_waiting(services: Services, connector: str, before: dict[str, str]) -> None:
    """Invoices read side by side with those holding their numbers that wait as they did before
    are not read again every poll: only once one of them changes at the source (which writes its
    reason anew)."""
    with services.store.write() as db:
        for remote_id, reason in before.items():
            db.execute(
                "UPDATE quarantine SET reason = reason || '; read again with the invoice holding its "
                "number, still waiting' WHERE source = ? AND object = 'invoice' AND remote_id = ? "
                "AND resolved_at IS NULL AND reason = ?",
                (connector, remote_id, reason),
            )


# What a record waited for (not_listed_any_more's `once`): the reasons it was quarantined with.
COMPANY_ARRIVED = "once the company arrived"
NUMBER_FREE = "once the number was free"
_REASONS = {COMPANY_ARRIVED: None, NUMBER_FREE: NUMBER_WAITS}


def not_listed_any_more(services: Services, connector: str, obj: str, ids: list[str], *, once: str) -> None:
    """Records read again `once` what they waited for arrived, that the PSA no longer has, keep
    their quarantine row with a reason saying so (and are not read again every poll)."""
    templates = _REASONS[once] or (UNKNOWN_COMPANY[obj],)
    with services.store.write() as db:
        for template in templates:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                db.execute(
                    "UPDATE quarantine SET reason = reason || ? WHERE source = ? AND object = ? "
                    "AND resolved_at IS NULL AND reason LIKE ? "
                    f"AND remote_id IN ({','.join('?' * len(chunk))})",
                    (f"; read again {once}, the PSA no longer has it", connector, obj,
                     template.replace("{}", "%"), *chunk),
                )
