"""The daily tie-out: do Cashloop, the PSA, the accounting system and Stripe agree to the cent?

Two comparisons, each listing every difference with its most likely cause:

- Open AR, per invoice (and so per client and in total): what Cashloop says is still owed, what the
  accounting system says, and what the PSA says (read live, a full sweep, read-only).
- Payments of the period (local dates in the MSP's zone): those Cashloop recorded as succeeded, the
  PaymentIntents Stripe shows as succeeded, and the payments the accounting system holds with a
  Cashloop reference.

A difference that Cashloop itself explains (an outbox entry still waiting, dead, or a PSA sync that
has not run since) says so; anything else is "recorded only in X" for a person to look at.
Money is compared in minor units per currency; nothing is summed across currencies.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.core.clock import to_db
from app.core.money import Money
from app.core.store import Store

SYSTEMS = ("cashloop", "accounting", "psa", "stripe")


@dataclass(frozen=True)
class Difference:
    topic: str  # "open AR" or "payment"
    client: str
    subject: str  # invoice number or payment token / Stripe id
    currency: str
    amounts: dict[str, int | None]  # system -> minor units (None: the system does not have it)
    cause: str

    def line(self) -> str:
        shown = ", ".join(
            f"{name} {'—' if minor is None else Money(minor, self.currency).to_decimal()}"
            for name, minor in self.amounts.items()
        )
        return f"{self.topic} {self.subject} ({self.client}) {self.currency}: {shown}: {self.cause}"


@dataclass(frozen=True)
class ClientAr:
    client: str
    currency: str
    open_minor: dict[str, int]  # system -> open AR in minor units


@dataclass
class TieOut:
    start: date
    end: date
    systems: tuple[str, ...]
    entity: str = "default"  # the billing entity whose clients, Stripe account and books these are
    clients: list[ClientAr] = field(default_factory=list)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # currency -> system -> open minor
    payments: dict[str, dict[str, int]] = field(default_factory=dict)  # currency -> system -> received
    differences: list[Difference] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # system -> why it could not be read
    notes: list[str] = field(default_factory=list)  # what was not compared, and why (not a failure)

    @property
    def ties_out(self) -> bool:
        return not self.differences and not self.unavailable


@dataclass(frozen=True)
class OpenInvoice:
    client: str
    number: str
    currency: str
    open_minor: int


@dataclass(frozen=True)
class ReceivedPayment:
    client: str
    reference: str  # our payment token (Cashloop, accounting) or the PaymentIntent id (Stripe)
    intent_id: str | None
    currency: str
    amount_minor: int
    surcharge_minor: int = 0


# ----------------------------------------------------------------------------- what Cashloop knows


def cashloop_open(store: Store, entity_id: int | None = None) -> list[OpenInvoice]:
    """Every open invoice (of one entity's clients, if given) with its balance as Cashloop computes
    it (paid ones included: an invoice at 0.00 here and 70.00 elsewhere is a difference too)."""
    rows = store.all(
        "SELECT c.name AS client, i.number, i.currency, b.balance_minor FROM invoices i "
        "JOIN clients c ON c.id = i.client_id JOIN invoice_balances b ON b.invoice_id = i.id "
        "WHERE i.status = 'open' AND i.kind != 'credit_memo' AND (:entity IS NULL OR c.entity_id = :entity) "
        "ORDER BY c.name, i.number",
        {"entity": entity_id},
    )
    return [OpenInvoice(r["client"], r["number"], r["currency"], int(r["balance_minor"])) for r in rows]


def cashloop_payments(store: Store, start: date, end: date, tz: ZoneInfo,
                      entity_id: int | None = None) -> list[ReceivedPayment]:
    """Card and ACH payments (of one entity's clients, if given) that succeeded on start..end (local
    dates): what Stripe and the books should both hold."""
    since, until = _utc_bounds(start, end, tz)
    rows = store.all(
        "SELECT p.token, p.processor_ref, p.currency, p.amount_minor, p.surcharge_minor, c.name AS client "
        "FROM payments p "
        "JOIN clients c ON c.id = p.client_id WHERE p.status = 'succeeded' AND p.method IN ('card', 'ach') "
        "AND p.succeeded_at >= :since AND p.succeeded_at < :until "
        "AND (:entity IS NULL OR c.entity_id = :entity) ORDER BY p.id",
        {"since": since, "until": until, "entity": entity_id},
    )
    return [
        ReceivedPayment(
            r["client"],
            r["token"],
            r["processor_ref"],
            r["currency"],
            int(r["amount_minor"]),
            int(r["surcharge_minor"] or 0),
        )
        for r in rows
    ]


def _utc_bounds(start: date, end: date, tz: ZoneInfo) -> tuple[str, str]:
    lo = datetime.combine(start, time.min, tz)
    hi = datetime.combine(end + timedelta(days=1), time.min, tz)
    return to_db(lo), to_db(hi)


def _waiting(store: Store, kinds: tuple[str, ...], where: str, value: Any) -> str | None:
    """Why an effect has not landed yet, if the outbox knows: the newest entry that is not done."""
    marks = ", ".join("?" * len(kinds))
    row = store.one(
        f"SELECT id, kind, status, last_error FROM outbox WHERE kind IN ({marks}) AND status != 'done' "
        f"AND json_extract(payload_json, '{where}') = ? ORDER BY id DESC LIMIT 1",
        (*kinds, value),
    )
    if row is None:
        return None
    state = "failed for good" if row["status"] == "dead" else "still waiting"
    error = f": {row['last_error']}" if row["last_error"] else ""
    return f"outbox entry #{row['id']} ({row['kind']}) {state}{error}"


def _invoice_cause(store: Store, number: str, system: str) -> str | None:
    """An undelivered payment over this invoice explains a difference with `system`."""
    rows = store.all(
        "SELECT a.id AS allocation_id, a.payment_id FROM allocations a "
        "JOIN invoices i ON i.id = a.invoice_id "
        "JOIN payments p ON p.id = a.payment_id WHERE i.number = ? AND p.status = 'succeeded'",
        (number,),
    )
    for r in rows:
        if system == "accounting":
            why = _waiting(store, ("journal_payment",), "$.payment_id", r["payment_id"])
        else:
            why = _waiting(store, ("psa_payment",), "$.allocation_id", r["allocation_id"])
        if why:
            return why
    return None


def _written_back(store: Store, number: str) -> str | None:
    """The delivered write-backs of this invoice's payments, named for a person."""
    rows = store.all(
        "SELECT o.id FROM outbox o "
        "JOIN allocations a ON a.id = json_extract(o.payload_json, '$.allocation_id') "
        "JOIN invoices i ON i.id = a.invoice_id WHERE o.kind = 'psa_payment' AND o.status = 'done' "
        "AND i.number = ? ORDER BY o.id",
        (number,),
    )
    if not rows:
        return None
    return "outbox " + ", ".join(f"#{r['id']}" for r in rows) + " delivered"


# ----------------------------------------------------------------------------- the comparison


def compare_open_ar(store: Store, report: TieOut, views: dict[str, list[OpenInvoice]]) -> None:
    """Fill report.clients/totals and add a Difference per invoice whose open amount differs."""
    by_system: dict[str, dict[tuple[str, str], OpenInvoice]] = {
        name: {(inv.currency, inv.number): inv for inv in invoices} for name, invoices in views.items()
    }
    client_of: dict[tuple[str, str], str] = {}
    for name in views:
        for key, inv in by_system[name].items():
            client_of.setdefault(key, inv.client)
    per_client: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(views, 0))
    for key in sorted(client_of):
        currency, number = key
        amounts = {
            name: (by_system[name][key].open_minor if key in by_system[name] else None) for name in views
        }
        client = client_of[key]
        for name, minor in amounts.items():
            per_client[(client, currency)][name] += minor or 0
            report.totals.setdefault(currency, dict.fromkeys(views, 0))[name] += minor or 0
        here = amounts["cashloop"] or 0
        for name in views:
            # Absent and 0.00 open are the same fact: systems list open invoices, not paid ones.
            if name == "cashloop" or (amounts[name] or 0) == here:
                continue
            report.differences.append(
                Difference(
                    "open AR",
                    client,
                    number,
                    currency,
                    {"cashloop": amounts["cashloop"], name: amounts[name]},
                    _ar_cause(store, number, name, amounts["cashloop"], amounts[name]),
                )
            )
    report.clients = [
        ClientAr(client, currency, dict(sums)) for (client, currency), sums in sorted(per_client.items())
    ]


def _ar_cause(store: Store, number: str, system: str, ours: int | None, theirs: int | None) -> str:
    label = "the accounting system" if system == "accounting" else "the PSA"
    if ours is None:
        return f"open in {label} only: Cashloop has no open invoice {number} (not imported, void or deleted)"
    if theirs is None:
        return f"not found in {label} (never created there, numbered differently, or closed there)"
    waiting = _invoice_cause(store, number, system)
    if waiting and theirs > ours:
        return f"a Cashloop payment has not reached {label}: {waiting}"
    if system == "psa" and theirs > ours:
        written = _written_back(store, number)
        if written:
            return (f"Cashloop wrote its payment back to the PSA ({written}), and the PSA does not show it "
                    "yet (with the files connector: import payments.out.jsonl into the PSA)")
    if theirs > ours:
        return f"Cashloop has more paid or credited than {label} (a payment recorded only in Cashloop)"
    if system == "psa":
        return "the PSA shows more paid than Cashloop: a payment recorded in the PSA since the last sync"
    return f"{label} shows more paid or credited than Cashloop (a payment or credit recorded only there)"


def compare_payments(store: Store, report: TieOut, views: dict[str, list[ReceivedPayment]]) -> None:
    """Fill report.payments and add a Difference per payment missing from a system or differing.

    Stripe is matched by PaymentIntent id, the books by our payment token (several remote payments
    with one token, one per customer, are summed). The books hold a payment without its card
    surcharge (that is booked as income with the payout), so they are compared net of it."""
    ours = {p.reference: p for p in views["cashloop"]}
    by_intent = {p.intent_id: p for p in views["cashloop"] if p.intent_id}
    for name, payments in views.items():
        for p in payments:
            report.payments.setdefault(p.currency, dict.fromkeys(views, 0))[name] += p.amount_minor
    for name, payments in views.items():
        if name == "cashloop":
            continue
        theirs: dict[str, tuple[str, int]] = {}
        for p in payments:
            mine = by_intent.get(p.reference) if name == "stripe" else ours.get(p.reference)
            if mine is None:
                report.differences.append(
                    Difference(
                        "payment",
                        p.client or "?",
                        p.reference,
                        p.currency,
                        {"cashloop": None, name: p.amount_minor},
                        f"in {_label(name)} only: Cashloop has no succeeded payment for it in this period",
                    )
                )
                continue
            currency, minor = theirs.get(mine.reference, (p.currency, 0))
            theirs[mine.reference] = (
                p.currency if currency == p.currency else "mixed",
                minor + p.amount_minor,
            )
        for token, mine in ours.items():
            expected = mine.amount_minor - (mine.surcharge_minor if name == "accounting" else 0)
            found = theirs.get(token)
            if found is None:
                why = (
                    _waiting(store, ("journal_payment",), "$.payment_token", token)
                    if name == "accounting"
                    else None
                )
                report.differences.append(
                    Difference(
                        "payment",
                        mine.client,
                        token,
                        mine.currency,
                        {"cashloop": expected, name: None},
                        f"missing in {_label(name)}" + (f": {why}" if why else ""),
                    )
                )
            elif found != (mine.currency, expected):
                report.differences.append(
                    Difference(
                        "payment",
                        mine.client,
                        token,
                        mine.currency,
                        {"cashloop": expected, name: found[1]},
                        f"amount differs in {_label(name)} ({found[0]} there)",
                    )
                )


def _label(system: str) -> str:
    return {"accounting": "the accounting system", "psa": "the PSA", "stripe": "Stripe"}.get(system, system)


def to_json(report: TieOut) -> str:
    return json.dumps(
        {
            "period": [report.start.isoformat(), report.end.isoformat()],
        "entity": report.entity,
            "ties_out": report.ties_out,
            "unavailable": report.unavailable,
            "notes": report.notes,
            "totals": report.totals,
            "payments": report.payments,
            "clients": [
                {"client": c.client, "currency": c.currency, "open_minor": c.open_minor}
                for c in report.clients
            ],
            "differences": [
                {
                    "topic": d.topic,
                    "client": d.client,
                    "subject": d.subject,
                    "currency": d.currency,
                    "amounts": d.amounts,
                    "cause": d.cause,
                }
                for d in report.differences
            ],
        },
        indent=2,
        sort_keys=True,
    )


def group(items: Iterable[OpenInvoice]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for inv in items:
        out[inv.currency] += inv.open_minor
    return dict(out)
