"""The small interfaces every connector implements, and the value types they hand to the core.

Connectors turn vendor records into these types at the edge; the core never sees a vendor dict
except as `raw` (kept verbatim for audit and quarantine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, Protocol

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


@dataclass(frozen=True)
class RemoteCompany:
    remote_id: str
    name: str
    identifier: str | None = None
    parent_remote_id: str | None = None
    billing_contact_remote_id: str | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RemoteContact:
    remote_id: str
    company_remote_id: str
    email: str | None
    first_name: str
    last_name: str
    is_billing: bool
    is_active: bool = True
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RemoteLine:
    description: str
    quantity: str  # decimal string, never a float
    unit_price_minor: int
    amount_minor: int
    agreement: str | None = None
    project: str | None = None
    phase: str | None = None
    ticket: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class RemoteInvoice:
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
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Rejected:
    """A record the connector could not map: quarantined by the core with `reason`."""

    object: Literal["company", "contact", "invoice"]
    remote_id: str
    reason: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


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


class AccountingSink(Protocol):
    kind: str

    def push_payment(self, payment: JournalPayment, *, key: str) -> str:
        """Record one payment applied to its invoices; returns the remote reference. Idempotent by key."""
        ...
