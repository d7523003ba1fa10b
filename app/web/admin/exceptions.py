"""The exceptions queue: everything a person must decide, each with its cause and its action."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from app.core.resolutions import ResolutionError, dismiss_quarantine, resolve_exception, retry_outbox
from app.web import services
from app.web.admin import bp, entity_filter, entity_scope
from app.web.admin.guard import current_admin
from app.web.admin.queries import exceptions_queue


@bp.get("/exceptions")
def exceptions() -> Any:
    store = services().store
    items = entity_scope.queue_of(store, exceptions_queue(store), entity_filter.selected_id())
    return render_template("admin/exceptions.html", items=items)


def _act(action: Any, target_id: int, done: str, **kw: Any) -> Any:
    svc, admin = services(), current_admin()
    try:
        with svc.store.write() as db:
            action(db, svc.clock, target_id, actor=admin.actor, **kw)
    except ResolutionError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "info")
    return redirect(
        request.form.get("back")
        if request.form.get("back") == url_for("admin.outbox")
        else url_for("admin.exceptions")
    )


@bp.post("/exceptions/<int:exception_id>/resolve")
def resolve(exception_id: int) -> Any:
    return _act(resolve_exception, exception_id, "Resolved.", note=request.form.get("note", ""))


@bp.post("/quarantine/<int:quarantine_id>/dismiss")
def dismiss(quarantine_id: int) -> Any:
    return _act(dismiss_quarantine, quarantine_id, "Dismissed.", note=request.form.get("note", ""))


@bp.post("/outbox/<int:outbox_id>/retry")
def retry(outbox_id: int) -> Any:
    return _act(retry_outbox, outbox_id, "Queued to be tried again.")
