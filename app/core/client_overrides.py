"""Per-client exceptions to the MSP's defaults, set by the finance team and audited.

`None` in a field means "use the default" (from config, or the area that owns the behaviour):
- `reminder_offsets`: days relative to the due date a reminder goes (-3 = three days before);
- `is_paused`: a collections hold: no reminders and no autopay charges while set;
- `autopay_allowed`: whether the client may turn autopay on (and keep it running);
- `payment_methods`: which methods the client may pay with in the portal;
- `grace_days`: days after the due date before an invoice counts as late for reminders/fees;
- `approval_threshold`: invoices above it need an approver before they are paid;
- `extra_recipients`: addresses that get the client's reminders and statements besides its
  billing contacts (an accounts-payable mailbox that is no contact at the PSA).
Reminders, autopay and approvals read these with `get_overrides`; `recipients` is who a
client's reminders and statements go to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sqlite_utils import Database

from app.core.addresses import AddressError, normalize_email
from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.money import Money, MoneyError

PORTAL_METHODS = ("card", "ach")
MAX_OFFSETS = 12
MAX_EXTRA_RECIPIENTS = 10


class OverrideError(ValueError):
    """Some fields are wrong; `errors` maps each field name to a message for the person."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ClientOverrides:
    reminder_offsets: tuple[int, ...] | None = None
    is_paused: bool = False
    pause_reason: str = ""
    autopay_allowed: bool = True
    payment_methods: tuple[str, ...] | None = None
    grace_days: int | None = None
    approval_threshold: Money | None = None
    extra_recipients: tuple[str, ...] = ()

    def describe(self) -> dict[str, object]:
        """A JSON-ready view (for the audit log and the page)."""
        d = asdict(self)
        d["approval_threshold"] = (
            None
            if self.approval_threshold is None
            else [self.approval_threshold.amount_minor, self.approval_threshold.currency]
        )
        return d


DEFAULTS = ClientOverrides()


def get_overrides(db: Database, client_id: int) -> ClientOverrides:
    """The client's overrides; DEFAULTS when none were ever set."""
    row = db.execute("SELECT * FROM client_overrides WHERE client_id = ?", (client_id,)).fetchone()
    if row is None:
        return DEFAULTS
    threshold = None
    if row["approval_threshold_minor"] is not None:
        threshold = Money(row["approval_threshold_minor"], row["approval_threshold_currency"])
    offsets = json.loads(row["reminder_offsets_json"]) if row["reminder_offsets_json"] else None
    methods = json.loads(row["payment_methods_json"]) if row["payment_methods_json"] else None
    return ClientOverrides(
        reminder_offsets=None if offsets is None else tuple(offsets),
        is_paused=bool(row["is_paused"]),
        pause_reason=row["pause_reason"] or "",
        autopay_allowed=bool(row["autopay_allowed"]),
        payment_methods=None if methods is None else tuple(methods),
        grace_days=row["grace_days"],
        approval_threshold=threshold,
        extra_recipients=tuple(json.loads(row["extra_recipients_json"] or "[]")),
    )


@dataclass(frozen=True)
class Recipient:
    email: str
    first_name: str
    is_contact: bool  # a billing contact can be sent a sign-in link; an extra address cannot


def recipients(db: Database, client_id: int) -> list[Recipient]:
    """Who gets the client's reminders and statements: its active billing contacts, then the
    admin's extra addresses; each address once (case-insensitive), none a mail server refused."""
    refused = {
        r[0].lower() for r in db.execute("SELECT address FROM email_refusals")
    } | {
        r[0].lower()
        for r in db.execute(
            "SELECT email FROM contacts WHERE client_id = ? AND email_refused_at IS NOT NULL", (client_id,)
        )
    }
    out: list[Recipient] = []
    seen: set[str] = set()
    contacts = db.execute(
        "SELECT email, first_name FROM contacts WHERE client_id = ? AND role = 'billing' AND is_active = 1 "
        "AND email IS NOT NULL AND email_refused_at IS NULL ORDER BY email",
        (client_id,),
    ).fetchall()
    people = [Recipient(r["email"], r["first_name"] or "", True) for r in contacts]
    extras = [Recipient(e, "", False) for e in get_overrides(db, client_id).extra_recipients]
    for person in people + extras:
        key = person.email.strip().lower()
        if key in seen or key in refused:
            continue
        seen.add(key)
        out.append(person)
    return out


def _extra_recipients(text: str) -> tuple[str, ...]:
    """One address per line or comma-separated; raises ValueError naming the first bad one."""
    found: list[str] = []
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        if not part.strip():
            continue
        try:
            if any(ord(c) < 32 or ord(c) == 127 for c in part.strip()):
                # A NUL or escape inside an address would reach the SMTP RCPT command as it is.
                raise AddressError("control character")
            address = normalize_email(part)
        except AddressError:
            raise ValueError(f"{part.strip()[:80]!r} is not an email address") from None
        if address.lower() not in {a.lower() for a in found}:
            found.append(address)
    if len(found) > MAX_EXTRA_RECIPIENTS:
        raise ValueError(f"at most {MAX_EXTRA_RECIPIENTS} addresses")
    return tuple(found)


def _offsets(text: str) -> tuple[int, ...] | None:
    text = text.strip()
    if not text:
        return None
    try:
        values = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError("list whole days relative to the due date, such as -3, 0, 7, 14") from None
    if not values:
        return None
    if len(values) > MAX_OFFSETS:
        raise ValueError(f"at most {MAX_OFFSETS} reminders")
    if any(v < -60 or v > 365 for v in values):
        raise ValueError("each day must be between -60 (before the due date) and 365 (after it)")
    if len(set(values)) != len(values):
        raise ValueError("a day appears twice")
    return tuple(sorted(values))


def from_form(form: Mapping[str, object], currency: str) -> ClientOverrides:
    """Read the overrides form; raises OverrideError naming every wrong field. Blank = default."""
    errors: dict[str, str] = {}

    def text(name: str) -> str:
        value = form.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    offsets = None
    try:
        offsets = _offsets(text("reminder_offsets"))
    except ValueError as exc:
        errors["reminder_offsets"] = f"Reminder days: {exc}."
    grace: int | None = None
    if text("grace_days"):
        if not text("grace_days").isdigit() or int(text("grace_days")) > 90:
            errors["grace_days"] = "Grace days: a whole number from 0 to 90, or blank for the default."
        else:
            grace = int(text("grace_days"))
    threshold = None
    if text("approval_threshold"):
        try:
            threshold = Money.from_decimal(text("approval_threshold").replace(",", ""), currency)
            if threshold.amount_minor <= 0:
                raise MoneyError("not positive")
        except MoneyError:
            errors["approval_threshold"] = (
                f"Approval threshold: a positive amount in {currency} such as 5000.00, or blank for none."
            )
    methods: tuple[str, ...] | None = None
    if form.get("restrict_methods"):
        chosen = form.get("payment_methods", ())
        picked = [
            m for m in PORTAL_METHODS if m in (chosen if isinstance(chosen, list | tuple) else [chosen])
        ]
        if not picked:
            errors["payment_methods"] = "Payment methods: allow at least one, or untick the restriction."
        methods = tuple(picked)
    extras: tuple[str, ...] = ()
    try:
        extras = _extra_recipients(text("extra_recipients"))
    except ValueError as exc:
        errors["extra_recipients"] = (
            f"Extra recipients: {exc}. Give one address per line or separate them by commas."
        )
    paused = bool(form.get("is_paused"))
    reason = text("pause_reason")[:200]
    if paused and not reason:
        errors["pause_reason"] = "Say why the client is paused (the team sees it on the client page)."
    if errors:
        raise OverrideError(errors)
    return ClientOverrides(
        reminder_offsets=offsets,
        is_paused=paused,
        pause_reason=reason if paused else "",
        autopay_allowed=bool(form.get("autopay_allowed")),
        payment_methods=methods,
        grace_days=grace,
        approval_threshold=threshold,
        extra_recipients=extras,
    )


def set_overrides(db: Database, clock: Clock, client_id: int, new: ClientOverrides, *, actor: str) -> bool:
    """Store `new` for the client and audit the change (before and after); False if nothing changed."""
    before = get_overrides(db, client_id)
    if before == new:
        return False
    threshold = new.approval_threshold
    db.execute(
        "INSERT INTO client_overrides (client_id, reminder_offsets_json, is_paused, pause_reason, "
        "autopay_allowed, payment_methods_json, grace_days, approval_threshold_minor, "
        "approval_threshold_currency, extra_recipients_json, updated_at, updated_by) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (client_id) DO UPDATE SET reminder_offsets_json = excluded.reminder_offsets_json, "
        "is_paused = excluded.is_paused, pause_reason = excluded.pause_reason, "
        "autopay_allowed = excluded.autopay_allowed, payment_methods_json = excluded.payment_methods_json, "
        "grace_days = excluded.grace_days, approval_threshold_minor = excluded.approval_threshold_minor, "
        "approval_threshold_currency = excluded.approval_threshold_currency, "
        "extra_recipients_json = excluded.extra_recipients_json, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        (
            client_id,
            None if new.reminder_offsets is None else json.dumps(list(new.reminder_offsets)),
            int(new.is_paused),
            new.pause_reason or None,
            int(new.autopay_allowed),
            None if new.payment_methods is None else json.dumps(list(new.payment_methods)),
            new.grace_days,
            None if threshold is None else threshold.amount_minor,
            None if threshold is None else threshold.currency,
            json.dumps(list(new.extra_recipients)) if new.extra_recipients else None,
            to_db(clock.utc_now()),
            actor,
        ),
    )
    changed = {k: [v, new.describe()[k]] for k, v in before.describe().items() if v != new.describe()[k]}
    audit(
        db,
        clock,
        actor=actor,
        action="client.overrides_changed",
        target=f"client:{client_id}",
        detail={"changed": changed},
    )
    return True
