"""tie_out: read every system, compare (app/core/tieout.py), keep the report, raise one exception.

Reads only: the PSA is swept page by page (no cursor is stored), Stripe is asked about each
payment of the period and lists the period's succeeded PaymentIntents, the accounting system
lists its open invoices and its payments with a Cashloop reference. A system that cannot be read
is named in the report (`unavailable`) instead of failing the whole run. With several billing
entities each gets its own report: its clients, its Stripe account, its books.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from app.core import tieout
from app.core.audit import raise_exception
from app.core.clock import local_today, to_db
from app.core.entities import DEFAULT_KEY
from app.core.tieout import OpenInvoice, ReceivedPayment, TieOut
from app.services import Services
from sync.base import AccountingAuthError, ConnectorError, Rejected, RemoteInvoice

log = logging.getLogger(__name__)
READ_ERRORS = (ConnectorError, AccountingAuthError, OSError)
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, ArithmeticError)


def run(
    services: Services, *, start: date | None = None, end: date | None = None, keep: bool = True
) -> TieOut:
    """The tie-out of start..end (local dates; default: yesterday) as of now. With several entities,
    one report each; returns the first that does not tie out (else the first)."""
    yesterday = local_today(services.clock, services.config.tz) - timedelta(days=1)
    start, end = start or yesterday, end or start or yesterday
    directory = services.entities
    if not directory.multi:
        return run_entity(services, start=start, end=end, keep=keep, entity_id=None)
    reports = [
        run_entity(directory.view(key), start=start, end=end, keep=keep, entity_id=entity_id)
        for key, entity_id in directory.ids().items()
    ]
    return next((r for r in reports if not r.ties_out), reports[0])


def run_entity(services: Services, *, start: date, end: date, keep: bool, entity_id: int | None) -> TieOut:
    """One entity's tie-out (`entity_id` None: the only entity, every client)."""
    cfg = services.config
    views_ar: dict[str, list[OpenInvoice]] = {"cashloop": tieout.cashloop_open(services.store, entity_id)}
    ours = tieout.cashloop_payments(services.store, start, end, cfg.tz, entity_id)
    views_paid: dict[str, list[ReceivedPayment]] = {"cashloop": ours}
    report = TieOut(start=start, end=end, systems=(), entity=services.entity_key)

    sink = services.accounting
    if getattr(sink, "supports_tieout", False) is True:
        try:
            views_ar["accounting"] = _accounting_open(services)
            views_paid["accounting"] = [
                ReceivedPayment("", p.reference, None, p.currency, p.amount_minor)
                for p in sink.payments_between(start, end)  # type: ignore[attr-defined]
            ]
        except READ_ERRORS as exc:
            report.unavailable["accounting"] = str(exc)
        except MALFORMED as exc:  # a record the books sent in a shape no one documented
            why = f"an answer of unexpected shape: {type(exc).__name__}: {exc}"
            report.unavailable["accounting"] = why[:500]
    else:
        report.notes.append(f"the {sink.kind} export is not read back: compare the books with it by hand")
    try:
        views_ar["psa"] = _psa_open(services, entity_id)
    except READ_ERRORS as exc:
        report.unavailable["psa"] = str(exc)
    try:
        views_paid["stripe"] = _stripe_paid(services, ours, start, end)
    except READ_ERRORS as exc:
        report.unavailable["stripe"] = str(exc)

    report.systems = tuple(dict.fromkeys([*views_ar, *views_paid]))
    tieout.compare_open_ar(services.store, report, views_ar)
    tieout.compare_payments(services.store, report, views_paid)
    if keep:
        _keep(services, report)
    return report


def _accounting_open(services: Services) -> list[OpenInvoice]:
    # The sink gives PSA numbers back (it strips the books' own number prefix).
    return [
        OpenInvoice(inv.customer_name, inv.number, inv.currency, inv.balance_minor)
        for inv in services.accounting.open_invoices()  # type: ignore[attr-defined]
    ]


def _psa_open(services: Services, entity_id: int | None) -> list[OpenInvoice]:
    """What the PSA says is open now: a full read-only sweep of its invoices. With several entities,
    those of this entity's clients (a company Cashloop does not know counts for the default one)."""
    source = services.psa
    names: dict[str, str] = {}
    elsewhere: set[str] = set()
    for r in services.store.all(
        "SELECT remote_id, name, entity_id FROM clients WHERE source = ?", (source.kind,)
    ):
        if entity_id is None or r["entity_id"] == entity_id:
            names[r["remote_id"]] = r["name"]
        else:
            elsewhere.add(r["remote_id"])
    strangers_count = entity_id is None or services.entity_key == DEFAULT_KEY
    out = []
    for page in source.invoices(None):
        for item in page.items:
            if isinstance(item, Rejected) or not isinstance(item, RemoteInvoice):
                continue
            if item.is_void or not item.is_approved or item.kind == "credit_memo":
                continue
            company = item.company_remote_id
            if company in elsewhere or (company not in names and not strangers_count):
                continue
            client = names.get(company, f"PSA company {company}")
            out.append(OpenInvoice(client, item.number, item.currency, item.total_minor - item.paid_minor))
    return out


def _stripe_paid(
    services: Services, ours: list[ReceivedPayment], start: date, end: date
) -> list[ReceivedPayment]:
    """Stripe's view of our payments of the period, plus the succeeded PaymentIntents of the period
    (in this entity's Stripe account) that Cashloop does not know at all."""
    gateway = services.gateway
    out = []
    for p in ours:
        if not p.intent_id:
            continue
        state = gateway.retrieve_intent(p.intent_id)
        if state.status == "succeeded":
            out.append(
                ReceivedPayment(
                    p.client, state.intent_id, state.intent_id, state.currency, state.amount_minor
                )
            )
    known = {
        r[0] for r in services.store.all("SELECT processor_ref FROM payments WHERE processor_ref IS NOT NULL")
    }
    tz = services.config.tz
    since = datetime.combine(start, time.min, tz)
    until = datetime.combine(end + timedelta(days=1), time.min, tz)
    for state in gateway.succeeded_intents(since, until):
        if state.intent_id not in known:
            out.append(
                ReceivedPayment("", state.intent_id, state.intent_id, state.currency, state.amount_minor)
            )
    return out


def _keep(services: Services, report: TieOut) -> None:
    now = services.clock.utc_now()
    with services.store.write() as db:
        db.execute(
            "INSERT INTO tieout_reports (period_start, period_end, entity_key, differences, unavailable, "
            "report_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                report.start.isoformat(),
                report.end.isoformat(),
                report.entity,
                len(report.differences),
                len(report.unavailable),
                tieout.to_json(report),
                to_db(now),
            ),
        )
        if not report.ties_out:
            entity = "" if report.entity == DEFAULT_KEY else f"{report.entity}: "
            raise_exception(
                db,
                services.clock,
                kind="tieout",
                ref=f"{report.entity}:{report.end.isoformat()}",
                summary=f"{entity}tie-out of {report.end.isoformat()}: "
                f"{len(report.differences)} difference(s)"
                + (f", not read: {', '.join(report.unavailable)}" if report.unavailable else ""),
            )
    log.info(
        "tie-out %s %s..%s: %d difference(s), %d system(s) not read",
        report.entity,
        report.start,
        report.end,
        len(report.differences),
        len(report.unavailable),
    )
