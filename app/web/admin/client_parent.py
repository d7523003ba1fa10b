"""A client's parent company, set or cleared by the finance team (audited, no loops, bounded depth).

The PSA's parent (ConnectWise bill-to/parent company, Autotask parent company, Halo client to
invoice) applies until a person chooses one here; clearing the choice hands the link back to the PSA.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for

from app.core import client_tree
from app.web import services
from app.web.admin import bp, queries
from app.web.admin.guard import current_admin

MAX_CHOICES = 1000  # beyond this the form takes the parent's client number instead of a list


@bp.app_template_global()
def client_family(client_id: int) -> dict[str, Any]:
    """What the client page shows about the tree: parent, children and the clients it could join."""
    store = services().store
    row = store.one("SELECT parent_id, parent_set_by FROM clients WHERE id = ?", (client_id,))
    if row is None:
        return {}
    below = set(client_tree.descendants(store.db, client_id))
    count = int(store.scalar("SELECT COUNT(*) FROM clients") or 0)
    choices = (
        []
        if count > MAX_CHOICES
        else [
            r
            for r in store.all("SELECT id, name FROM clients ORDER BY name COLLATE NOCASE, id")
            if r["id"] != client_id and r["id"] not in below
        ]
    )
    return {
        "parent": store.one("SELECT id, name FROM clients WHERE id = ?", (row["parent_id"],))
        if row["parent_id"]
        else None,
        "set_by": row["parent_set_by"],
        "children": store.all(
            "SELECT id, name FROM clients WHERE parent_id = ? ORDER BY name COLLATE NOCASE", (client_id,)
        ),
        "choices": choices,
    }


@bp.post("/clients/<int:client_id>/parent")
def set_client_parent(client_id: int) -> Any:
    svc, admin = services(), current_admin()
    if queries.client(svc.store, client_id) is None:
        abort(404)
    text = request.form.get("parent", "").strip()
    back = url_for("admin.client", client_id=client_id) + "#parent"
    if text and not text.isdigit():
        flash("Choose the parent company from the list (or enter its client number).", "error")
        return redirect(back)
    try:
        with svc.store.write() as db:
            changed = client_tree.set_parent(
                db, svc.clock, client_id, int(text) if text else None, actor=admin.actor
            )
    except client_tree.TreeError as exc:
        flash(str(exc), "error")
        return redirect(back)
    if not changed:
        flash("Nothing changed.", "info")
    else:
        flash("Parent company saved." if text else "Parent cleared; the PSA's parent applies again.", "info")
    return redirect(back)
