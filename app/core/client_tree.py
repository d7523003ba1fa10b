"""Parent and child clients: who rolls up into whom, from the PSA or set by the finance team.

A parent pays for its children (a holding company for its branches); the children stay
separate clients with their own invoices and contacts. Trees may nest (a parent of a parent)
up to MAX_DEPTH levels below the top; deeper links and cycles are refused with a message.
A parent chosen in the admin (`parent_set_by` = the admin) wins over the PSA until cleared.
Functions taking `db` that write expect the caller's `store.write()`.
"""

from __future__ import annotations

import logging

from sqlite_utils import Database

from app.core.audit import audit, raise_exception
from app.core.clock import Clock

log = logging.getLogger(__name__)
MAX_DEPTH = 3  # levels below the top client: parent -> child -> grandchild -> great-grandchild


class TreeError(ValueError):
    """A parent link that cannot be made; the message says why, for the finance team."""


def descendants(db: Database, client_id: int) -> list[int]:
    """Every client below `client_id` (children, their children ...), nearest first, then by name.

    UNION (not UNION ALL) and the depth bound keep a cycle already in the data from looping.
    """
    rows = db.execute(
        "WITH RECURSIVE tree(id, depth) AS (SELECT id, 0 FROM clients WHERE id = ? "
        "UNION SELECT c.id, t.depth + 1 FROM clients c JOIN tree t ON c.parent_id = t.id "
        "WHERE t.depth < ?) "
        "SELECT t.id FROM tree t JOIN clients c ON c.id = t.id WHERE t.id != ? "
        "GROUP BY t.id ORDER BY MIN(t.depth), c.name COLLATE NOCASE, t.id",
        (client_id, MAX_DEPTH, client_id),
    ).fetchall()
    return [int(r[0]) for r in rows]


def family(db: Database, client_id: int) -> list[int]:
    """`client_id` itself first, then its descendants: the clients a contact of it may see."""
    return [client_id, *descendants(db, client_id)]


def payable_family(db: Database, client_id: int) -> list[int]:
    """The family of `client_id` that it may pay for in one charge: those in its own MSP entity
    (a charge, its payout and its books never cross entities)."""
    ids = family(db, client_id)
    marks = ", ".join("?" * len(ids))
    same = {
        int(r[0])
        for r in db.execute(
            f"SELECT id FROM clients WHERE id IN ({marks}) AND entity_id = "
            "(SELECT entity_id FROM clients WHERE id = ?)",
            (*ids, client_id),
        ).fetchall()
    }
    return [i for i in ids if i in same]


def ancestors(db: Database, client_id: int) -> list[int]:
    """The parent, its parent ... of `client_id`, nearest first (stops at a cycle)."""
    out: list[int] = []
    current = client_id
    for _ in range(MAX_DEPTH + 2):
        row = db.execute("SELECT parent_id FROM clients WHERE id = ?", (current,)).fetchone()
        if row is None or row[0] is None or row[0] in out or row[0] == client_id:
            break
        out.append(int(row[0]))
        current = int(row[0])
    return out


def _height(db: Database, client_id: int) -> int:
    """How many levels sit below `client_id` (0 for a client without children)."""
    row = db.execute(
        "WITH RECURSIVE tree(id, depth) AS (SELECT id, 0 FROM clients WHERE id = ? "
        "UNION SELECT c.id, t.depth + 1 FROM clients c JOIN tree t ON c.parent_id = t.id "
        "WHERE t.depth <= ?) SELECT MAX(depth) FROM tree",
        (client_id, MAX_DEPTH + 1),
    ).fetchone()
    return int(row[0] or 0)


def check_parent(db: Database, client_id: int, parent_id: int | None) -> None:
    """Raise TreeError when `parent_id` cannot become the parent of `client_id`."""
    if parent_id is None:
        return
    names = dict(db.execute("SELECT id, name FROM clients WHERE id IN (?, ?)", (client_id, parent_id)))
    if parent_id not in names:
        raise TreeError("That parent company does not exist.")
    if parent_id == client_id:
        raise TreeError("A company cannot be its own parent.")
    if parent_id in descendants(db, client_id):
        raise TreeError(
            f"{names[parent_id]} is already below {names[client_id]}; making it the parent would make a loop."
        )
    depth = len(ancestors(db, parent_id)) + 1 + _height(db, client_id)
    if depth > MAX_DEPTH:
        raise TreeError(
            f"That would put companies {depth} levels below the top company; at most {MAX_DEPTH} "
            "levels are supported. Choose a parent higher up."
        )


def set_parent(db: Database, clock: Clock, client_id: int, parent_id: int | None, *, actor: str) -> bool:
    """Set (or with None clear) the parent of `client_id` as `actor`; audited. False if unchanged.

    Raises TreeError (no such client, itself, a loop, too deep). A parent set here is kept when
    the PSA says otherwise; clearing it hands the link back to the PSA at its next sync.
    """
    row = db.execute(
        "SELECT parent_id, parent_remote_id, parent_set_by, source FROM clients WHERE id = ?", (client_id,)
    ).fetchone()
    if row is None:
        raise TreeError("That company does not exist.")
    check_parent(db, client_id, parent_id)
    if parent_id is None:
        # Back to what the PSA says (if that parent is here and still makes a valid tree).
        psa_parent = _psa_parent(db, row["source"], row["parent_remote_id"])
        try:
            check_parent(db, client_id, psa_parent)
        except TreeError:
            psa_parent = None
        new_parent, set_by = psa_parent, None
    else:
        new_parent, set_by = parent_id, actor
    if new_parent == row["parent_id"] and (set_by is None) == (row["parent_set_by"] is None):
        return False
    db.execute(
        "UPDATE clients SET parent_id = ?, parent_set_by = ? WHERE id = ?", (new_parent, set_by, client_id)
    )
    audit(
        db,
        clock,
        actor=actor,
        action="client.parent_set" if parent_id else "client.parent_cleared",
        target=f"client:{client_id}",
        detail={"from": row["parent_id"], "to": new_parent},
    )
    return True


def _psa_parent(db: Database, source: str, parent_remote_id: str | None) -> int | None:
    if not parent_remote_id:
        return None
    row = db.execute(
        "SELECT id FROM clients WHERE source = ? AND remote_id = ?", (source, parent_remote_id)
    ).fetchone()
    return None if row is None else int(row[0])


def link_from_psa(
    db: Database, clock: Clock, source: str, remote_id: str, parent_remote_id: str | None
) -> None:
    """Apply the parent the PSA names for company (`source`, `remote_id`), as intake sees it.

    Remembers `parent_remote_id` so a child synced before its parent is linked when the parent
    arrives (children waiting for this company are linked here too). A parent set in the admin
    is left alone. A link that would loop or nest too deep is not made and opens an exception.
    """
    me = db.execute(
        "SELECT id, parent_set_by FROM clients WHERE source = ? AND remote_id = ?", (source, remote_id)
    ).fetchone()
    if me is None:
        return
    db.execute("UPDATE clients SET parent_remote_id = ? WHERE id = ?", (parent_remote_id, me["id"]))
    waiting = db.execute(
        "SELECT id FROM clients WHERE source = ? AND parent_remote_id = ? AND parent_set_by IS NULL "
        "AND (parent_id IS NULL OR parent_id != ?)",
        (source, remote_id, me["id"]),
    ).fetchall()
    for child in waiting:
        _link(db, clock, int(child["id"]), int(me["id"]))
    if me["parent_set_by"] is not None:
        return
    _link(db, clock, int(me["id"]), _psa_parent(db, source, parent_remote_id))


def _link(db: Database, clock: Clock, client_id: int, parent_id: int | None) -> None:
    try:
        check_parent(db, client_id, parent_id)
    except TreeError as exc:
        log.warning("client %s: PSA parent %s not linked: %s", client_id, parent_id, exc)
        raise_exception(
            db,
            clock,
            kind="parent_link",
            ref=f"client:{client_id}",
            summary=f"The PSA names a parent company that cannot be used: {exc}",
        )
        db.execute("UPDATE clients SET parent_id = NULL WHERE id = ?", (client_id,))
        return
    db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (parent_id, client_id))
