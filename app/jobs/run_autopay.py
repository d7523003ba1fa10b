"""run_autopay: charge what the clients' autopay rules make due, retry what failed, tell people.

One run, at `autopay.run_time` in the MSP's time zone (app/jobs/scheduler.py), or `cashloop
autopay [--dry-run]`:
1. settle attempts a crash or timeout left unfinished, by asking Stripe (app.charging.resolve);
2. call off retries with nothing left to charge;
3. warn about autopay cards that expire before their next charge, and announce charges coming
   in `notify_days_before` days (each notice once, by a derived key);
4. start each due charge (retries first): the attempt and its pending payment are committed,
   then the payment is claimed and charged off-session (app.charging.submit).

Safe to run twice, concurrently or after a kill: an attempt is unique per (invoices, number),
only a claimed payment is charged, and in-process runs are serialized by a lock (the scheduler's
file lock keeps every run in one process). A dry run writes nothing and calls nobody.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

from app import charging
from app.core import autopay, autopay_attempts, stop_flag
from app.core.clock import from_db, local_today
from app.core.emails import date_long
from app.core.keys import derive_key
from app.core.notices import enqueue_notice
from app.services import Services

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
ACTION_DAYS = 7  # a 3-D Secure request unanswered this long is given up (the retry schedule follows)


@dataclass
class AutopayReport:
    planned: list[autopay.PlannedCharge] = field(default_factory=list)
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    requires_action: int = 0
    processing: int = 0
    unknown: int = 0
    resolved: int = 0
    closed: int = 0
    notices: int = 0
    busy: bool = False
    seconds: float = 0.0
    stripe_seconds: float = 0.0
    stripe_calls: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, status: str) -> None:
        if status == "succeeded":
            self.succeeded += 1
        elif status == "failed":
            self.failed += 1
        elif status == "requires_action":
            self.requires_action += 1
        elif status == "processing":
            self.processing += 1
        else:
            self.unknown += 1

    def summary(self) -> str:
        if self.busy:
            return "autopay: another run is in progress"
        return (
            f"autopay: {self.started} charges started ({self.succeeded} succeeded, {self.failed} failed, "
            f"{self.requires_action} need the customer, {self.processing} processing, {self.unknown} not "
            f"known yet); {self.resolved} unfinished settled; {self.closed} retries called off; "
            f"{self.notices} notices"
        )


def describe(charge: autopay.PlannedCharge) -> str:
    """One line of the dry run: who, what, how much, with what."""
    from app.core.emails import money

    what = ", ".join(f"{it.number} {money(it.amount_minor, charge.currency)}" for it in charge.items)
    extra = f" + surcharge {money(charge.surcharge_minor, charge.currency)}" if charge.surcharge_minor else ""
    kind = f"retry of attempt {charge.retry_of}" if charge.is_retry else "charge"
    return (
        f"{charge.client_name}: {kind} {money(charge.amount_minor, charge.currency)} ({what}{extra}) "
        f"to {charge.method.label}"
    )


def _approval_default(services: Services) -> str:
    # The portal's approval threshold setting (app.core.approvals); absent in builds without it.
    return str(getattr(services.config.portal, "approval_threshold", "") or "")


def plan(services: Services) -> list[autopay.PlannedCharge]:
    """What a run now would charge, in order. Reads only."""
    cfg = services.config
    return autopay.due_charges(
        services.store.db,
        today=local_today(services.clock, cfg.tz),
        now=services.clock.utc_now(),
        surcharge=cfg.surcharge,
        approval_default=_approval_default(services),
    )


def run(services: Services, *, dry_run: bool = False, limit: int | None = None) -> AutopayReport:
    """One autopay run; see the module doc. Returns what it did (or, dry, what it would charge)."""
    report = AutopayReport()
    if dry_run:
        report.planned = plan(services)
        return report
    if not _LOCK.acquire(blocking=False):
        report.busy = True
        return report
    started = time.perf_counter()
    timing = charging.StripeTime()
    try:
        report.resolved = resolve_unfinished(services, timing=timing)
        report.closed = _close_stale(services)
        report.notices = _expiry_warnings(services) + _upcoming_notices(services)
        report.planned = plan(services)
        for charge in report.planned[:limit]:
            if stop_flag.requested():  # SIGTERM: every charge started so far is finished and recorded
                log.info(
                    "autopay: stopping on request; %d charges left for the next run",
                    len(report.planned[:limit]) - report.started,
                )
                break
            try:
                _charge(services, charge, report, timing)
            except Exception as exc:  # one bad charge must not stop the others
                log.exception("autopay: charge for client %s failed", charge.client_id)
                report.errors.append(f"{charge.client_name}: {exc}")
    finally:
        _LOCK.release()
        report.seconds = time.perf_counter() - started
        report.stripe_seconds, report.stripe_calls = timing.seconds, timing.calls
    if report.started or report.resolved:
        log.info("%s", report.summary())
    return report


def _charge(
    services: Services, charge: autopay.PlannedCharge, report: AutopayReport, timing: charging.StripeTime
) -> None:
    cfg = services.config
    payment_id = autopay_attempts.start_attempt(
        services.store,
        services.clock,
        charge,
        retry_days=cfg.autopay.retry_days,
        run_time=cfg.autopay.run_time,
        tz=cfg.tz,
        approval_threshold=cfg.portal.approval_threshold,
    )
    if payment_id is None:
        return
    report.started += 1
    report.count(charging.submit(services, payment_id, timing=timing))


def resolve_unfinished(
    services: Services,
    *,
    timing: charging.StripeTime | None = None,
    min_age_seconds: float | None = None,
    include_waiting: bool = True,
) -> int:
    """Settle attempts a crash or timeout left pending or submitted, and (`include_waiting`) those
    waiting for 3-D Secure or a bank: re-read from Stripe, and a 3-D Secure request older than
    ACTION_DAYS given up (cancelled at Stripe, so it can no longer be completed, and failed, so the
    retry schedule and then the reminders take over). Returns how many changed. A submitted one is
    only asked about after the Stripe timeout has surely passed."""
    timing = timing or charging.StripeTime()
    age = services.config.stripe.timeout_seconds + 10 if min_age_seconds is None else min_age_seconds
    states = autopay.OPEN_ATTEMPT if include_waiting else ("pending", "submitted")
    rows = services.store.all(
        "SELECT t.payment_id, p.status, p.updated_at FROM autopay_attempts t JOIN payments p ON p.id = "
        "t.payment_id "
        f"WHERE p.status IN {states} ORDER BY t.id"
    )
    changed = 0
    for row in rows:
        try:
            if row["status"] == "requires_action" and (
                services.clock.utc_now() - from_db(row["updated_at"]) > timedelta(days=ACTION_DAYS)
            ):
                after = charging.give_up_waiting(
                    services,
                    row["payment_id"],
                    timing=timing,
                    reason=f"not confirmed with the bank within {ACTION_DAYS} days",
                )
            else:
                after = charging.resolve(
                    services,
                    row["payment_id"],
                    timing=timing,
                    min_age_seconds=age if row["status"] == "submitted" else 0,
                )
        except Exception:
            log.exception("autopay: could not settle payment %s; next run tries again", row["payment_id"])
            continue
        changed += after != row["status"]
    return changed


def recover(services: Services) -> int:
    """The scheduler's frequent job: settle attempts a crash left unfinished between daily runs.
    Payments waiting for the customer or the bank are left to webhooks and the daily run."""
    if not _LOCK.acquire(blocking=False):
        return 0
    try:
        return resolve_unfinished(services, include_waiting=False)
    finally:
        _LOCK.release()


def _close_stale(services: Services) -> int:
    rows = autopay_attempts.stale_retries(services.store.db)
    for r in rows:
        autopay_attempts.close_unretriable(services.store, services.clock, r["id"], "nothing left to charge")
    return len(rows)


def _card_expires_on(exp_month: int, exp_year: int) -> date:
    return date(exp_year, exp_month, calendar.monthrange(exp_year, exp_month)[1])


def _expiry_warnings(services: Services) -> int:
    """Once per card and expiry: the autopay card expires within `expiry_warning_days`."""
    days = services.config.autopay.expiry_warning_days
    if days == 0:
        return 0
    today = local_today(services.clock, services.config.tz)
    sent = 0
    rows = services.store.all(
        "SELECT r.client_id, m.* FROM autopay_rules r JOIN payment_methods m ON m.id = r.payment_method_id "
        "WHERE r.is_enabled = 1 AND m.removed_at IS NULL AND m.type = 'card' AND m.exp_year IS NOT NULL"
    )
    for m in rows:
        expires = _card_expires_on(m["exp_month"], m["exp_year"])
        if expires > today + timedelta(days=days):
            continue
        with services.store.write() as db:
            sent += enqueue_notice(
                db,
                services.clock,
                template="card_expiring",
                client_id=m["client_id"],
                key=derive_key("card-expiring", method=m["id"], exp=f"{m['exp_year']}-{m['exp_month']:02d}"),
                context={
                    "method_label": autopay.method_view(m).label,
                    "expires_on": date_long(expires),
                    "is_expired": expires < today,
                    "update_url": f"{services.config.cashloop.base_url.rstrip('/')}/autopay",
                },
            )
    return sent


def _upcoming_notices(services: Services) -> int:
    """Once per charge: the billing contacts hear `notify_days_before` days ahead what will be charged."""
    days = services.config.autopay.notify_days_before
    if days == 0:
        return 0
    cfg = services.config
    today = local_today(services.clock, cfg.tz)
    horizon = today + timedelta(days=days)
    sent = 0
    plan_ahead = autopay.plan_new(
        services.store.db, today=None, surcharge=cfg.surcharge, approval_default=_approval_default(services)
    ).charges
    for c in plan_ahead:
        if not today < c.charge_on <= horizon:
            continue
        with services.store.write() as db:
            sent += enqueue_notice(
                db,
                services.clock,
                template="autopay_upcoming",
                client_id=c.client_id,
                key=derive_key("autopay-upcoming", invoices=list(c.invoice_ids), on=c.charge_on.isoformat()),
                unless_paid=c.invoice_ids,
                context={
                    "amount_minor": c.amount_minor,
                    "surcharge_minor": c.surcharge_minor,
                    "currency": c.currency,
                    "charge_on": date_long(c.charge_on),
                    "method_label": c.method.label,
                    "is_bank": c.method.type == "us_bank_account",
                    "invoices": [{"number": i.number, "amount_minor": i.amount_minor} for i in c.items],
                    "manage_url": f"{cfg.cashloop.base_url.rstrip('/')}/autopay",
                },
            )
    return sent
