"""The Tie-out page: the newest daily report (app/jobs/tie_out.py), and a button to run it now."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from app.core.audit import audit
from app.core.clock import local_today
from app.web import services
from app.web.admin import bp, entity_filter
from app.web.admin.guard import current_admin

SYSTEM_LABELS = {"cashloop": "Cashloop", "accounting": "Books", "psa": "PSA", "stripe": "Stripe"}


@bp.get("/tieout")
def tieout() -> Any:
    store = services().store
    chosen = request.args.get("report", type=int)
    selected = entity_filter.selected()  # ?entity=<key>: that entity's reports only
    cond, params = ("WHERE entity_key = ?", (selected[0],)) if selected else ("", ())
    if chosen is not None:
        # Beyond SQLite's INTEGER there is no such report (and binding it would raise OverflowError).
        fits = abs(chosen) < 2**63
        rows = store.all("SELECT * FROM tieout_reports WHERE id = ?", (chosen,)) if fits else []
        if not rows:
            abort(404)
        if selected and rows[0]["entity_key"] != selected[0]:
            abort(404)  # another entity's report is not shown under this filter
    else:  # the newest report of each entity
        rows = store.all(
            "SELECT * FROM tieout_reports "
            f"WHERE id IN (SELECT MAX(id) FROM tieout_reports {cond} GROUP BY entity_key) "
            "ORDER BY entity_key != 'default', entity_key",
            params,
        )
    history = store.all(
        "SELECT id, period_start, period_end, entity_key, differences, unavailable, created_at "
        f"FROM tieout_reports {cond} ORDER BY id DESC LIMIT 30",
        params,
    )
    reports = [(row, json.loads(row["report_json"])) for row in rows]
    return render_template("admin/tieout.html", reports=reports, history=history, system_labels=SYSTEM_LABELS)


@bp.post("/tieout/run")
def run_tieout() -> Any:
    from app.jobs import tie_out

    svc = services()
    chosen = entity_filter.selected()
    if chosen:  # under the entity filter: that entity's tie-out only
        day = local_today(svc.clock, svc.config.tz) - timedelta(days=1)
        report = tie_out.run_entity(svc.entities.view(chosen[0]), start=day, end=day, keep=True,
                                    entity_id=chosen[1])
    else:
        report = tie_out.run(svc)
    with svc.store.write() as db:
        audit(db, svc.clock, actor=current_admin().actor, action="tieout.run",
              target=report.end.isoformat(), detail={"differences": len(report.differences)})
    n = len(report.differences)
    if report.ties_out:
        outcome = "it ties out."
    else:
        outcome = f"{n} difference{'' if n == 1 else 's'}"
        outcome += ", and a system could not be read." if report.unavailable else "."
    flash(f"Tie-out of {report.end.isoformat()}: {outcome}")
    return redirect(url_for("admin.tieout"))
