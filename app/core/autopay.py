"""Autopay rules per client, and which invoices they make due for charging on a given local date.

The portal (autopay settings page) calls `get_rule`, `set_rule` and `upcoming_charges`; the
autopay job calls `due_charges`; reminders call `is_covered`.
Nothing here talks to Stripe: the job (app.jobs.run_autopay) charges what `due_charges` returns.

An invoice is autopaid when all of these hold:
- the client's rule is enabled, its method is saved and not removed, and the finance team has
  not paused the client or disallowed autopay (client_overrides, when that table exists);
- the invoice is open, approved at the PSA, of a kind the rule lists, has a balance, and no
  payment or attempt is in flight for it;
- its charge date has come: the due date (or the issue date + N days) + the rule's grace days;
- it is at most the rule's maximum, approved by an approver if above the approval threshold
  (app.core.approvals), no line of it is disputed by the client (app.core.line_disputes), no
  payment of it is disputed at Stripe, and the client has no open Stripe dispute when the rule
  pauses on disputes;
- its attempts with the rule's current method are not exhausted (after the last retry it goes
  back to reminders until the client sets another method).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.method_names import method_name
from app.core.money import card_chargeable
from app.core.store import Store
from app.core.surcharge import client_region, surcharge_for

if TYPE_CHECKING:
    from app.config import SurchargeSettings

KINDS = ("agreement", "project", "time_and_materials", "product", "other")
OPEN_ATTEMPT = ("pending", "submitted", "requires_action", "processing")
OPEN_DISPUTE = ("needs_response", "under_review", "warning_needs_response", "warning_under_review")
Schedule = Literal["due_date", "days_after_issue"]
Grouping = Literal["per_invoice", "per_client"]


class AutopayRuleError(ValueError):
    """The rule cannot be saved as given; `errors` maps each field to a message for the person."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class AutopayRule:
    client_id: int
    is_enabled: bool
    payment_method_id: int | None
    kinds: tuple[str, ...]
    max_minor: int | None
    approval_above_minor: int | None
    schedule: Schedule
    schedule_days: int
    grace_days: int
    grouping: Grouping
    pause_on_dispute: bool
    updated_at: str
    updated_by: str


@dataclass(frozen=True)
class MethodView:
    id: int
    processor_ref: str
    type: str  # card | us_bank_account
    label: str  # "Visa •••• 4242", "STRIPE TEST BANK •••• 6789 (ACH)"
    exp_month: int | None = None
    exp_year: int | None = None

    @property
    def payment_method(self) -> str:
        """The payments.method value: card or ach."""
        return "ach" if self.type == "us_bank_account" else "card"


@dataclass(frozen=True)
class ChargeItem:
    invoice_id: int
    number: str
    amount_minor: int


@dataclass(frozen=True)
class PlannedCharge:
    """One charge autopay will make: invoices of one client, one currency, one method."""

    client_id: int
    client_name: str
    items: tuple[ChargeItem, ...]
    currency: str
    charge_on: date
    method: MethodView
    surcharge_minor: int = 0
    retry_of: int | None = None  # the failed attempt this charge retries
    is_retry: bool = False

    @property
    def invoice_ids(self) -> tuple[int, ...]:
        return tuple(sorted(it.invoice_id for it in self.items))

    @property
    def invoice_set(self) -> str:
        return ",".join(str(i) for i in self.invoice_ids)

    @property
    def amount_minor(self) -> int:
        """What is charged: the invoices' balances plus the surcharge."""
        return sum(it.amount_minor for it in self.items) + self.surcharge_minor


@dataclass(frozen=True)
class Skipped:
    invoice_id: int
    number: str
    reason: str


@dataclass
class Plan:
    charges: list[PlannedCharge] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- rules


def _rule(row: Any) -> AutopayRule:
    return AutopayRule(
        client_id=row["client_id"],
        is_enabled=bool(row["is_enabled"]),
        payment_method_id=row["payment_method_id"],
        kinds=tuple(json.loads(row["kinds_json"])),
        max_minor=row["max_minor"],
        approval_above_minor=row["approval_above_minor"],
        schedule=row["schedule"],
        schedule_days=row["schedule_days"],
        grace_days=row["grace_days"],
        grouping=row["grouping"],
        pause_on_dispute=bool(row["pause_on_dispute"]),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def get_rule(store: Store | Database, client_id: int) -> AutopayRule | None:
    """The client's rule, or None if autopay was never set up."""
    db = store.db if isinstance(store, Store) else store
    row = db.execute("SELECT * FROM autopay_rules WHERE client_id = ?", (client_id,)).fetchone()
    return None if row is None else _rule(row)


def rule_field_errors(
    *,
    kinds: Sequence[str],
    max_minor: int | None,
    approval_above_minor: int | None,
    schedule: str,
    schedule_days: int,
    grace_days: int,
    grouping: str,
) -> dict[str, str]:
    """A message per field of a rule that is wrong on its own (set_rule also checks the method and
    the client's switches); empty when all are right. Reads and writes nothing."""
    errors: dict[str, str] = {}
    if not kinds:
        errors["kinds"] = "Choose at least one kind of invoice."
    elif bad := [k for k in kinds if k not in KINDS]:
        errors["kinds"] = f"Unknown invoice kind {bad[0]!r}; choose from {', '.join(KINDS)}."
    for name, value in (("max_minor", max_minor), ("approval_above_minor", approval_above_minor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            errors[name] = "Enter an amount of zero or more, or leave it empty for no limit."
    if schedule not in ("due_date", "days_after_issue"):
        errors["schedule"] = "Charge either on the due date or a number of days after the invoice date."
    if isinstance(schedule_days, bool) or not isinstance(schedule_days, int) or not 0 <= schedule_days <= 365:
        errors["schedule_days"] = "Enter 0 to 365 days."
    if isinstance(grace_days, bool) or not isinstance(grace_days, int) or not 0 <= grace_days <= 60:
        errors["grace_days"] = "Enter 0 to 60 days."
    if grouping not in ("per_invoice", "per_client"):
        errors["grouping"] = "Charge each invoice on its own, or all due invoices together."
    return errors


def set_rule(
    store: Store,
    clock: Clock,
    client_id: int,
    *,
    enabled: bool,
    payment_method_id: int | None,
    kinds: Sequence[str] = KINDS,
    max_minor: int | None = None,
    approval_above_minor: int | None = None,
    schedule: str = "due_date",
    schedule_days: int = 0,
    grace_days: int = 0,
    grouping: str = "per_invoice",
    pause_on_dispute: bool = True,
    actor: str,
) -> AutopayRule:
    """Create or replace the client's rule after checking every field; audited.

    Raises AutopayRuleError with a message per wrong field and writes nothing in that case.
    Idempotent: saving the same values again changes only updated_at/updated_by.
    """
    kinds = tuple(dict.fromkeys(kinds))
    errors = rule_field_errors(
        kinds=kinds, max_minor=max_minor, approval_above_minor=approval_above_minor, schedule=schedule,
        schedule_days=schedule_days, grace_days=grace_days, grouping=grouping,
    )
    with store.write() as db:
        method = None
        if payment_method_id is not None:
            method = db.execute(
                "SELECT * FROM payment_methods WHERE id = ? AND client_id = ? AND removed_at IS NULL",
                (payment_method_id, client_id),
            ).fetchone()
            if method is None:
                errors["payment_method_id"] = "That payment method is not saved for this company."
        if enabled and payment_method_id is None:
            errors["payment_method_id"] = "Choose the card or bank account autopay charges."
        if enabled and not _overrides(db, client_id)["autopay_allowed"]:
            errors["enabled"] = "Autopay is not available for this company; please contact us."
        if errors:
            raise AutopayRuleError(errors)
        values = {
            "is_enabled": int(enabled),
            "payment_method_id": payment_method_id,
            "kinds_json": json.dumps(list(kinds)),
            "max_minor": max_minor,
            "approval_above_minor": approval_above_minor,
            "schedule": schedule,
            "schedule_days": schedule_days if schedule == "days_after_issue" else 0,
            "grace_days": grace_days,
            "grouping": grouping,
            "pause_on_dispute": int(pause_on_dispute),
            "updated_at": to_db(clock.utc_now()),
            "updated_by": actor,
        }
        cols = ", ".join(values)
        db.execute(
            f"INSERT INTO autopay_rules (client_id, {cols}) VALUES (?, {', '.join('?' * len(values))}) "
            f"ON CONFLICT (client_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in values)}",
            (client_id, *values.values()),
        )
        audit(
            db,
            clock,
            actor=actor,
            action="autopay.rule_saved",
            target=f"client:{client_id}",
            detail={k: v for k, v in values.items() if k not in ("updated_at", "updated_by")},
        )
        rule = get_rule(db, client_id)
    assert rule is not None
    return rule


# ------------------------------------------------------------------------------------- planning


def _overrides(db: Database, client_id: int) -> dict[str, Any]:
    """The finance team's per-client switches, read directly so autopay works without that table."""
    has = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'client_overrides'"
    ).fetchone()
    row = (
        db.execute("SELECT * FROM client_overrides WHERE client_id = ?", (client_id,)).fetchone()
        if has
        else None
    )
    if row is None:
        return {"is_paused": False, "autopay_allowed": True, "threshold": None}
    threshold = None
    if row["approval_threshold_minor"] is not None:
        threshold = (row["approval_threshold_minor"], row["approval_threshold_currency"])
    return {
        "is_paused": bool(row["is_paused"]),
        "autopay_allowed": bool(row["autopay_allowed"]),
        "threshold": threshold,
    }


def method_view(row: Any) -> MethodView:
    kind = "ach" if row["type"] == "us_bank_account" else "card"
    label = method_name(kind, brand=row["brand"], last4=row["last4"], bank_name=row["bank_name"])
    return MethodView(row["id"], row["processor_ref"], row["type"], label, row["exp_month"], row["exp_year"])


def charge_on(rule: AutopayRule, inv: Any) -> date:
    """The local date an invoice becomes due for autopay under `rule`."""
    if rule.schedule == "days_after_issue":
        base = date.fromisoformat(inv["issued_on"]) + timedelta(days=rule.schedule_days)
    else:
        base = date.fromisoformat(inv["due_on"])
    return base + timedelta(days=rule.grace_days)


def _open_invoices(db: Database, client_id: int) -> list[Any]:
    return db.execute(
        "SELECT i.id, i.number, i.kind, i.currency, i.issued_on, i.due_on, b.balance_minor, "
        "b.reserved_minor, "
        "i.total_minor, i.client_id, "
        "EXISTS (SELECT 1 FROM allocations a JOIN autopay_attempts t ON t.payment_id = a.payment_id "
        f" WHERE a.invoice_id = i.id AND (t.status IN {OPEN_ATTEMPT} OR t.next_retry_at IS NOT NULL)) "
        "AS has_open_attempt, "
        "EXISTS (SELECT 1 FROM allocations a JOIN disputes d ON d.payment_id = a.payment_id "
        f" WHERE a.invoice_id = i.id AND d.status IN {OPEN_DISPUTE}) AS is_disputed "
        "FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id "
        "WHERE i.client_id = ? AND i.status = 'open' AND i.is_approved = 1 AND b.balance_minor > 0 "
        "ORDER BY i.due_on, i.number",
        (client_id,),
    ).fetchall()


def _exhausted(db: Database, invoice_id: int, method_id: int) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM autopay_attempts t JOIN allocations a ON a.payment_id = t.payment_id "
            "WHERE a.invoice_id = ? AND t.is_final = 1 AND t.payment_method_id = ? LIMIT 1",
            (invoice_id, method_id),
        ).fetchone()
        is not None
    )


def _client_disputed(db: Database, client_id: int) -> bool:
    return (
        db.execute(
            f"SELECT 1 FROM disputes d JOIN payments p ON p.id = d.payment_id WHERE p.client_id = ? "
            f"AND d.status IN {OPEN_DISPUTE} LIMIT 1",
            (client_id,),
        ).fetchone()
        is not None
    )


def _rule_method(db: Database, rule: AutopayRule) -> MethodView | None:
    if rule.payment_method_id is None:
        return None
    row = db.execute(
        "SELECT * FROM payment_methods WHERE id = ? AND client_id = ? AND removed_at IS NULL",
        (rule.payment_method_id, rule.client_id),
    ).fetchone()
    return None if row is None else method_view(row)


def _surcharge(
    db: Database,
    settings: SurchargeSettings | None,
    client_id: int,
    amount: int,
    currency: str,
    method: MethodView,
) -> int:
    if settings is None:
        return 0
    return surcharge_for(
        settings,
        amount_minor=amount,
        currency=currency,
        method=method.payment_method,
        region=client_region(db, client_id),
    )


def _group(
    rule: AutopayRule,
    client_name: str,
    method: MethodView,
    due: list[tuple[Any, date]],
    db: Database,
    surcharge: SurchargeSettings | None,
) -> list[PlannedCharge]:
    groups: dict[tuple[Any, ...], list[tuple[Any, date]]] = {}
    for inv, on in due:
        key = (inv["id"],) if rule.grouping == "per_invoice" else (inv["currency"],)
        groups.setdefault(key, []).append((inv, on))
    out = []
    for members in groups.values():
        items = tuple(ChargeItem(inv["id"], inv["number"], inv["balance_minor"]) for inv, _ in members)
        currency = members[0][0]["currency"]
        total = sum(it.amount_minor for it in items)
        out.append(
            PlannedCharge(
                client_id=rule.client_id,
                client_name=client_name,
                items=items,
                currency=currency,
                charge_on=max(on for _, on in members),
                method=method,
                surcharge_minor=_surcharge(db, surcharge, rule.client_id, total, currency, method),
            )
        )
    return out


def plan_new(
    db: Database,
    *,
    today: date | None,
    client_id: int | None = None,
    surcharge: SurchargeSettings | None = None,
    approval_default: str = "",
    run_date: Callable[[date], date] | None = None,
) -> Plan:
    """First attempts autopay would make. `today=None` plans every future charge as well, for the
    upcoming list: each on the date `run_date` gives for its own date (the run that will make it),
    grouped as that run groups them; otherwise only those whose charge date is <= today.
    `approval_default` is the TOML `portal.approval_threshold` (see app.core.approvals)."""
    plan = Plan()
    sql = (
        "SELECT r.*, c.name AS client_name FROM autopay_rules r JOIN clients c ON c.id = r.client_id "
        "WHERE r.is_enabled = 1"
    )
    params: tuple[Any, ...] = ()
    if client_id is not None:
        sql += " AND r.client_id = ?"
        params = (client_id,)
    for row in db.execute(sql + " ORDER BY r.client_id", params).fetchall():
        rule = _rule(row)
        switches = _overrides(db, rule.client_id)
        method = _rule_method(db, rule)
        if method is None or switches["is_paused"] or not switches["autopay_allowed"]:
            continue
        client_on_hold = rule.pause_on_dispute and _client_disputed(db, rule.client_id)
        due: list[tuple[Any, date]] = []
        for inv in _open_invoices(db, rule.client_id):
            reason = _skip_reason(db, rule, method, switches, inv, client_on_hold, approval_default)
            if reason == "":
                continue  # not autopay's business (kind not covered, already in flight)
            on = charge_on(rule, inv)
            # A skipped charge ("not this time", app.core.autopay_skips) waits for its resume date.
            resume = _skip_resume(db, inv["id"])
            if resume is not None:
                on = max(on, resume)
            if reason:
                plan.skipped.append(Skipped(inv["id"], inv["number"], reason))
            elif today is None:
                due.append((inv, run_date(on) if run_date else on))
            elif on <= today:
                due.append((inv, on))
        if today is None:
            by_date: dict[date, list[tuple[Any, date]]] = {}
            for inv, on in due:
                by_date.setdefault(on, []).append((inv, on))
            for members in by_date.values():
                plan.charges += _group(rule, row["client_name"], method, members, db, surcharge)
        else:
            plan.charges += _group(rule, row["client_name"], method, due, db, surcharge)
    plan.charges.sort(key=lambda c: (c.charge_on, c.client_id, c.invoice_ids))
    return plan


def _skip_reason(
    db: Database,
    rule: AutopayRule,
    method: MethodView,
    switches: dict[str, Any],
    inv: Any,
    client_on_hold: bool,
    approval_default: str = "",
) -> str | None:
    """None: autopay charges it. "": silently not autopay's (kind, in flight). Text: why it is held."""
    if inv["kind"] not in rule.kinds or inv["has_open_attempt"] or inv["reserved_minor"]:
        return ""
    if inv["is_disputed"]:
        return "a payment of this invoice is disputed"
    if _line_disputed(db, inv["id"]):
        return "the client disputes a line of this invoice"
    if client_on_hold:
        return "autopay is paused while a dispute is open"
    if rule.max_minor is not None and inv["balance_minor"] > rule.max_minor:
        return "above the autopay maximum"
    if _awaits_approval(db, rule, switches, inv, approval_default):
        return "waiting for an approver"
    if not card_chargeable(inv["balance_minor"], inv["currency"]):
        return "amount not chargeable by card"
    if _exhausted(db, inv["id"], method.id):
        return "autopay retries exhausted; pay it in the portal or save another method"
    return None


def plan_retries(
    db: Database,
    *,
    due_by: datetime | None,
    client_id: int | None = None,
    surcharge: SurchargeSettings | None = None,
) -> Plan:
    """Retries of failed attempts whose retry time is <= `due_by` (None: all scheduled ones).

    A retry charges what is still open of the failed attempt's invoices, with the rule's current
    method. A failed attempt whose invoices were all paid meanwhile is left out (and closed by the job).
    """
    plan = Plan()
    sql = (
        "SELECT t.*, c.name AS client_name FROM autopay_attempts t JOIN clients c ON c.id = t.client_id "
        "WHERE t.status = 'failed' AND t.next_retry_at IS NOT NULL"
    )
    params: list[Any] = []
    if due_by is not None:
        sql += " AND t.next_retry_at <= ?"
        params.append(to_db(due_by))
    if client_id is not None:
        sql += " AND t.client_id = ?"
        params.append(client_id)
    for t in db.execute(sql + " ORDER BY t.next_retry_at, t.id", params).fetchall():
        rule = get_rule(db, t["client_id"])
        method = _rule_method(db, rule) if rule and rule.is_enabled else None
        switches = _overrides(db, t["client_id"])
        if method is None or switches["is_paused"] or not switches["autopay_allowed"]:
            continue
        rows = db.execute(
            "SELECT i.id, i.number, i.currency, b.balance_minor, b.reserved_minor FROM allocations a "
            "JOIN invoices i ON i.id = a.invoice_id JOIN invoice_balances b ON b.invoice_id = i.id "
            "WHERE a.payment_id = ? AND a.kind = 'payment' AND i.status = 'open' AND b.balance_minor > 0 "
            "AND b.reserved_minor = 0 ORDER BY i.number",
            (t["payment_id"],),
        ).fetchall()
        if not rows:
            continue
        items = tuple(ChargeItem(r["id"], r["number"], r["balance_minor"]) for r in rows)
        total = sum(i.amount_minor for i in items)
        retry_at = datetime.fromisoformat(t["next_retry_at"].replace("Z", "+00:00"))
        plan.charges.append(
            PlannedCharge(
                client_id=t["client_id"],
                client_name=t["client_name"],
                items=items,
                currency=rows[0]["currency"],
                charge_on=retry_at.date(),
                method=method,
                surcharge_minor=_surcharge(db, surcharge, t["client_id"], total, rows[0]["currency"], method),
                retry_of=t["id"],
                is_retry=True,
            )
        )
    return plan


def due_charges(
    db: Database,
    *,
    today: date,
    now: datetime,
    surcharge: SurchargeSettings | None = None,
    approval_default: str = "",
) -> list[PlannedCharge]:
    """Everything the run at `now` (local date `today`) charges: due retries, then first attempts."""
    retries = plan_retries(db, due_by=now + timedelta(minutes=5), surcharge=surcharge).charges
    new = plan_new(db, today=today, surcharge=surcharge, approval_default=approval_default)
    return retries + new.charges


def _awaits_approval(
    db: Database, rule: AutopayRule, switches: dict[str, Any], inv: Any, approval_default: str
) -> bool:
    """Above the approval threshold (the rule's own, or the portal's: client override, else TOML)
    and not approved by an approver at the invoice's current total (app.core.approvals)."""
    limits = [rule.approval_above_minor]
    try:
        from app.core import approvals
    except ImportError:  # the portal's approvals are optional to this module
        approvals = None  # type: ignore[assignment]
        if switches["threshold"] and switches["threshold"][1] == inv["currency"]:
            limits.append(switches["threshold"][0])
    else:
        limits.append(
            approvals.threshold_minor(
                db, client_id=inv["client_id"], currency=inv["currency"], default=approval_default
            )
        )
    set_limits = [x for x in limits if x is not None]
    if not set_limits or inv["total_minor"] <= min(set_limits):
        return False
    if approvals is not None:
        return not approvals.is_approved(db, inv["id"])
    return db.execute("SELECT 1 FROM invoice_approvals WHERE invoice_id = ?", (inv["id"],)).fetchone() is None


def _skip_resume(db: Database, invoice_id: int) -> date | None:
    from app.core.autopay_skips import resume_on

    return resume_on(db, invoice_id)


def _line_disputed(db: Database, invoice_id: int) -> bool:
    """A contact disputes a line of it (app.core.line_disputes), when that feature is present."""
    has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'open_line_disputes'").fetchone()
    return bool(has) and db.execute(
        "SELECT 1 FROM open_line_disputes WHERE invoice_id = ? LIMIT 1", (invoice_id,)
    ).fetchone() is not None


def upcoming_charges(
    store: Store,
    clock: Clock,
    tz: ZoneInfo,
    client_id: int | None,
    *,
    run_time: str,
    surcharge: SurchargeSettings | None = None,
    approval_default: str = "",
) -> list[PlannedCharge]:
    """What autopay will charge and when, retries included, oldest first: one client's charges, or
    every client's with `client_id=None`.

    Each entry lists its invoices (number, amount), the amount with any surcharge, the method, and
    as `charge_on` the local date of the run that will really make it (`run_on`): a charge whose
    date has passed, or whose day's run at `run_time` is over, is made at the next run. The portal
    (home, invoice and autopay pages, the "first charge" message) and the admin dashboard all show
    this answer, so they cannot disagree.
    """
    db = store.db
    now = clock.utc_now()
    retries = [
        replace(c, charge_on=run_on(_local_date(c, db, tz), now=now, run_time=run_time, tz=tz))
        for c in plan_retries(db, due_by=None, client_id=client_id, surcharge=surcharge).charges
    ]
    # Dated by their run before they are grouped: overdue invoices of different due dates are one
    # charge of the next run for a rule that charges per client.
    new = plan_new(
        db,
        today=None,
        client_id=client_id,
        surcharge=surcharge,
        approval_default=approval_default,
        run_date=lambda on: run_on(on, now=now, run_time=run_time, tz=tz),
    ).charges
    return sorted(retries + new, key=lambda c: (c.charge_on, c.client_id, c.invoice_ids))


def _local_date(charge: PlannedCharge, db: Database, tz: ZoneInfo) -> date:
    at = db.execute("SELECT next_retry_at FROM autopay_attempts WHERE id = ?", (charge.retry_of,)).fetchone()[
        0
    ]
    return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(tz).date()


def local_run_at(on: date, run_time: str, tz: ZoneInfo) -> datetime:
    """The instant of `run_time` ("HH:MM") local on `on`; a time skipped by DST moves forward with it."""
    hour, minute = (int(p) for p in run_time.split(":"))
    return datetime.combine(on, time(hour, minute), tzinfo=tz)


def next_run_on(now: datetime, run_time: str, tz: ZoneInfo) -> date:
    """The local date of the next autopay run: today until its time has come, else tomorrow."""
    today = now.astimezone(tz).date()
    return today if now < local_run_at(today, run_time, tz) else today + timedelta(days=1)


def run_on(charge_on: date, *, now: datetime, run_time: str, tz: ZoneInfo) -> date:
    """The local date of the daily run that makes a charge planned for `charge_on`: that day's run
    while it is still ahead, else the next one (a run charges everything due on or before its day)."""
    return max(charge_on, next_run_on(now, run_time, tz))


def is_covered(db: Database, invoice_id: int, *, today: date) -> bool:
    """True when autopay will charge this invoice (now or on its date) or is already charging it.

    Reminders use this to hold a "please pay" email that autopay makes pointless. False again once
    the retries are exhausted, so the invoice returns to normal reminders.
    """
    inv = db.execute("SELECT client_id FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
    if inv is None:
        return False
    in_flight = db.execute(
        "SELECT 1 FROM autopay_attempts t JOIN allocations a ON a.payment_id = t.payment_id "
        f"WHERE a.invoice_id = ? AND (t.status IN {OPEN_ATTEMPT} OR t.next_retry_at IS NOT NULL) LIMIT 1",
        (invoice_id,),
    ).fetchone()
    if in_flight:
        return True
    resume = _skip_resume(db, invoice_id)
    if resume is not None and today < resume:
        return False  # the client skipped this charge: reminders as for any unpaid invoice
    return any(
        invoice_id in c.invoice_ids for c in plan_new(db, today=None, client_id=inv["client_id"]).charges
    )
