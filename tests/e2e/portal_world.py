"""A portal world for the browser tests: one MSP client with every kind of invoice, three people
(billing, approver, viewer), and another client whose data must never show.

Rows are written with the plain-SQL factories of the web tests (tests/web/factories.py), so each
test states what exists. The clock is the real one: Stripe's double and Chromium live in real time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from app.services import Services
from tests.web import factories as f

PASSWORD = f.PASSWORD
APPROVAL_TOML = '\n[portal]\ninvite_billing_contacts = false\napproval_threshold = "5000.00"\n'


@dataclass
class World:
    contoso: f.Ref
    fabrikam: f.Ref
    billing: str
    approver: str
    viewer: str
    outsider: str
    invoices: dict[str, f.Ref]


def _iso(day: date) -> str:
    return day.isoformat()


def build(svc: Services, today: date) -> World:
    contoso = f.make_client(svc, "Contoso Dental LLC")
    fabrikam = f.make_client(svc, "Fabrikam Builders Inc")
    billing = f.make_person(svc, contoso, "dana@contoso.example", role="billing")
    approver = f.make_person(svc, contoso, "alex@contoso.example", role="approver")
    viewer = f.make_person(svc, contoso, "val@contoso.example", role="viewer")
    outsider = f.make_person(svc, fabrikam, "ops@fabrikam.example", role="billing")
    inv: dict[str, f.Ref] = {}
    inv["INV-1042"] = f.make_invoice(
        svc,
        contoso,
        "INV-1042",
        kind="agreement",
        agreement="Managed services — Gold",
        issued_on=_iso(today - timedelta(days=40)),
        due_on=_iso(today - timedelta(days=10)),
        total_minor=125_000,
        tax_minor=0,
        lines=[
            {
                "description": "Managed services, 25 seats",
                "amount_minor": 100_000,
                "agreement": "Managed services — Gold",
                "service": "Help desk",
            },
            {
                "description": "Backup storage 2 TB",
                "amount_minor": 25_000,
                "agreement": "Managed services — Gold",
                "service": "Backup",
            },
        ],
    )
    inv["INV-1043"] = f.make_invoice(
        svc,
        contoso,
        "INV-1043",
        kind="project",
        project="Office move",
        phase="Cabling",
        issued_on=_iso(today - timedelta(days=5)),
        due_on=_iso(today + timedelta(days=25)),
        total_minor=340_050,
        tax_minor=25_050,
        lines=[
            {
                "description": "Cat6 drops, 30 runs",
                "amount_minor": 240_000,
                "project": "Office move",
                "phase": "Cabling",
            },
            {
                "description": "Patch panel and rack",
                "amount_minor": 75_000,
                "project": "Office move",
                "phase": "Cabling",
                "service": "Hardware",
            },
        ],
    )
    inv["INV-1044"] = f.make_invoice(
        svc,
        contoso,
        "INV-1044",
        kind="time_and_materials",
        ticket="#5521 Printer offline",
        issued_on=_iso(today - timedelta(days=3)),
        due_on=_iso(today + timedelta(days=27)),
        total_minor=28_725,
        description="#5521 Printer offline",
        lines=[
            {
                "description": "Onsite visit 1.5 h",
                "amount_minor": 22_500,
                "ticket": "#5521 Printer offline",
                "service": "Onsite support",
            },
            {"description": "Fuser kit", "amount_minor": 6_225, "ticket": "#5521 Printer offline"},
        ],
    )
    inv["INV-1045"] = f.make_invoice(
        svc,
        contoso,
        "INV-1045",
        kind="product",
        description="Sales order SO-77: laptops",
        issued_on=_iso(today - timedelta(days=2)),
        due_on=_iso(today + timedelta(days=28)),
        total_minor=10_000,
        lines=[{"description": "USB-C dock", "amount_minor": 10_000, "service": "Hardware"}],
    )
    # Above the approval threshold of $5,000.00.
    inv["INV-1050"] = f.make_invoice(
        svc,
        contoso,
        "INV-1050",
        kind="project",
        project="Server refresh",
        issued_on=_iso(today - timedelta(days=1)),
        due_on=_iso(today + timedelta(days=29)),
        total_minor=780_000,
        lines=[{"description": "Two hosts, installed", "amount_minor": 780_000, "project": "Server refresh"}],
    )
    inv["CM-0007"] = f.make_invoice(
        svc,
        contoso,
        "CM-0007",
        kind="credit_memo",
        description="SLA credit — March outage",
        issued_on=_iso(today - timedelta(days=8)),
        due_on=_iso(today - timedelta(days=8)),
        total_minor=-30_760,
        lines=[{"description": "SLA credit — March outage", "amount_minor": -30_760}],
    )
    inv["FAB-1"] = f.make_invoice(
        svc,
        fabrikam,
        "FAB-1",
        total_minor=99_900,
        issued_on=_iso(today - timedelta(days=4)),
        due_on=_iso(today + timedelta(days=26)),
    )
    return World(contoso, fabrikam, billing, approver, viewer, outsider, inv)
