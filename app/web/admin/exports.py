"""CSV exports of open AR, payments and the audit log (app/core/csv_export.py makes them safe).

Amounts are exact decimals of their currency; dates are the MSP's local dates, instants its
local time. Each export is itself written to the audit log.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Response, abort

from app.core.audit import audit
from app.core.clock import from_db
from app.core.csv_export import to_csv
from app.core.money import Money
from app.core.reports import bucket_of
from app.web import services, today
from app.web.admin import bp, entity_filter, queries
from app.web.admin.guard import current_admin
from app.web.admin.ops import audit_filters
from app.web.admin.payments import payment_filters


def _amount(minor: int | None, currency: str) -> str:
    return "" if minor is None else str(Money(minor, currency).to_decimal())


def _local(instant: str | None) -> str:
    return (
        "" if not instant else from_db(instant).astimezone(services().config.tz).strftime("%Y-%m-%d %H:%M:%S")
    )


def _send(name: str, body: bytes, rows: int) -> Response:
    svc, admin = services(), current_admin()
    with svc.store.write() as db:
        audit(
            db, svc.clock, actor=admin.actor, action="export.downloaded", target=name, detail={"rows": rows}
        )
    stamp = today().isoformat()
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="cashloop-{name}-{stamp}.csv"'},
    )


@bp.get("/export/ar.csv")
def export_ar() -> Response:
    day = today()
    rows = []
    for r in queries.open_ar_rows(services().store, entity_filter.selected_id()):
        days = (day - date.fromisoformat(r["due_on"])).days
        rows.append(
            [
                r["client_name"],
                r["client_remote_id"],
                r["number"],
                r["kind"],
                r["issued_on"],
                r["due_on"],
                max(days, 0),
                bucket_of(days),
                r["currency"],
                _amount(r["total_minor"], r["currency"]),
                _amount(r["paid_elsewhere_minor"] + r["paid_minor"], r["currency"]),
                _amount(r["balance_minor"], r["currency"]),
            ]
        )
    header = [
        "client",
        "client_id",
        "invoice",
        "kind",
        "issued_on",
        "due_on",
        "days_overdue",
        "aging_bucket",
        "currency",
        "total",
        "paid",
        "balance",
    ]
    return _send("ar", to_csv(header, rows), len(rows))


@bp.get("/export/payments.csv")
def export_payments() -> Response:
    found, _, _, _ = queries.list_payments(services().store, payment_filters(), limit=None)
    rows = [
        [
            _local(p["created_at"]),
            _local(p["succeeded_at"]),
            p["client_name"],
            p["token"],
            p["method"],
            p["status"],
            p["currency"],
            _amount(p["amount_minor"], p["currency"]),
            p["processor_ref"] or "",
            p["reference"] or "",
            p["received_on"] or "",
            p["invoice_numbers"] or "",
            p["initiated_by"],
        ]
        for p in found
    ]
    header = [
        "created",
        "succeeded",
        "client",
        "payment",
        "method",
        "status",
        "currency",
        "amount",
        "processor_reference",
        "reference",
        "received_on",
        "invoices",
        "initiated_by",
    ]
    return _send("payments", to_csv(header, rows), len(rows))


@bp.get("/export/audit.csv")
def export_audit() -> Any:
    f, bounds, error = audit_filters()
    if error:
        abort(400, description=error)
    found, _, _, _ = queries.list_audit(services().store, f, bounds, limit=None)
    rows = [
        [_local(r["at"]), r["actor"], r["action"], r["target"] or "", r["detail_json"] or ""] for r in found
    ]
    return _send("audit", to_csv(["at", "actor", "action", "target", "detail"], rows), len(rows))
