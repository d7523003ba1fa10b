"""Plain functions that put realistic rows in a store through the real intake code."""

from __future__ import annotations

from datetime import date

from app.jobs.intake import apply_page
from app.services import Services
from sync.base import Page, RemoteCompany, RemoteContact, RemoteInvoice, RemoteLine


def make_client(
    services: Services,
    remote_id: str = "250",
    name: str = "Contoso Dental LLC",
    *,
    billing_email: str = "ap@contoso.example",
    first_name: str = "Dana",
) -> int:
    with services.store.write() as db:
        apply_page(
            db,
            services.clock,
            source="files",
            obj="company",
            entity_id=services.entity_id,
            page=Page([RemoteCompany(remote_id=remote_id, name=name)], None),
        )
        apply_page(
            db,
            services.clock,
            source="files",
            obj="contact",
            entity_id=services.entity_id,
            page=Page(
                [
                    RemoteContact(
                        remote_id=f"{remote_id}-c1",
                        company_remote_id=remote_id,
                        email=billing_email,
                        first_name=first_name,
                        last_name="Reyes",
                        is_billing=True,
                    )
                ],
                None,
            ),
        )
    return int(services.store.scalar("SELECT id FROM clients WHERE remote_id = ?", (remote_id,)))


def make_invoice(
    services: Services,
    number: str,
    *,
    client_remote_id: str = "250",
    total_minor: int = 10_000,
    currency: str = "USD",
    paid_minor: int = 0,
    kind: str = "agreement",
    due_on: date = date(2026, 3, 31),
    tax_minor: int = 0,
) -> int:
    inv = RemoteInvoice(
        remote_id=f"inv-{number}",
        number=number,
        company_remote_id=client_remote_id,
        kind=kind,  # type: ignore[arg-type]
        currency=currency,
        issued_on=date(2026, 3, 1),
        due_on=due_on,
        subtotal_minor=total_minor - tax_minor,
        tax_minor=tax_minor,
        total_minor=total_minor,
        paid_minor=paid_minor,
        lines=(
            RemoteLine(
                description=f"{kind} services",
                quantity="1",
                unit_price_minor=total_minor - tax_minor,
                amount_minor=total_minor - tax_minor,
            ),
        ),
    )
    with services.store.write() as db:
        apply_page(
            db,
            services.clock,
            source="files",
            obj="invoice",
            entity_id=services.entity_id,
            page=Page([inv], None),
        )
    return int(services.store.scalar("SELECT id FROM invoices WHERE number = ?", (number,)))


def balance(services: Services, invoice_id: int) -> int:
    return int(
        services.store.scalar(
            "SELECT balance_minor FROM invoice_balances WHERE invoice_id = ?", (invoice_id,)
        )
    )
