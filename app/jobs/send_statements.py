"""send_statements: on the 1st of each month, the previous month's statement to each client that
opted in (app.core.statements_mail), to its billing contacts and the admin's extra addresses.

Safe to run at any hour and any number of times: before the reminder send time on the 1st it
does nothing; after it, each (client, month) is decided once, by a UNIQUE row written in the same
transaction as its emails. A run missed while the service was down (the scheduler also runs it at
start-up) sends the latest month once, late; an older missed month is not sent in a burst.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from app.core import client_overrides, statements_mail
from app.core.audit import raise_exception
from app.core.clock import to_db
from app.core.keys import derive_key
from app.services import Services

log = logging.getLogger(__name__)


@dataclass
class StatementReport:
    month: date | None = None
    clients: set[int] = field(default_factory=set)
    messages: int = 0


def _due_at(first: date, send_time: str, local_now: datetime) -> datetime:
    hh, mm = (int(x) for x in send_time.split(":"))
    return datetime.combine(first, time(hh, mm), tzinfo=local_now.tzinfo)


def statement_month(local_now: datetime, send_time: str) -> tuple[date, datetime]:
    """The month whose statement is due by `local_now` and when it became due: last month once the
    1st's send time has come, else the month before (due on the 1st of last month)."""
    first = local_now.date().replace(day=1)
    due_at = _due_at(first, send_time, local_now)
    last_month = (first - timedelta(days=1)).replace(day=1)
    if local_now >= due_at:
        return last_month, due_at
    return (last_month - timedelta(days=1)).replace(day=1), _due_at(last_month, send_time, local_now)


def run(services: Services) -> StatementReport:
    """Queue the statements due now that were not decided yet. Idempotent."""
    cfg = services.config
    local_now = services.clock.utc_now().astimezone(cfg.tz)
    month, due_at = statement_month(local_now, cfg.reminders.send_time)
    report = StatementReport(month=month)
    # A client that opted in after the statement was due starts with the next month's.
    for client_id in statements_mail.subscribed_clients(services.store.db, since=to_db(due_at)):
        _send(services, client_id, month, report)
    if report.messages:
        log.info(
            "statements: %d emails for %s to %d clients",
            report.messages,
            statements_mail.month_key(month),
            len(report.clients),
        )
    return report


def _send(services: Services, client_id: int, month: date, report: StatementReport) -> None:
    cfg = services.config
    key_month = statements_mail.month_key(month)
    with services.store.write() as db:
        client = db.execute("SELECT name FROM clients WHERE id = ?", (client_id,)).fetchone()
        has_invoices = db.execute(
            "SELECT 1 FROM invoices WHERE client_id = ? AND issued_on <= ? LIMIT 1",
            (client_id, (month.replace(day=28) + timedelta(days=4)).replace(day=1).isoformat()),
        ).fetchone()
        if client is None or not has_invoices:
            return  # no invoice yet, so no statement (the portal lists none either)
        people = client_overrides.recipients(db, client_id)
        if not people:
            raise_exception(
                db,
                services.clock,
                kind="no_billing_address",
                ref=f"client:{client_id}",
                summary=f"{client['name']} asked for monthly statements but has no billing contact with a "
                "working email address",
            )
            return  # undecided: it goes once someone can receive it
        cur = db.execute(
            "INSERT INTO statement_sends (client_id, month, recipients, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (client_id, month) DO NOTHING",
            (client_id, key_month, len(people), to_db(services.clock.utc_now())),
        )
        if cur.rowcount != 1:
            return  # this month was decided by an earlier run
        link = f"{cfg.cashloop.base_url.rstrip('/')}/statements/{key_month}"
        for person in people:
            statements_mail.enqueue_statement(
                db,
                services.clock,
                client_id=client_id,
                client_name=client["name"],
                month=month,
                to=person.email,
                first_name=person.first_name,
                key=derive_key(
                    "statement-monthly", client=client_id, month=key_month, to=person.email.lower()
                ),
                link=link,
                is_monthly=True,
            )
            report.messages += 1
        report.clients.add(client_id)
