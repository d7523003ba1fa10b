"""Xero (Accounting API 2.0) as Cashloop's books: payments, reversals, payouts, and the tie-out reads.

What is written, and why (objects from tests/specs/xero-accounting-subset.yaml):

- A payment is ONE Xero object in the clearing bank account (`clearing_account`): a plain Payment
  when it pays one invoice, else a BatchPayment, one bank line with a Payment per invoice for its
  allocated amount. Its Reference is the payment token. A card surcharge is never applied to an
  invoice: it is a RECEIVE bank transaction in the clearing account coded to `surcharge_account`.
- A refund or dispute reopens invoices in Cashloop, so it must reopen them in Xero too (else the
  receivables disagree). Xero cannot reduce a payment, and a credit note or a SPEND would leave
  the invoice paid; the only object that reopens an invoice is the payment itself, deleted
  (Status DELETED). So a reversal deletes the payment's live booking and books what stays
  applied as a replacement, dated like the original, Reference "<token> after <reversal>". Money
  left the clearing account by exactly the reopened amount, which is what the payout's net line
  shows. The surcharge part goes out as a SPEND in the clearing account coded to
  `surcharge_account`. A won dispute books the re-applied amounts as a new booking ("<token> won
  <dispute>") and the surcharge as a RECEIVE again.
- A reversal is two steps (delete, then replace) and may be cut short between them. Before a
  booking is deleted it gets a history note naming its replacement's Reference; a repeat of the
  reversal looks for the replacement first, then for deleted bookings of the payment carrying
  that note, and books the replacement from them. Nothing is deleted twice (a deleted booking is
  only read), nothing booked twice (the replacement is found by Reference, created under one
  Idempotency-Key). A booking deleted by a person carries no such note, so it is never re-booked.
- A payout moves its net amount from the clearing account to `bank_account` as ONE bank
  transfer (clearing -> bank; bank -> clearing when Stripe took money back), equal to the payout
  to the cent, so it matches the bank feed line. (Xero refuses a bank account as the account of
  a bank transaction line, so a RECEIVE coded to the clearing account is not an option.) Stripe's
  fees are ONE SPEND in the clearing account coded to `fee_account`; balance adjustments a
  separate one. Refunds and disputes in the payout are not booked again: push_reversal booked
  them, so after a payout the clearing account holds nothing of it, and nothing counts twice.

Every create carries an Idempotency-Key derived from the outbox key (a retry inside one call is
replayed by Xero), and every push looks up by Reference first: after a response was lost, the
outbox's next attempt finds what the first one committed. A re-push after a booking was deleted
in Xero comes with a new outbox key, so Xero does not replay the dead object, and the lookup
(which skips deleted objects) lets it book a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from typing import Any

from app.config import XeroSettings
from app.core.clock import Clock
from sync.accounting.oauth import RefreshingTokens
from sync.accounting.xero_api import XeroApi
from sync.accounting.xero_api import connected_tenants as connected_tenants  # the connect flow uses it
from sync.accounting.xero_books import (
    Booking,
    add_note,
    bank_transaction,
    bank_transfer,
    create_booking,
    delete_booking,
    find_bank_transactions,
    find_bank_transfers,
    find_bookings,
    notes,
    token_bookings,
)
from sync.accounting.xero_limits import RateLimiter, shared_limiter
from sync.accounting.xero_match import InvoiceMatcher, Target
from sync.accounting.xero_reads import open_invoices, payments_between
from sync.accounting.xero_wire import amount, idempotency_key
from sync.base import (
    ConnectorError,
    JournalDeposit,
    JournalPayment,
    JournalReversal,
    MatchError,
    RemoteOpenInvoice,
    RemotePayment,
)
from sync.http import HttpClient

log = logging.getLogger(__name__)


class Xero:
    kind = "xero"
    supports_tieout = True

    def __init__(
        self,
        settings: XeroSettings,
        tokens: RefreshingTokens,
        http: HttpClient,
        clock: Clock,
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._s = settings
        self._clock = clock
        self._api = XeroApi(settings.api_base, tokens, http, limiter or shared_limiter())
        self._call = self._api.call
        self._pages = self._api.pages
        self._matcher = InvoiceMatcher(settings, self._pages)

    # ---- AccountingSink ---------------------------------------------------------------------------

    def push_payment(self, payment: JournalPayment, *, key: str) -> str:
        """One Payment/BatchPayment applied to the payment's invoices (+ the surcharge RECEIVE)."""
        if sum(a for _, a in payment.allocations) + payment.surcharge_minor != payment.amount_minor:
            raise ValueError(
                f"payment {payment.payment_token}: allocations and surcharge do not add up to the amount"
            )
        token, currency = payment.payment_token, payment.currency
        booking: Booking | None = None
        if payment.allocations:
            live = find_bookings(self._pages, token, currency)
            if len(live) > 1:
                log.warning("payment %s has %d live bookings in Xero", token, len(live))
            booking = (
                live[0]
                if live
                else self._book(
                    payment.allocations,
                    currency=currency,
                    client_name=payment.client_name,
                    reference=token,
                    on=payment.received_on,
                    key=idempotency_key(key),
                    what=f"payment {token}",
                )
            )
        surcharge = None
        if payment.surcharge_minor:
            surcharge = self._bank_line(
                "RECEIVE",
                bank=self._s.clearing_account,
                line=self._s.surcharge_account,
                amount_minor=payment.surcharge_minor,
                currency=currency,
                reference=token,
                description=f"card surcharge, payment {token}",
                on=payment.received_on,
                contact=payment.client_name or "Stripe",
                key=idempotency_key(key, "surcharge"),
            )
        return booking.ref if booking else str(surcharge)

    def push_reversal(self, reversal: JournalReversal, *, key: str) -> str:
        """Refund/dispute: replace the booking by what stays applied; won dispute: book it again."""
        r = reversal
        if sum(a for _, a in r.allocations) + r.surcharge_minor != r.amount_minor:
            raise ValueError(f"{r.kind} {r.reference}: allocations and surcharge do not add up to the amount")
        token, currency = r.payment_token, r.currency
        what = f"{r.kind} {r.reference} of payment {token}"
        won = r.kind == "dispute_won"
        reference = f"{token} {'won' if won else 'after'} {r.reference}"
        every = token_bookings(self._pages, token, currency) if r.allocations else []
        live = [b for b in every if not b.deleted]
        booking = next((b for b in live if b.reference == reference), None)
        if booking is None and r.allocations:
            if won:
                booking = self._book(
                    r.allocations,
                    currency=currency,
                    client_name=r.client_name,
                    reference=reference,
                    on=r.occurred_on,
                    key=idempotency_key(key),
                    what=what,
                )
            else:
                # deleted by an earlier attempt of this reversal, which stopped before the replacement
                done = [b for b in every if b.deleted and self._replaced_by(b, reference)]
                if live or done:
                    booking = self._replace(live, done, r, reference=reference, key=key, what=what)
                else:
                    log.info("%s: payment %s has no live booking in Xero, nothing to reopen", what, token)
        if r.surcharge_minor:
            self._bank_line(
                "RECEIVE" if won else "SPEND",
                bank=self._s.clearing_account,
                line=self._s.surcharge_account,
                amount_minor=r.surcharge_minor,
                currency=currency,
                reference=reference,
                description=f"card surcharge, {what}",
                on=r.occurred_on,
                contact=r.client_name or "Stripe",
                key=idempotency_key(key, "surcharge"),
            )
        return booking.ref if booking else f"Reversal:{reference}"

    def push_deposit(self, deposit: JournalDeposit, *, key: str) -> str:
        """The payout's transfer into the bank (equal to the payout) and its one fee line."""
        d = deposit
        fees = sum(line.fee_minor for line in d.lines)
        if fees != d.fee_minor:
            raise ValueError(
                f"payout {d.payout_id}: line fees add up to {fees}, the payout says {d.fee_minor}"
            )
        gross = sum(line.amount_minor for line in d.lines)
        if gross - d.fee_minor != d.amount_minor:
            raise ValueError(
                f"payout {d.payout_id}: lines {gross} minus fees {d.fee_minor} is not the "
                f"payout amount {d.amount_minor}"
            )
        waiting = next((ln for ln in d.lines if ln.kind == "payment" and not ln.remote_payment_ref), None)
        if waiting is not None:
            raise ConnectorError(
                f"payout {d.payout_id}: waiting for payment "
                f"{waiting.payment_token or waiting.processor_ref} to be booked in Xero",
                retryable=True,
            )
        adjustments = sum(line.amount_minor for line in d.lines if line.kind == "adjustment")
        transfer = self._transfer(d, key=idempotency_key(key, "transfer")) if d.amount_minor else None
        known = find_bank_transactions(self._pages, d.payout_id)
        s, cur, on = self._s, d.currency, d.arrival_on
        fee_ref = self._signed_line(
            -d.fee_minor,
            bank=s.clearing_account,
            line=s.fee_account,
            currency=cur,
            reference=f"{d.payout_id} fees",
            description=f"Stripe fees, payout {d.payout_id}",
            on=on,
            key=idempotency_key(key, "fees"),
            known=known,
        )
        self._signed_line(
            adjustments,
            bank=s.clearing_account,
            line=s.fee_account,
            currency=cur,
            reference=f"{d.payout_id} adjustments",
            description=f"Stripe adjustments, payout {d.payout_id}",
            on=on,
            key=idempotency_key(key, "adjustments"),
            known=known,
        )
        return transfer or fee_ref or f"Payout:{d.payout_id}"

    # ---- AccountingReader -------------------------------------------------------------------------

    def open_invoices(self) -> Iterator[RemoteOpenInvoice]:
        return open_invoices(self._pages, self._s)

    def payments_between(self, start: date, end: date) -> Iterator[RemotePayment]:
        """Per Cashloop payment token: its live bookings dated start..end plus its surcharge income."""
        return payments_between(self._pages, self._s, start, end)

    def _book(
        self,
        allocations: tuple[tuple[str, int], ...],
        *,
        currency: str,
        client_name: str,
        reference: str,
        on: date,
        key: str,
        what: str,
    ) -> Booking:
        targets = self._matcher.match(allocations, currency=currency, client_name=client_name, what=what)
        return create_booking(
            self._call,
            account_code=self._s.clearing_account,
            targets=targets,
            currency=currency,
            reference=reference,
            on=on,
            key=key,
        )

    def _transfer(self, d: JournalDeposit, *, key: str) -> str:
        """The payout's one bank transfer: found by its Reference (the payout id), else made."""
        s = self._s
        source, target = (
            (s.clearing_account, s.bank_account)
            if d.amount_minor > 0
            else (s.bank_account, s.clearing_account)
        )
        value = amount(abs(d.amount_minor), d.currency)
        for found in find_bank_transfers(self._pages, d.payout_id):
            codes = (
                (found.get("FromBankAccount") or {}).get("Code"),
                (found.get("ToBankAccount") or {}).get("Code"),
            )
            if codes != (source, target) or found.get("Amount") != value:
                raise ConnectorError(
                    f"payout {d.payout_id}: Xero has a bank transfer with that reference of "
                    f"{found.get('Amount')} from {codes[0]} to {codes[1]}, not {value} from {source} "
                    f"to {target}; a person must look at it",
                    retryable=False,
                )
            return f"BankTransfer:{found['BankTransferID']}"
        return bank_transfer(
            self._call,
            from_code=source,
            to_code=target,
            amount_minor=abs(d.amount_minor),
            currency=d.currency,
            reference=d.payout_id,
            on=d.arrival_on,
            key=key,
        )

    @staticmethod
    def _note(reference: str, r: JournalReversal) -> str:
        return f'Cashloop: replaced by "{reference}", what stays applied after {r.kind} {r.reference}'

    def _replaced_by(self, booking: Booking, reference: str) -> bool:
        mark = f'Cashloop: replaced by "{reference}"'
        return any(n.startswith(mark) for n in notes(self._call, booking))

    def _replace(
        self,
        live: list[Booking],
        done: list[Booking],
        r: JournalReversal,
        *,
        reference: str,
        key: str,
        what: str,
    ) -> Booking | None:
        """Delete the live bookings, then book what stays applied of them and of `done` (already
        deleted for this reversal). Deleting first: a replacement created before would exceed
        the AmountDue the old payments still hold. Each gets its note before its delete."""
        applied: dict[str, int] = {}
        for booking in [*live, *done]:
            for invoice_id, amount_minor in booking.lines:
                applied[invoice_id] = applied.get(invoice_id, 0) + amount_minor
        numbers = {
            str(i.get("InvoiceNumber")): str(i["InvoiceID"])
            for i in self._pages("/Invoices", "Invoices", {"IDs": ",".join(applied)})
        }
        for psa_number, amount_minor in r.allocations:
            invoice_id = numbers.get(self._matcher.xero_number(psa_number))
            if invoice_id is None or invoice_id not in applied:
                raise MatchError(
                    f"{what}: reopens invoice {psa_number}, which the payment's Xero booking "
                    f"does not pay (it pays {', '.join(sorted(numbers)) or 'nothing'})"
                )
            if applied[invoice_id] < amount_minor:
                raise MatchError(
                    f"{what}: reopens more of invoice {psa_number} than the payment's Xero "
                    f"booking applies to it"
                )
            applied[invoice_id] -= amount_minor
        by_id = {v: k for k, v in numbers.items()}
        for booking in live:
            add_note(
                self._call,
                booking,
                self._note(reference, r),
                key=idempotency_key(key, f"note-{booking.remote_id}"),
            )
            delete_booking(self._call, booking, key=idempotency_key(key, f"delete-{booking.remote_id}"))
        remain = [
            Target(invoice_id, by_id.get(invoice_id, ""), amount_minor)
            for invoice_id, amount_minor in applied.items()
            if amount_minor > 0
        ]
        if not remain:
            return None
        return create_booking(
            self._call,
            account_code=self._s.clearing_account,
            targets=remain,
            currency=r.currency,
            reference=reference,
            on=min(b.on for b in [*live, *done]),
            key=idempotency_key(key),
        )

    def _bank_line(
        self,
        kind: str,
        *,
        bank: str,
        line: str,
        amount_minor: int,
        currency: str,
        reference: str,
        description: str,
        on: date,
        key: str,
        contact: str = "Stripe",
        known: list[dict[str, Any]] | None = None,
    ) -> str:
        """The one RECEIVE/SPEND with this Reference: found if an earlier attempt made it, else made."""
        rows = find_bank_transactions(self._pages, reference) if known is None else known
        same = next((t for t in rows if t.get("Reference") == reference and t.get("Type") == kind), None)
        if same is not None:
            return f"BankTransaction:{same['BankTransactionID']}"
        return bank_transaction(
            self._call,
            kind=kind,
            bank_code=bank,
            line_code=line,
            amount_minor=amount_minor,
            currency=currency,
            reference=reference,
            description=description,
            on=on,
            key=key,
            contact=contact,
        )

    def _signed_line(self, amount_minor: int, *, bank: str, line: str, **rest: Any) -> str | None:
        """Money into `bank` from `line` when positive (RECEIVE), out of it when negative (SPEND)."""
        if amount_minor == 0:
            return None
        kind = "RECEIVE" if amount_minor > 0 else "SPEND"
        return self._bank_line(kind, bank=bank, line=line, amount_minor=abs(amount_minor), **rest)
