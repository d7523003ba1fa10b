"""Rows for portal tests, written with plain SQL so each test states exactly what exists.

Personas: `acme` (the signed-in company) and `globex` (another company whose data must never
show). Money is in minor units; dates are ISO text as the store keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.core import logins
from app.core.clock import to_db
from app.core.keys import public_token
from app.services import Services

PASSWORD = "correct horse battery"
SYNCED_AT = "2026-03-01T00:00:00.000000Z"


@dataclass(frozen=True)
class Ref:
    id: int
    token: str


def make_client(svc: Services, name: str = "Acme Dental LLC", *, remote_id: str | None = None) -> Ref:
    token = public_token()
    with svc.store.write() as db:
        cur = db.execute(
            "INSERT INTO clients (entity_id, source, remote_id, name, token, synced_at) "
            "VALUES (?, 'files', ?, ?, ?, ?)",
            (svc.entity_id, remote_id or f"co-{token[:8]}", name, token, SYNCED_AT),
        )
    return Ref(int(cur.lastrowid), token)


def make_contact(
    svc: Services,
    client: Ref,
    email: str,
    *,
    role: str = "billing",
    is_active: bool = True,
    first_name: str = "Dana",
) -> int:
    with svc.store.write() as db:
        cur = db.execute(
            "INSERT INTO contacts (client_id, source, remote_id, email, first_name, role, is_active, "
            "synced_at) "
            "VALUES (?, 'files', ?, ?, ?, ?, ?, ?)",
            (client.id, f"ct-{public_token(6)}", email, first_name, role, int(is_active), SYNCED_AT),
        )
    return int(cur.lastrowid)


def make_login(svc: Services, email: str, password: str = PASSWORD) -> None:
    with svc.store.write() as db:
        logins.set_password(db, svc.clock, email, password)


def make_person(svc: Services, client: Ref, email: str, *, role: str = "billing") -> str:
    """A contact of `client` who has set a password."""
    make_contact(svc, client, email, role=role)
    make_login(svc, email)
    return email


def make_invoice(
    svc: Services,
    client: Ref,
    number: str,
    *,
    total_minor: int = 10_000,
    tax_minor: int = 0,
    currency: str = "USD",
    kind: str = "agreement",
    issued_on: str = "2026-03-01",
    due_on: str = "2026-03-31",
    status: str = "open",
    is_approved: bool = True,
    paid_elsewhere_minor: int = 0,
    agreement: str | None = None,
    project: str | None = None,
    phase: str | None = None,
    ticket: str | None = None,
    description: str | None = None,
    lines: list[dict[str, object]] | None = None,
) -> Ref:
    token = public_token()
    with svc.store.write() as db:
        cur = db.execute(
            "INSERT INTO invoices (client_id, source, remote_id, number, kind, status, issued_on, due_on, "
            "currency, subtotal_minor, tax_minor, total_minor, paid_elsewhere_minor, agreement, project, "
            "phase, "
            "ticket, description, token, is_approved, synced_at) "
            "VALUES (?, 'files', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                client.id,
                f"inv-{token[:10]}",
                number,
                kind,
                status,
                issued_on,
                due_on,
                currency,
                total_minor - tax_minor,
                tax_minor,
                total_minor,
                paid_elsewhere_minor,
                agreement,
                project,
                phase,
                ticket,
                description,
                token,
                int(is_approved),
                SYNCED_AT,
            ),
        )
        invoice_id = int(cur.lastrowid)
        for no, line in enumerate(
            lines or [{"description": f"{kind} services", "amount_minor": total_minor - tax_minor}], start=1
        ):
            amount = int(line.get("amount_minor", total_minor - tax_minor))  # type: ignore[call-overload]
            db.execute(
                "INSERT INTO invoice_lines (invoice_id, line_no, description, quantity, unit_price_minor, "
                "amount_minor, agreement, project, phase, ticket, service) "
                "VALUES (?, ?, ?, '1', ?, ?, ?, ?, ?, ?, ?)",
                (
                    invoice_id,
                    no,
                    line.get("description", "Services"),
                    amount,
                    amount,
                    line.get("agreement"),
                    line.get("project"),
                    line.get("phase"),
                    line.get("ticket"),
                    line.get("service"),
                ),
            )
    return Ref(invoice_id, token)


def make_payment(
    svc: Services,
    client: Ref,
    allocations: list[tuple[Ref, int]],
    *,
    status: str = "succeeded",
    currency: str = "USD",
    created_at: datetime = datetime(2026, 3, 5, 16, 0, tzinfo=UTC),
    failure_reason: str | None = None,
) -> Ref:
    token = public_token()
    at = to_db(created_at)
    total = sum(amount for _, amount in allocations)
    with svc.store.write() as db:
        cur = db.execute(
            "INSERT INTO payments (token, client_id, method, amount_minor, currency, status, processor, "
            "idem_key, "
            "initiated_by, created_at, updated_at, succeeded_at, failure_reason) "
            "VALUES (?, ?, 'card', ?, ?, ?, 'stripe', ?, 'test', ?, ?, ?, ?)",
            (
                token,
                client.id,
                total,
                currency,
                status,
                f"test-{token}",
                at,
                at,
                at if status == "succeeded" else None,
                failure_reason,
            ),
        )
        payment_id = int(cur.lastrowid)
        for invoice, amount in allocations:
            db.execute(
                "INSERT INTO allocations (payment_id, invoice_id, amount_minor, currency, source_ref, "
                "created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (payment_id, invoice.id, amount, currency, f"test-{payment_id}-{invoice.id}", at),
            )
    return Ref(payment_id, token)


def outbox_emails(svc: Services) -> list[dict[str, object]]:
    import json

    return [
        json.loads(r["payload_json"])
        for r in svc.store.all("SELECT payload_json FROM outbox WHERE kind = 'email' ORDER BY id")
    ]
