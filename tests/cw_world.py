"""A small ConnectWise world for integration tests: companies, contacts and invoices in the
vendor's own shapes, and the Cashloop config that points at the fake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from app.config import Config
from tests.conftest import make_config
from tests.fakes.connectwise import ConnectWiseFake

USD = {"id": 1, "symbol": "$", "currencyCode": "USD", "numberOfDecimals": 2, "name": "US Dollars"}


def cw_config(
    tmp_path: Path,
    cw: ConnectWiseFake,
    *,
    stripe_base: str = "http://127.0.0.1:9",
    smtp_port: int = 9,
    port: int = 8080,
    invite: bool = True,
    psa: str = "",
) -> Config:
    """The demo's config reading the ConnectWise fake; `psa` adds lines to the [psa] table."""
    user, private = cw.credentials
    company_id, public = user.split("+")
    section = f"""kind = "connectwise"
poll_minutes = 5
{psa}

[psa.connectwise]
base_url = "{cw.base_url}"
company_id = "{company_id}"
public_key = "{public}"
private_key = "{private}"
client_id = "{cw.client_id}"
"""
    old_files = f'kind = "files"\npoll_minutes = 5\n\n[psa.files]\npath = "{tmp_path / "psa-export"}"\n'
    return make_config(
        tmp_path,
        port=port,
        stripe_base=stripe_base,
        smtp_port=smtp_port,
        replace={
            old_files: section,
            "invite_billing_contacts = false": f"invite_billing_contacts = {str(invite).lower()}",
        },
    )


def company(cw: ConnectWiseFake, cid: int, name: str, identifier: str) -> dict[str, Any]:
    return cw.add_company(
        {"id": cid, "identifier": identifier, "name": name, "status": {"id": 1, "name": "Active"}}
    )


def contact(
    cw: ConnectWiseFake,
    cid: int,
    company_rec: dict[str, Any],
    first: str,
    last: str,
    email: str,
    *,
    billing: bool,
) -> dict[str, Any]:
    ref = {k: company_rec[k] for k in ("id", "identifier", "name")}
    return cw.add_contact(
        {
            "id": cid,
            "firstName": first,
            "lastName": last,
            "company": ref,
            "inactiveFlag": False,
            "communicationItems": [
                {
                    "id": cid * 10,
                    "type": {"id": 1, "name": "Email"},
                    "value": email,
                    "defaultFlag": True,
                    "communicationType": "Email",
                }
            ],
            "types": [{"id": 7, "name": "Billing"}] if billing else [{"id": 8, "name": "Service"}],
        }
    )


def invoice(
    cw: ConnectWiseFake,
    iid: int,
    number: str,
    company_rec: dict[str, Any],
    *,
    kind: str,
    total: str,
    tax: str = "0",
    due: str = "2026-03-31",
    **extra: Any,
) -> dict[str, Any]:
    subtotal = Decimal(total) - Decimal(tax)
    rec: dict[str, Any] = {
        "id": iid,
        "invoiceNumber": number,
        "type": "Agreement" if kind == "agreement" else "Standard",
        "status": {"id": 2, "name": "Sent"},
        "company": {k: company_rec[k] for k in ("id", "identifier", "name")},
        "date": "2026-03-01T00:00:00Z",
        "dueDate": f"{due}T00:00:00Z",
        "currency": USD,
        "agreementAmount": float(subtotal) if kind == "agreement" else 0.0,
        "serviceTotal": float(subtotal) if kind in ("project", "time_and_materials") else 0.0,
        "productTotal": float(subtotal) if kind == "product" else 0.0,
        "expenseTotal": 0.0,
        "subtotal": float(subtotal),
        "salesTax": float(Decimal(tax)),
        "total": float(Decimal(total)),
        "payments": 0.0,
        "credits": 0.0,
        "balance": float(Decimal(total)),
    }
    if kind == "agreement":
        rec["agreement"] = {"id": 501, "name": "Managed Services — 25 seats"}
    if kind == "project":
        rec["project"] = {"id": 601, "name": "Office 365 migration"}
        rec["phase"] = {"id": 602, "name": "Phase 2 — mailboxes"}
    if kind == "time_and_materials":
        rec["ticket"] = {"id": 48213, "summary": "Printer offline"}
    rec.update(extra)
    return cw.add_invoice(rec)


def contoso(cw: ConnectWiseFake) -> dict[str, Any]:
    """Contoso Dental with three invoices (agreement, project, T&M) and Fabrikam next door."""
    c = company(cw, 250, "Contoso Dental LLC", "ContosoDental")
    contact(cw, 2501, c, "Dana", "Reyes", "ap@contoso.example", billing=True)
    contact(cw, 2502, c, "Sam", "Okafor", "it@contoso.example", billing=False)
    invs = [
        invoice(cw, 9001, "INV-1042", c, kind="agreement", total="1250.00", tax="0"),
        invoice(cw, 9002, "INV-1043", c, kind="project", total="3400.50", tax="250.50"),
        invoice(cw, 9003, "INV-1044", c, kind="time_and_materials", total="287.25", tax="21.25"),
    ]
    f = company(cw, 260, "Fabrikam Builders Inc", "Fabrikam")
    contact(cw, 2601, f, "Lee", "Chen", "ap@fabrikam.example", billing=True)
    other = invoice(cw, 9101, "INV-2001", f, kind="agreement", total="999.00")
    return {"company": c, "invoices": invs, "other_company": f, "other_invoice": other}


def open_quarantine(services: Any, obj: str = "invoice") -> dict[str, str]:
    """remote_id -> reason of the unresolved quarantine rows for `obj`."""
    return {
        r["remote_id"]: r["reason"]
        for r in services.store.all(
            "SELECT remote_id, reason FROM quarantine WHERE object = ? AND resolved_at IS NULL", (obj,)
        )
    }


def invoice_numbers(services: Any) -> set[str]:
    return {r[0] for r in services.store.all("SELECT number FROM invoices")}
