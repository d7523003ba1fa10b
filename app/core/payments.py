"""Portal payments: from "pay these invoices" to a recorded, allocated, announced payment.

The order of events keeps the promise "never twice, never lost":
1. `start_payment` writes the payment row (pending) and its allocations in one transaction,
   after checking every amount against what each invoice still owes.
2. `claim_for_submission` flips pending -> submitted with a conditional UPDATE; only the request
   that wins may call the processor, so a double click or a replayed POST cannot charge twice.
3. `record_intent` applies what the processor says (from the confirm call, the return page, a
   webhook or the recovery job, in any order, any number of times). Success writes the receipt,
   PSA write-backs and journal entry to the outbox in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from app.core import client_tree, entities
from app.core.approvals import unapproved_numbers
from app.core.audit import audit, raise_exception
from app.core.clock import Clock, local_today, to_db
from app.core.emails import date_long
from app.core.keys import derive_key, public_token
from app.core.money import Money, MoneyError, card_chargeable
from app.core.outbox import enqueue
from app.core.payment_outcomes import after_change
from app.core.payment_refs import payment_reference
from app.core.store import Store

log = logging.getLogger(__name__)

IN_FLIGHT = ("submitted", "requires_action", "processing")
FINAL = ("succeeded", "failed", "canceled")


class PaymentRequestError(ValueError):
    """The person asked for something that cannot be charged; the message says what, for them."""


@dataclass(frozen=True)
class PayItem:
    invoice_id: int
    amount_minor: int


@dataclass(frozen=True)
class PaymentPlan:
    payment_id: int
    token: str
    client_id: int
    amount_minor: int
    currency: str
    idem_key: str
    items: tuple[PayItem, ...]


@dataclass(frozen=True)
class Outcome:
    """What `record_intent` did: the payment's status afterwards and whether this call changed it."""

    status: str
    changed: bool
    message: str = ""


def _open_invoices(db, client_ids: Sequence[int], invoice_ids: Sequence[int]) -> dict[int, dict]:
    marks = ",".join("?" * len(invoice_ids))
    owners = ",".join("?" * len(client_ids))
    rows = db.execute(
        f"SELECT i.id, i.number, i.currency, i.status, i.is_approved, b.balance_minor, "
        f"(SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a JOIN payments p ON p.id = a.payment_id "
        f" WHERE a.invoice_id = i.id AND p.status IN ('submitted', 'requires_action', 'processing')) "
        f"AS reserved_minor "
        f"FROM invoices i JOIN invoice_balances b ON b.invoice_id = i.id "
        f"WHERE i.client_id IN ({owners}) AND i.id IN ({marks})",
        (*client_ids, *invoice_ids),
    ).fetchall()
    return {r["id"]: dict(r) for r in rows}


def start_payment(
    store: Store,
    clock: Clock,
    *,
    client_id: int,
    items: Sequence[PayItem],
    initiated_by: str,
    allow_partial: bool,
    minimum_partial: str,
    method: str = "card",
    surcharge_minor: int = 0,
    payment_method_ref: str | None = None,
    approval_threshold: str = "",
    for_children: bool = False,
) -> PaymentPlan:
    """Write a pending payment and its allocations after checking every amount.

    With `for_children`, the payer (`client_id`) may also pay invoices of the clients below it
    (app.core.client_tree): one payment of the parent, allocated to each child's invoices.

    Each amount must be positive, at most what the invoice still owes (less what payments in
    flight would take), in one currency, chargeable by card, and a partial amount only if
    allowed and not below the minimum. Earlier pending (never submitted) payments of this client
    that touch the same invoices are canceled, so an abandoned checkout cannot be paid later on
    top of this one. `surcharge_minor` (card surcharge, see app.core.surcharge) is added to the
    amount charged and never allocated. An invoice that awaits an approver's OK (the client's
    override threshold, else `approval_threshold`, the TOML portal.approval_threshold; see
    app.core.approvals) is refused whoever asks. Raises PaymentRequestError; writes nothing then.
    """
    if not items:
        raise PaymentRequestError("Choose at least one invoice to pay.")
    ids = [it.invoice_id for it in items]
    if len(set(ids)) != len(ids):
        raise PaymentRequestError("An invoice appears twice in this payment.")
    with store.write() as db:
        payable_by = client_tree.payable_family(db, client_id) if for_children else [client_id]
        invoices = _open_invoices(db, payable_by, ids)
        currencies = {inv["currency"] for inv in invoices.values()}
        if len(invoices) != len(ids):
            raise PaymentRequestError("One of the invoices is not available for payment.")
        try:  # one charge goes through one entity's Stripe account and books
            entities.check_one_entity(db, client_id, ids)
        except entities.EntityError as exc:
            raise PaymentRequestError(str(exc)) from None
        if len(currencies) != 1:
            raise PaymentRequestError("Invoices in different currencies must be paid separately.")
        currency = currencies.pop()
        for it in items:
            inv = invoices[it.invoice_id]
            _check_item(inv, it.amount_minor, allow_partial=allow_partial, minimum_partial=minimum_partial)
        waiting = unapproved_numbers(db, ids, default_threshold=approval_threshold)
        if waiting:
            raise PaymentRequestError(
                f"Invoice {', '.join(waiting)} needs an approver's OK before it can be paid."
            )
        if surcharge_minor < 0 or (surcharge_minor and method != "card"):
            raise PaymentRequestError("A surcharge applies to card payments only.")
        total = sum(it.amount_minor for it in items) + surcharge_minor
        if not card_chargeable(total, currency):
            raise PaymentRequestError(
                f"{Money(total, currency).to_decimal()} {currency} is not chargeable by card: the processor "
                "needs the last digit of a three-decimal amount to be 0. Please contact us to pay it."
            )
        _cancel_stale_pending(db, clock, client_id, ids)
        now = to_db(clock.utc_now())
        token = public_token()
        cur = db.execute(
            "INSERT INTO payments (token, client_id, method, amount_minor, currency, status, processor, "
            "idem_key, initiated_by, created_at, updated_at, surcharge_minor, payment_method_ref) "
            "VALUES (?, ?, ?, ?, ?, 'pending', 'stripe', ?, ?, ?, ?, ?, ?)",
            (token, client_id, method, total, currency, f"new-{token}", initiated_by, now, now,
             surcharge_minor, payment_method_ref),
        )
        payment_id = int(cur.lastrowid)
        idem_key = f"payment-{payment_id}"
        db.execute("UPDATE payments SET idem_key = ? WHERE id = ?", (idem_key, payment_id))
        for it in items:
            db.execute(
                "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, kind, source_ref, "
                "created_at) VALUES (?, ?, ?, ?, 'payment', ?, ?)",
                (
                    payment_id,
                    it.invoice_id,
                    it.amount_minor,
                    currency,
                    f"payment-{payment_id}-{it.invoice_id}",
                    now,
                ),
            )
        audit(
            db,
            clock,
            actor=initiated_by,
            action="payment.started",
            target=f"payment:{payment_id}",
            detail={
                "amount_minor": total,
                "surcharge_minor": surcharge_minor,
                "currency": currency,
                "invoices": [invoices[i]["number"] for i in ids],
            },
        )
    return PaymentPlan(payment_id, token, client_id, total, currency, idem_key, tuple(items))


def _check_item(inv: dict, amount_minor: int, *, allow_partial: bool, minimum_partial: str) -> None:
    number = inv["number"]
    if inv["status"] != "open" or not inv["is_approved"]:
        raise PaymentRequestError(f"Invoice {number} is not open for payment.")
    available = inv["balance_minor"] - inv["reserved_minor"]
    if inv["reserved_minor"] and available <= 0:
        raise PaymentRequestError(f"A payment for invoice {number} is already being processed.")
    if available <= 0:
        raise PaymentRequestError(f"Invoice {number} has nothing left to pay.")
    if amount_minor <= 0:
        raise PaymentRequestError(f"The amount for invoice {number} must be more than zero.")
    if amount_minor > available:
        due = Money(available, inv["currency"]).to_decimal()
        raise PaymentRequestError(f"The amount for invoice {number} is more than the {due} still due.")
    if amount_minor < available:
        if not allow_partial:
            raise PaymentRequestError(f"Invoice {number} must be paid in full.")
        try:
            minimum = Money.from_decimal(minimum_partial, inv["currency"]).amount_minor
        except MoneyError:
            minimum = 0
        if amount_minor < minimum:
            raise PaymentRequestError(
                f"A part payment of invoice {number} must be at least "
                f"{Money(minimum, inv['currency']).to_decimal()}."
            )


def _cancel_stale_pending(db, clock: Clock, client_id: int, invoice_ids: Sequence[int]) -> None:
    marks = ",".join("?" * len(invoice_ids))
    db.execute(
        f"UPDATE payments SET status = 'canceled', updated_at = ?, "
        f"failure_reason = 'replaced by a newer checkout' "
        f"WHERE client_id = ? AND status = 'pending' AND id IN "
        f"(SELECT payment_id FROM allocations WHERE invoice_id IN ({marks}))",
        (to_db(clock.utc_now()), client_id, *invoice_ids),
    )


def claim_for_submission(store: Store, clock: Clock, payment_id: int) -> bool:
    """pending -> submitted. True for exactly one caller; everyone else must not call the processor."""
    with store.write() as db:
        cur = db.execute(
            "UPDATE payments SET status = 'submitted', updated_at = ? WHERE id = ? AND status = 'pending'",
            (to_db(clock.utc_now()), payment_id),
        )
        return cur.rowcount == 1


def attach_intent(store: Store, clock: Clock, payment_id: int, intent_id: str) -> None:
    with store.write() as db:
        db.execute(
            "UPDATE payments SET processor_ref = ?, updated_at = ? WHERE id = ? AND processor_ref IS NULL",
            (intent_id, to_db(clock.utc_now()), payment_id),
        )


_STATUS_FROM_PROCESSOR = {
    "succeeded": "succeeded",
    "processing": "processing",
    "requires_action": "requires_action",
    "requires_confirmation": "requires_action",
    "requires_capture": "processing",
    "requires_payment_method": "failed",
    "canceled": "canceled",
}


def record_intent(
    store: Store,
    clock: Clock,
    *,
    payment_id: int,
    intent_id: str,
    processor_status: str,
    amount_minor: int,
    currency: str,
    failure: str | None = None,
    base_url: str,
    timezone,
    charge_ref: str | None = None,
) -> Outcome:
    """Apply the processor's view of a payment. Idempotent and order-proof.

    A succeeded payment never moves again. The success path checks that the processor received
    exactly the allocated amount in the allocated currency; a mismatch is not marked paid and
    opens one "amount mismatch" exception instead (a person decides). A change is followed, in
    the same transaction, by its consequences elsewhere (autopay attempts, notices; see
    app.core.payment_outcomes).
    """
    status = _STATUS_FROM_PROCESSOR.get(processor_status, "processing")
    now = clock.utc_now()
    with store.write() as db:
        pay = db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if pay is None:
            return Outcome("unknown", False, "no such payment")
        # "none-"/"declined-" stand in for an intent we never saw; the real one replaces them.
        placeholder = pay["processor_ref"] is None or pay["processor_ref"].startswith(("none-", "declined-"))
        if pay["processor_ref"] != intent_id and not placeholder:
            if status == "succeeded" and not intent_id.startswith(("none-", "declined-")):
                # Money arrived on an intent that is not the payment's: never ignored, a person decides.
                raise_exception(
                    db, clock, kind="unmatched_charge", ref=f"intent:{intent_id}",
                    summary=f"Stripe charged {amount_minor} {currency.upper()} (minor units) on {intent_id} "
                            "for "
                            f"payment {pay['token']}, whose intent is {pay['processor_ref']}: refund or "
                            "apply it",
                )
                return Outcome(pay["status"], False, "flagged: the charge is on another intent")
            return Outcome(pay["status"], False, "intent does not belong to this payment")
        if placeholder and pay["processor_ref"] != intent_id:
            db.execute("UPDATE payments SET processor_ref = ? WHERE id = ?", (intent_id, payment_id))
        if charge_ref and not pay["charge_ref"]:
            db.execute("UPDATE payments SET charge_ref = ? WHERE id = ?", (charge_ref, payment_id))
        # Re-read: the receipt, journal and PSA write-backs name the processor's references.
        pay = db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if pay["status"] == "succeeded" or pay["status"] == status:
            return Outcome(pay["status"], False)
        if status == "succeeded":
            if amount_minor != pay["amount_minor"] or currency.upper() != pay["currency"]:
                db.execute(
                    "UPDATE payments SET received_minor = ?, updated_at = ? WHERE id = ?",
                    (amount_minor, to_db(now), payment_id),
                )
                raise_exception(
                    db,
                    clock,
                    kind="amount_mismatch",
                    ref=f"payment:{payment_id}",
                    summary=(
                        f"amount mismatch: payment {pay['token']} expected {pay['amount_minor']} "
                        f"{pay['currency']} (minor units) but the processor reports {amount_minor} "
                        f"{currency.upper()}"
                    ),
                    detail={"intent": intent_id},
                )
                return Outcome(pay["status"], False, "amount mismatch")
            _succeed(db, clock, pay, now=now, base_url=base_url, timezone=timezone)
            after_change(db, clock, pay, "succeeded", None, base_url=base_url, timezone=timezone)
            return Outcome("succeeded", True)
        if pay["status"] in FINAL and status != "succeeded":
            # A late "failed" after "canceled" (or the reverse) changes nothing a person sees.
            return Outcome(pay["status"], False)
        db.execute(
            "UPDATE payments SET status = ?, failure_reason = ?, updated_at = ? WHERE id = ?",
            (status, failure if status == "failed" else None, to_db(now), payment_id),
        )
        audit(
            db,
            clock,
            actor="stripe",
            action=f"payment.{status}",
            target=f"payment:{payment_id}",
            detail={"intent": intent_id, "failure": failure},
        )
        after_change(db, clock, pay, status, failure, base_url=base_url, timezone=timezone)
        return Outcome(status, True, failure or "")


def _succeed(db, clock: Clock, pay, *, now, base_url: str, timezone) -> None:
    payment_id = pay["id"]
    db.execute(
        "UPDATE payments SET status = 'succeeded', succeeded_at = ?, updated_at = ?, failure_reason = NULL "
        "WHERE id = ?",
        (to_db(now), to_db(now), payment_id),
    )
    paid_on = local_today(clock, timezone).isoformat()
    allocs = db.execute(
        "SELECT a.id, a.amount_minor, i.id AS invoice_id, i.number, i.remote_id, i.source, b.balance_minor, "
        "i.client_id, ic.name AS client_name, ic.remote_id AS client_remote_id "
        "FROM allocations a JOIN invoices i ON i.id = a.invoice_id "
        "JOIN invoice_balances b ON b.invoice_id = i.id JOIN clients ic ON ic.id = i.client_id "
        # The payer's own invoices first, then each other company's (a parent paying for its children).
        "WHERE a.payment_id = ? ORDER BY i.client_id != ?, ic.name COLLATE NOCASE, i.number",
        (payment_id, pay["client_id"]),
    ).fetchall()
    client = db.execute("SELECT * FROM clients WHERE id = ?", (pay["client_id"],)).fetchone()
    for a in allocs:
        if a["balance_minor"] < 0:
            # The money arrived; it is recorded, and a person decides about the overpayment.
            raise_exception(
                db,
                clock,
                kind="overpayment",
                ref=f"invoice:{a['invoice_id']}",
                summary=f"invoice {a['number']} is overpaid by {-a['balance_minor']} minor units "
                f"after payment {pay['token']}",
            )
        enqueue(
            db,
            clock,
            kind="psa_payment",
            key=derive_key("psa-payment", allocation=a["id"]),
            payload={
                "allocation_id": a["id"],
                "invoice_remote_id": a["remote_id"],
                "source": a["source"],
                "amount_minor": a["amount_minor"],
                "currency": pay["currency"],
                "paid_on": paid_on,
                "reference": f"Cashloop {payment_reference(payment_id)} {pay['processor_ref'] or ''}".strip(),
            },
        )
    enqueue(
        db,
        clock,
        kind="journal_payment",
        key=derive_key("journal", payment=payment_id),
        payload={
            "payment_id": payment_id,
            "payment_token": pay["token"],
            "processor_ref": pay["processor_ref"],
            "method": pay["method"],
            "received_on": paid_on,
            "currency": pay["currency"],
            "amount_minor": pay["amount_minor"],
            "surcharge_minor": pay["surcharge_minor"],
            "client_name": client["name"],
            "client_remote_id": client["remote_id"],
            "allocations": [[a["number"], a["amount_minor"]] for a in allocs],
            # The company of each allocation's invoice (the payer's children when a parent pays).
            "allocation_clients": [[a["client_name"], a["client_remote_id"]] for a in allocs],
        },
    )
    recipients = [
        r["email"]
        for r in db.execute(
            "SELECT DISTINCT email FROM contacts WHERE client_id = ? AND role = 'billing' AND is_active = 1 "
            "AND email IS NOT NULL ORDER BY email",
            (pay["client_id"],),
        )
    ]
    if pay["initiated_by"].startswith("login:"):
        payer = pay["initiated_by"].removeprefix("login:")
        if payer.lower() not in {r.lower() for r in recipients}:
            recipients.insert(0, payer)
    first = db.execute(
        "SELECT first_name FROM contacts WHERE client_id = ? AND email = ? LIMIT 1",
        (pay["client_id"], recipients[0] if recipients else ""),
    ).fetchone()
    if recipients:
        enqueue(
            db,
            clock,
            kind="email",
            key=derive_key("receipt", payment=payment_id),
            payload={
                "template": "receipt",
                "to": recipients,
                "kind": "receipt",
                "context": {
                    "contact_first_name": first["first_name"] if first else "",
                    "client_name": client["name"],
                    "amount_minor": pay["amount_minor"],
                    "surcharge_minor": pay["surcharge_minor"],
                    "currency": pay["currency"],
                    "paid_on": date_long(paid_on),
                    "method_label": _method_label(pay["method"]),
                    "payment_token": pay["token"],  # finds the email from the payment (admin)
                    "payment_reference": payment_reference(payment_id),
                    "allocations": [
                        {
                            "number": a["number"],
                            "amount_minor": a["amount_minor"],
                            "balance_minor": max(0, a["balance_minor"]),
                            "company": a["client_name"],
                        }
                        for a in allocs
                    ],
                    # Named when the payment covers invoices of more than one company.
                    "companies": list(dict.fromkeys(a["client_name"] for a in allocs))
                    if len({a["client_id"] for a in allocs}) > 1 else [],
                },
            },
        )
    audit(
        db,
        clock,
        actor="stripe",
        action="payment.succeeded",
        target=f"payment:{payment_id}",
        detail={"amount_minor": pay["amount_minor"], "currency": pay["currency"]},
    )


def _method_label(method: str) -> str:
    return {
        "card": "Card",
        "ach": "Bank account (ACH)",
        "check": "Check",
        "wire": "Wire transfer",
        "cash": "Cash",
        "credit": "Credit",
    }.get(method, method)


def has_payment_in_flight(db, invoice_id: int) -> bool:
    """True while a payment of this invoice is submitted, waiting for 3-D Secure or processing
    (an ACH debit takes days): the invoice is not paid, but must not be dunned or charged again."""
    return db.execute(
        "SELECT 1 FROM allocations a JOIN payments p ON p.id = a.payment_id WHERE a.invoice_id = ? "
        f"AND p.status IN {IN_FLIGHT} LIMIT 1",
        (invoice_id,),
    ).fetchone() is not None


def is_covered_by_autopay(db, invoice_id: int, *, today) -> bool:
    """True when autopay will charge this invoice on its date or is charging it (see app.core.autopay)."""
    from app.core.autopay import is_covered

    return is_covered(db, invoice_id, today=today)


def reminder_hold(db, invoice_id: int, *, today) -> str | None:
    """Why a payment reminder for this invoice must not go out today, or None if it may.

    "payment processing" while a payment is in flight (B05: an ACH debit is not paid yet, but
    neither is it overdue), "autopay scheduled" while autopay covers it. For the reminders job.
    """
    if has_payment_in_flight(db, invoice_id):
        return "payment processing"
    if is_covered_by_autopay(db, invoice_id, today=today):
        return "autopay scheduled"
    return None
