"""send_reminders: one message per billing contact per client per run, listing every open
invoice that has reached a reminder step today.

Safe to run at any hour and any number of times: before the configured send time it does
nothing; after it, each (invoice, step) is decided once, by a UNIQUE row written in the same
transaction as the messages it causes. After an outage only the latest reached step is sent;
the earlier ones are recorded as skipped, so nothing arrives in a burst.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlite_utils import Database

from app.core import client_overrides, entities, faults
from app.core.audit import raise_exception
from app.core.cadence import QuietDays, due_step, step_date
from app.core.clock import to_db
from app.core.emails import date_long, money
from app.core.keys import derive_key
from app.core.logins import issue_token
from app.core.outbox import enqueue
from app.services import Services

log = logging.getLogger(__name__)


@dataclass
class ReminderReport:
    messages: int = 0
    invoices: int = 0
    skipped_steps: int = 0
    clients: set[int] = field(default_factory=set)


def _send_time(services: Services) -> time:
    hh, mm = services.config.reminders.send_time.split(":")
    return time(int(hh), int(mm))


def local_now(services: Services) -> datetime:
    return services.clock.utc_now().astimezone(services.config.tz)


def _quiet(services: Services) -> QuietDays:
    cfg = services.config.reminders
    return QuietDays(
        weekends=cfg.quiet_weekends, holidays=frozenset(date.fromisoformat(d) for d in cfg.holidays)
    )


_CANDIDATES = """
SELECT i.id, i.client_id, i.number, i.currency, i.due_on, i.total_minor, b.balance_minor,
       c.name AS client_name, c.token AS client_token
FROM invoices i
JOIN invoice_balances b ON b.invoice_id = i.id
JOIN clients c ON c.id = i.client_id
WHERE i.status = 'open' AND i.is_approved = 1 AND i.kind != 'credit_memo' AND b.balance_minor > 0
  AND i.due_on BETWEEN ? AND ?
ORDER BY i.client_id, i.due_on, i.number
"""


def _excluded(db: Database, invoice: Any, today: date) -> str | None:
    """Why an otherwise due invoice gets no reminder (disputed, covered by autopay), or None."""
    from app.jobs import reminder_exclusions

    for check in reminder_exclusions.CHECKS:
        reason = check(db, invoice, today)
        if reason:
            return reason
    return None


def _client_steps(db: Database, services: Services, client_id: int) -> tuple[tuple[int, ...], int, bool]:
    """(steps, grace days, paused) for a client, with the admin's overrides applied."""
    from app.core.client_overrides import get_overrides

    cfg = services.config.reminders
    o = get_overrides(db, client_id)
    steps = o.reminder_offsets if o.reminder_offsets is not None else cfg.steps
    grace = o.grace_days if o.grace_days is not None else cfg.grace_days
    return tuple(steps), grace, o.is_paused


def run(services: Services) -> ReminderReport:
    """Decide and enqueue today's reminders. Idempotent; a no-op before the send time."""
    report = ReminderReport()
    cfg = services.config.reminders
    if not cfg.enabled:
        return report
    now = local_now(services)
    if now.time() < _send_time(services):
        return report
    today = now.date()
    quiet = _quiet(services)
    span = max(abs(s) for s in cfg.steps) + cfg.grace_days + 400
    rows = services.store.all(
        _CANDIDATES, ((today - timedelta(days=span)).isoformat(), (today + timedelta(days=span)).isoformat())
    )
    by_client: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        by_client[r["client_id"]].append(r)
    for client_id, invoices in by_client.items():
        _remind_client(services, client_id, invoices, today, quiet, report)
        faults.point("reminders.after_client")
    if report.messages:
        log.info(
            "reminders: %d messages for %d invoices of %d clients (%d earlier steps skipped)",
            report.messages,
            report.invoices,
            len(report.clients),
            report.skipped_steps,
        )
    return report


def _remind_client(
    services: Services,
    client_id: int,
    invoices: list[Any],
    today: date,
    quiet: QuietDays,
    report: ReminderReport,
) -> None:
    with services.store.write() as db:
        steps, grace, paused = _client_steps(db, services, client_id)
        if paused:
            return
        due: list[tuple[Any, int]] = []
        for inv in invoices:
            done = {
                r[0] for r in db.execute("SELECT step FROM reminders_sent WHERE invoice_id = ?", (inv["id"],))
            }
            due_on = date.fromisoformat(inv["due_on"])
            step = due_step(due_on, today, steps, grace_days=grace, quiet=quiet, already=done)
            if step is None:
                continue
            if _excluded(db, inv, today):
                # Held today (a payment processing, a disputed line, autopay): the step is spent,
                # so it does not go out late once the hold ends (B05: the next step is the next).
                for held in steps:
                    if held <= step and held not in done:
                        _decide(db, services, inv, held, "skipped", today, None)
                continue
            for earlier in steps:
                if earlier < step and earlier not in done:
                    _decide(db, services, inv, earlier, "skipped", today, None)
                    report.skipped_steps += 1
            due.append((inv, step))
        if not due:
            return
        # Billing contacts plus the admin's extra addresses, each once, none that was refused.
        recipients = client_overrides.recipients(db, client_id)
        if not recipients:
            # Nobody to write to: the steps stay undecided (they go once an address arrives) and
            # a person is told, once.
            raise_exception(
                db,
                services.clock,
                kind="no_billing_address",
                ref=f"client:{client_id}",
                summary=f"{due[0][0]['client_name']} has invoices to remind but no billing contact "
                "with a working email address",
            )
            return
        items_key = sorted((inv["id"], step) for inv, step in due)
        for inv, step in due:
            key = derive_key("reminder-set", client=client_id, items=items_key, on=today.isoformat())
            _decide(db, services, inv, step, "sent", today, key)
        for person in recipients:
            _enqueue_message(db, services, person, due, today, items_key)
            report.messages += 1
        report.invoices += len(due)
        report.clients.add(client_id)


def _decide(
    db: Database, services: Services, inv: Any, step: int, outcome: str, today: date, key: str | None
) -> None:
    db.execute(
        "INSERT INTO reminders_sent (invoice_id, step, outcome, sent_on, balance_minor, message_key, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (invoice_id, step) DO NOTHING",
        (
            inv["id"],
            step,
            outcome,
            today.isoformat(),
            inv["balance_minor"],
            key,
            to_db(services.clock.utc_now()),
        ),
    )


def _state(due_on: date, today: date) -> tuple[str, int]:
    days = (today - due_on).days
    if days > 0:
        return "overdue", days
    return ("due_today", 0) if days == 0 else ("upcoming", -days)


def _when(due_on: date, today: date) -> str:
    state, days = _state(due_on, today)
    if state == "due_today":
        return "is due today"
    if state == "overdue":
        return f"was due {date_long(due_on)} ({days} day{'s' if days != 1 else ''} ago)"
    if days < 7:
        return f"is due {due_on.strftime('%A')}"
    return f"is due {date_long(due_on)}"


def subject_for(items: list[dict[str, Any]], today: date) -> str:
    """ "Invoice INV-1042 for $1,250.00 is due Friday", or a count and total for several."""
    if len(items) == 1:
        it = items[0]
        return f"Invoice {it['number']} for {money(it['balance_minor'], it['currency'])} {it['when']}"
    currencies = {it["currency"] for it in items}
    overdue = any(it["state"] == "overdue" for it in items)
    tail = "are due or overdue" if overdue else "are coming due"
    if len(currencies) == 1:
        total = sum(it["balance_minor"] for it in items)
        return f"{len(items)} invoices for {money(total, currencies.pop())} {tail}"
    return f"{len(items)} invoices {tail}"


def _enqueue_message(
    db: Database,
    services: Services,
    person: client_overrides.Recipient,
    due: list[tuple[Any, int]],
    today: date,
    items_key: list[tuple[int, int]],
) -> None:
    cfg = services.config
    items = []
    for inv, step in due:
        due_on = date.fromisoformat(inv["due_on"])
        state, days = _state(due_on, today)
        items.append(
            {
                "number": inv["number"],
                "currency": inv["currency"],
                "balance_minor": inv["balance_minor"],
                "total_minor": inv["total_minor"],
                "due_on": date_long(due_on),
                "state": state,
                "days": days,
                "when": _when(due_on, today),
                "step": step,
            }
        )
    totals: dict[str, int] = defaultdict(int)
    for it in items:
        totals[it["currency"]] += it["balance_minor"]
    base = cfg.cashloop.base_url.rstrip("/")
    if person.is_contact:
        token = issue_token(
            db,
            services.clock,
            email=person.email,
            purpose="magic",
            ttl=timedelta(days=cfg.reminders.link_days),
        )
        # The link signs in acting for the company the message is about (a person may have several).
        link = f"{base}/magic/{token}?company={due[0][0]['client_token']}"
        expires_days = cfg.reminders.link_days
    else:  # an extra address has no portal account to sign in to: the link is the portal's door
        link, expires_days = f"{base}/login", 0
    client_name = due[0][0]["client_name"]
    enqueue(
        db,
        services.clock,
        kind="email",
        key=derive_key("reminder", items=items_key, on=today.isoformat(), to=person.email.lower()),
        payload={
            **entities.email_tag(db, due[0][0]["client_id"]),  # sent in the client's entity's name
            "template": "reminder",
            "to": [person.email],
            "kind": "reminder",
            "context": {
                "contact_first_name": person.first_name,
                "client_name": client_name,
                "subject": subject_for(items, today),
                "items": items,
                "totals": [{"currency": c, "amount_minor": a} for c, a in sorted(totals.items())],
                "link": link,
                "expires_days": expires_days,
            },
        },
    )


def next_send_at(services: Services, after: datetime) -> datetime:
    """The next instant (UTC) at the configured local send time strictly after `after` (DST-safe)."""
    tz = services.config.tz
    local = after.astimezone(tz)
    day = local.date()
    for _ in range(3):
        candidate = datetime.combine(day, _send_time(services), tzinfo=tz)
        # A wall time that does not exist (spring forward) is moved by zoneinfo's fold rules;
        # normalising through UTC picks the real instant.
        candidate = candidate.astimezone(after.tzinfo or tz)
        if candidate > after:
            return candidate
        day += timedelta(days=1)
    raise AssertionError("unreachable")


__all__ = ["ReminderReport", "next_send_at", "run", "step_date", "subject_for"]
