"""The admins of this Cashloop (owners only): who they are, their two-factor state, unlocking."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, url_for

from app.core.admin_auth import unlock
from app.core.clock import to_db
from app.web import services
from app.web.admin import bp, queries
from app.web.admin.guard import current_admin, owner_only


@bp.get("/admins")
@owner_only
def admins() -> Any:
    return render_template(
        "admin/admins.html", rows=queries.admins(services().store), now=to_db(services().clock.utc_now())
    )


@bp.post("/admins/<int:admin_id>/unlock")
@owner_only
def unlock_admin(admin_id: int) -> Any:
    svc = services()
    try:
        with svc.store.write() as db:
            unlock(db, svc.clock, admin_id, actor=current_admin().actor)
    except LookupError:
        flash("No such admin.", "error")
    else:
        flash("Unlocked.", "info")
    return redirect(url_for("admin.admins"))
