"""The dashboard: cash, AR and what needs a person, at a glance (figures from app/core/reports.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import render_template, request

from app.core import reports
from app.core.emails import money
from app.core.sync_status import connector_status
from app.web import services, today
from app.web.admin import bp, entity_filter, entity_scope
from app.web.admin.charts import Bar, bar_chart
from app.web.admin.queries import exceptions_queue

_TONES = {"current": "normal", "1-30": "warn", "31-60": "warn", "61-90": "bad", "90+": "bad"}


def _aging_chart(ag: reports.Aging) -> Any:
    bars = [
        Bar(reports.BUCKET_LABELS[b], ag.buckets[b], money(ag.buckets[b], ag.currency), _TONES[b])
        for b in reports.BUCKETS
    ]
    return bar_chart(bars, chart_id=f"aging-chart-{ag.currency}", title=f"Open AR by age, {ag.currency}")


def _collections_chart(months: list[tuple[Any, dict[str, int]]], currency: str) -> Any:
    bars = [
        Bar(first.strftime("%b %Y"), by.get(currency, 0), money(by.get(currency, 0), currency))
        for first, by in months
    ]
    return bar_chart(bars, chart_id=f"collected-chart-{currency}", title=f"Collected per month, {currency}")


@bp.get("/")
def dashboard() -> Any:
    svc = services()
    store, day, tz = svc.store, today(), svc.config.tz

    def home_first(currency: str) -> tuple[bool, str]:
        return currency != svc.config.entity.currency, currency

    entity_id = entity_filter.selected_id()  # ?entity=<key>: one entity's figures
    aging = sorted(reports.aging(store, day, entity_id), key=lambda a: home_first(a.currency))
    months = reports.monthly_collections(store, day, tz, entity_id=entity_id)
    # A chart only for the currencies something was collected in over the months shown.
    currencies = sorted({c for _, by in months for c, v in by.items() if v}, key=home_first)
    failed_count, failed = reports.failed_payments(
        store, svc.clock.utc_now() - timedelta(days=30), entity_id=entity_id
    )
    upcoming = reports.upcoming_autopay(
        store,
        svc.clock,
        tz,
        run_time=svc.config.autopay.run_time,
        surcharge=svc.config.surcharge,
        approval_default=svc.config.portal.approval_threshold,
    )
    if upcoming is not None and entity_id is not None:
        ours = {r[0] for r in store.all("SELECT id FROM clients WHERE entity_id = ?", (entity_id,))}
        upcoming = [u for u in upcoming if u.client_id in ours]
    return render_template(
        "admin/dashboard.html",
        today=day,
        aging=aging,
        aging_charts={a.currency: _aging_chart(a) for a in aging},
        collections_charts={c: _collections_chart(months, c) for c in currencies},
        dso={d.currency: d for d in reports.dso(store, day, svc.config.admin.dso_days, entity_id)},
        dso_days=svc.config.admin.dso_days,
        collected=sorted(reports.collected(store, day, tz, entity_id), key=lambda c: home_first(c.currency)),
        entity_totals=entity_filter.totals(store, day, tz) if svc.config.entities else None,
        adoption=reports.adoption(store, day),
        upcoming=upcoming,
        failed_count=failed_count,
        failed=failed,
        backlog=reports.outbox_backlog(store),
        sync=connector_status(store),
        queue_count=len(entity_scope.queue_of(store, exceptions_queue(store), entity_id)),
        buckets=reports.BUCKETS,
        bucket_labels=reports.BUCKET_LABELS,
        recovery_left=request.args.get("recovery_left", type=int),
    )
