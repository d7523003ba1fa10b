"""The small interfaces every connector implements, and the value types they hand to the core.

Connectors turn vendor records into these types at the edge; the core never sees a vendor dict
except as `raw` (kept verbatim for audit and quarantine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol

InvoiceKind = Literal["agreement", "project", "time_and_materials", "product", "credit_memo", "other"]


class ConnectorError(Exception):
    """A vendor call failed. `retryable` is True for timeouts, 429 and 5xx; False for auth/validation."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class RecordError(ValueError):
    """One vendor record cannot be mapped; it is quarantined with this reason, the rest goes on."""


# The records a connector yields are NamedTuples: as immutable as frozen dataclasses, and built in a
# fifth of the time (a backfill builds 400,000 of them). `raw` stays out of their repr.
NO_RAW: Mapping[str, Any] = MappingProxyType({})


def _repr(record: tuple[Any, ...]) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in record._asdict().items() if k != "raw")  # type: ignore[attr-defined]
    return f"{type(record).__name__}({fields})"


class RemoteCompany(NamedTuple):
    remote_id: str
    name: str
    identifier: str | None = None
    parent_remote_id: str | None = None
    billing_contact_remote_id: str | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = NO_RAW

    __repr__ = _repr


class RemoteContact(NamedTuple):
    remote_id: str
    company_remote_id: str
    email: str | None
    first_name: str
    last_name: str
    is_billing: bool
    is_active: bool = True
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = NO_RAW

    __repr__ = _repr


class RemoteLine(NamedTuple):
    description: str
    quantity: str  # decimal string, never a float
    unit_price_minor: int
    amount_minor: int  # before tax; an invoice's lines sum to its subtotal
    agreement: str | None = None
    project: str | None = None
    phase: str | None = None
    ticket: str | None = None
    service: str | None = None
    tax_minor: int = 0  # the line's own tax where the PSA itemises it (else the invoice's tax_minor only)


class RemoteInvoice(NamedTuple):
    remote_id: str
    number: str
    company_remote_id: str
    kind: InvoiceKind
    currency: str
    issued_on: date
    due_on: date
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    paid_minor: int  # everything the source says was paid or credited, ours included
    lines: tuple[RemoteLine, ...]
    is_void: bool = False
    is_approved: bool = True
    agreement: str | None = None
    project: str | None = None
    phase: str | None = None
    ticket: str | None = None
    description: str | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = NO_RAW

    __repr__ = _repr


class Rejected(NamedTuple):
    """A record the connector could not map: quarantined by the core with `reason`."""

    object: Literal["company", "contact", "invoice"]
    remote_id: str
    reason: str
    raw: Mapping[str, Any] = NO_RAW

    __repr__ = _repr


@dataclass(frozen=True)
class Page:
    """One committed unit of intake. `cursor` is stored only after the page's rows are committed."""

    items: list[Any]
    cursor: str | None


@dataclass(frozen=True)
class PaymentWriteBack:
    invoice_remote_id: str
    amount_minor: int
    currency: str
    paid_on: date
    reference: str  # our payment token and processor reference, for the PSA's notes


class PsaSource(Protocol):
    """A PSA read page by page. Page cursors are the connector's own text: poll_psa stores each one
    with its page and hands the last stored one back, so a killed sweep resumes where it stopped
    (see sync/sweep.py). `invoice_ids` (when `supports_deletion_check`) lists every invoice id the
    source still has, so the core can close invoices deleted there."""

    kind: str
    supports_payment_writeback: bool

    def companies(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteCompany | Rejected changed since `cursor` (None = everything)."""
        ...

    def contacts(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteContact | Rejected changed since `cursor`."""
        ...

    def invoices(self, cursor: str | None) -> Iterator[Page]:
        """Pages of RemoteInvoice | Rejected changed since `cursor`."""
        ...

    def invoice_ids(self) -> Iterator[str]:
        """Every invoice id the source has now (any status). Raises ConnectorError; read-only."""
        ...

    def record_payment(self, payment: PaymentWriteBack, *, key: str) -> str:
        """Record a payment against one invoice at the source; returns the remote payment id.

        Idempotent for a given `key`: a second call after a lost response finds the first
        payment instead of creating another. Raises ConnectorError.
        """
        ...


@dataclass(frozen=True)
class JournalPayment:
    payment_token: str
    processor_ref: str | None
    method: str
    received_on: date
    currency: str
    amount_minor: int
    client_name: str
    client_remote_id: str
    allocations: tuple[tuple[str, int], ...]  # (invoice number, amount_minor)
    surcharge_minor: int = 0  # card surcharge inside amount_minor, booked as income, not to an invoice
    # (client name, client remote id) of each allocation's invoice, in the same order; empty when
    # every invoice is the payer's. A parent paying for its children names each child here.
    allocation_clients: tuple[tuple[str, str], ...] = ()
    payment_reference: str = ""  # the "PAY-000123" on the receipt; the token stands in when empty


@dataclass(frozen=True)
class JournalReversal:
    """Money back out of a payment (refund, dispute) or back in (dispute won), per invoice."""

    kind: Literal["refund", "dispute", "dispute_won"]
    reference: str  # our refund token or Stripe's dispute id
    payment_token: str
    processor_ref: str | None
    method: str
    occurred_on: date
    currency: str
    amount_minor: int  # positive: what moved
    surcharge_minor: int
    client_name: str
    client_remote_id: str
    allocations: tuple[tuple[str, int], ...]  # (invoice number, amount_minor reopened or re-applied)
    payment_reference: str = ""  # the "PAY-000123" on the receipt; the token stands in when empty


@dataclass(frozen=True)
class DepositLine:
    """One Stripe balance transaction inside a payout, tied back to what Cashloop booked."""

    kind: Literal["payment", "refund", "dispute", "dispute_won", "adjustment"]
    processor_ref: str  # Stripe's source object: ch_/py_ (payment), re_ (refund), dp_/du_ (dispute)
    amount_minor: int  # signed gross: + money in (payment, dispute won), - money out (refund, dispute)
    fee_minor: int  # Stripe's fee on this item, positive = a cost (a refunded fee is negative)
    surcharge_minor: int = 0  # card surcharge inside amount_minor (booked as income, not to invoices)
    payment_token: str | None = None  # our payment this item belongs to, when known
    reference: str | None = None  # our refund token or Stripe's dispute id, for reversals
    client_name: str = ""
    client_remote_id: str = ""
    remote_payment_ref: str | None = None  # what push_payment returned for payment_token, if pushed
    payment_reference: str = ""  # the "PAY-000123" on the receipt, when the item is one of ours


@dataclass(frozen=True)
class JournalDeposit:
    """One Stripe payout: the bank line. amount_minor == sum(line.amount_minor) - fee_minor, always."""

    payout_id: str  # po_...
    arrival_on: date
    currency: str
    amount_minor: int  # what reached the bank
    fee_minor: int  # sum of the lines' fees, booked to the fee expense account
    lines: tuple[DepositLine, ...]


@dataclass(frozen=True)
class RemoteOpenInvoice:
    """An invoice as the accounting system sees it, for the tie-out report."""

    number: str
    customer_name: str
    currency: str
    total_minor: int
    balance_minor: int  # still open in the accounting system


@dataclass(frozen=True)
class RemotePayment:
    """A payment as the accounting system holds it, for the tie-out report and lookups."""

    remote_id: str
    reference: str  # our payment token, as we wrote it
    currency: str
    amount_minor: int
    received_on: date


class MatchError(ValueError):
    """The accounting system has no invoice (or several) for a PSA invoice number: a person must look.
    The outbox entry is parked in the exceptions queue with this message; nothing is guessed."""


class AccountingSink(Protocol):
    """Where payments, reversals and payouts are booked: the CSV/IIF journal, QuickBooks Online, Xero.

    Every push is idempotent by `key`: a retry after a lost response (timeout) finds what the first
    call created instead of creating another. Raises ConnectorError (retryable or not), MatchError,
    or AccountingAuthError when the connection needs a person (revoked, never connected).
    """

    kind: str

    def push_payment(self, payment: JournalPayment, *, key: str) -> str:
        """Record one payment applied to its invoices; returns the remote reference. Idempotent by key."""
        ...

    def push_reversal(self, reversal: JournalReversal, *, key: str) -> str:
        """Record a refund or dispute (or a won dispute's return); returns the remote reference.
        Idempotent by key."""
        ...

    def push_deposit(self, deposit: JournalDeposit, *, key: str) -> str:
        """Record one payout as one deposit/transfer into the bank whose total is the payout to the
        cent, with the fees on their own line(s); returns the remote reference. Idempotent by key."""
        ...


class AccountingReader(Protocol):
    """Optional sink capability for the tie-out report (`supports_tieout = True`)."""

    supports_tieout: bool

    def open_invoices(self) -> Iterator[RemoteOpenInvoice]:
        """Every invoice with a balance in the accounting system."""
        ...

    def payments_between(self, start: date, end: date) -> Iterator[RemotePayment]:
        """Payments dated start..end (inclusive) that carry a Cashloop reference."""
        ...


class AccountingAuthError(Exception):
    """The accounting connection needs a person (revoked, expired refresh token, never connected).
    Outbox entries wait (they are not failed) and the admin sees one clear error."""


@dataclass(frozen=True)
class DisputeNote:
    """A client's dispute of one invoice line, for the PSA's own records (a ticket note)."""

    invoice_remote_id: str
    invoice_number: str
    line_description: str
    amount_minor: int
    currency: str
    reason: str
    raised_by: str  # the contact's email
    ticket: str | None = None  # the line's ticket reference as the PSA named it ("#12345 Printer down")


class DisputeNotes(Protocol):
    """Optional PsaSource capability: a connector that can tell the PSA about a line dispute sets
    `supports_dispute_notes = True` and implements `add_dispute_note`. Others leave both out
    (see `supports_dispute_notes` below); ConnectWise does, because the API subset we build
    against (tests/specs/connectwise-psa-subset.json) has no ticket or note endpoint."""

    supports_dispute_notes: bool

    def add_dispute_note(self, note: DisputeNote, *, key: str) -> str:
        """Add a note (or ticket) about the dispute; returns its remote id. Idempotent by `key`:
        a retry after a lost response finds the first note. Raises ConnectorError."""
        ...


def supports_dispute_notes(source: object) -> bool:
    """True when `source` declares the optional DisputeNotes capability."""
    return getattr(source, "supports_dispute_notes", False) is True
