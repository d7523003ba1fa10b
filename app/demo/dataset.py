"""A deterministic, realistic MSP dataset for the demo, written as a "files" PSA export.

`generate(folder, today=...)` writes three JSON arrays shaped like ConnectWise PSA REST 3.0
responses, so the files connector can reuse the ConnectWise mapping unchanged:

    companies.json  GET /company/companies     contacts.json  GET /company/contacts
    invoices.json   GET /finance/invoices      (+ a Cashloop extension field `lines`)

Like the real API, absent references are omitted rather than sent as null, timestamps are UTC
with a `Z`, and every record carries `_info.lastUpdated` (later than creation when a payment
was posted, so incremental polls see old invoices change).

How each invoice kind is encoded, for whoever maps it:
    agreement           type "Agreement", applyToType "Agreement", `agreement` reference
    project             type "Standard" (hourly) or "Progress" (fixed fee), applyToType
                        "ProjectPhase", `project` and `phase` references
    time & materials    type "Standard", applyToType "Ticket" with a `ticket` reference, or
                        applyToType "All" for a monthly roll-up of several tickets; only the
                        lines name those (`"ticket": "#48213 Printer offline"`)
    product             type "Standard", applyToType "SalesOrder", `salesOrder` reference;
                        productTotal (+ shipping in expenseTotal), never serviceTotal
    credit memo         type "CreditMemo", negative unit prices, amounts and totals

Money is built from integer cents and written as JSON numbers with at most two decimals; read
it with `json.load(fp, parse_float=Decimal)` to keep it exact. Every invoice satisfies
sum(lines.amount) == subtotal == agreementAmount + serviceTotal + productTotal + expenseTotal,
total == subtotal + salesTax and balance == total - payments - credits, to the cent. A line's
amount is quantity x unitPrice rounded half-up to the cent. All amounts are USD.

Names, addresses and phone numbers are invented; e-mail and web domains use the reserved
`.example` TLD (RFC 2606) so nothing in the demo can reach a real mailbox.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

KINDS = ("agreement", "project", "time_and_materials", "product", "credit_memo")

AGREEMENT_NAME = "Managed Services Agreement"
_AGREEMENT_TYPE = "Managed Services"
_USD = {
    "id": 1,
    "symbol": "$",
    "currencyCode": "USD",
    "decimalSeparator": ".",
    "numberOfDecimals": 2,
    "thousandsSeparator": ",",
    "negativeParenthesesFlag": False,
    "displaySymbolFlag": True,
    "currencyIdentifier": "USD",
    "displayIdFlag": False,
    "rightAlign": False,
    "name": "US Dollars",
}
_TERMS = {15: {"id": 2, "name": "Net 15"}, 30: {"id": 1, "name": "Net 30"}}
_STATUS_SENT = {"id": 2, "name": "Sent", "isClosed": False}
_STATUS_PARTIAL = {"id": 3, "name": "Partially Paid", "isClosed": False}
_STATUS_PAID = {"id": 4, "name": "Paid", "isClosed": True}
_STATUS_CLOSED = {"id": 5, "name": "Closed", "isClosed": True}  # a credit memo fully applied
_CONTACT_TYPES = {
    "approver": {"id": 1, "name": "Approver"},
    "billing": {"id": 2, "name": "Billing"},
    "decision": {"id": 3, "name": "Decision Maker"},
    "end_user": {"id": 4, "name": "End User"},
    "service": {"id": 5, "name": "Service"},
}
_DEPARTMENTS = {
    "agreement": {"id": 10, "name": "Managed Services"},
    "time_and_materials": {"id": 11, "name": "Help Desk"},
    "project": {"id": 12, "name": "Professional Services"},
    "product": {"id": 13, "name": "Procurement"},
    "credit_memo": {"id": 10, "name": "Managed Services"},
}
_LOCATION = {"id": 2, "name": "Chicago"}
_MEMBERS = ("jchen", "mokafor", "lrossi", "tbrennan")  # the MSP's own billing staff
_COUNTRIES = {
    "US": {"id": 1, "identifier": "US", "name": "United States"},
    "FR": {"id": 12, "identifier": "FR", "name": "France"},
    "DE": {"id": 13, "identifier": "DE", "name": "Germany"},
    "DK": {"id": 14, "identifier": "DK", "name": "Denmark"},
    "SE": {"id": 15, "identifier": "SE", "name": "Sweden"},
    "CA": {"id": 2, "identifier": "CA", "name": "Canada"},
}

# (name, city, state, zip, country, owner) - owner is the person behind a one-person practice.
_CLIENTS: tuple[tuple[str, str, str, str, str, str | None], ...] = (
    ("Café Lumière SARL", "Paris", "Île-de-France", "75011", "FR", None),
    ("Northgate Property Management", "Evanston", "IL", "60201", "US", None),
    ("Müller & Söhne GmbH", "München", "Bayern", "80331", "DE", None),
    ("Søren Dental ApS", "København", "Hovedstaden", "2100", "DK", None),
    ("Zoë Ortiz CPA", "Oak Park", "IL", "60302", "US", "Zoë Ortiz"),
    ("Harborview Family Dental", "Milwaukee", "WI", "53202", "US", None),
    ("Bluestem Veterinary Clinic", "Naperville", "IL", "60540", "US", None),
    ("Crescent City Title & Escrow", "New Orleans", "LA", "70130", "US", None),
    ("Peña & Álvarez Law Group", "Chicago", "IL", "60603", "US", None),
    ("Summit Ridge Orthopedics", "Schaumburg", "IL", "60173", "US", None),
    ("Summit Ridge Orthopedics — Eastside", "Elmhurst", "IL", "60126", "US", None),
    ("Lakeside Montessori School", "Highland Park", "IL", "60035", "US", None),
    ("Ironwood Construction Inc.", "Joliet", "IL", "60432", "US", None),
    ("Maple & Main Realty", "Madison", "WI", "53703", "US", None),
    ("Brightline Architecture PLLC", "Chicago", "IL", "60607", "US", None),
    ("Oakhurst Senior Living", "Arlington Heights", "IL", "60004", "US", None),
    ("Nguyễn Family Pharmacy", "Skokie", "IL", "60076", "US", None),
    ("Delacroix Interiors", "St. Louis", "MO", "63101", "US", None),
    ("Åsa Lindqvist Design AB", "Göteborg", "Västra Götaland", "41104", "SE", "Åsa Lindqvist"),
    ("O'Brien & Keane Accountants", "Chicago", "IL", "60611", "US", None),
    ("Redwood Pediatrics", "Aurora", "IL", "60505", "US", None),
    ("Keystone HVAC Services", "Gary", "IN", "46402", "US", None),
    ("Silverline Transport LLC", "Indianapolis", "IN", "46204", "US", None),
    ("Blue Heron Brewing Co.", "Grand Rapids", "MI", "49503", "US", None),
    ("Tidewater Insurance Agency", "Kenosha", "WI", "53140", "US", None),
    ("Meadowbrook Chiropractic", "Wheaton", "IL", "60187", "US", None),
    ("Granite State Engineering", "Rockford", "IL", "61101", "US", None),
    ("Pinecrest Dermatology", "Downers Grove", "IL", "60515", "US", None),
    ("Sunrise Bakery & Café", "Chicago", "IL", "60622", "US", None),
    ("Copperfield Manufacturing", "Elgin", "IL", "60120", "US", None),
    ("Westlake Wealth Advisors", "Lake Forest", "IL", "60045", "US", None),
    ("Hawthorne Library Foundation", "Peoria", "IL", "61602", "US", None),
    ("Birchwood Animal Hospital", "Bloomington", "IL", "61701", "US", None),
    ("Evergreen Landscaping", "Orland Park", "IL", "60462", "US", None),
    ("Starlight Events & Catering", "Chicago", "IL", "60654", "US", None),
    ("Coastal Physical Therapy", "Michigan City", "IN", "46360", "US", None),
    ("Fairview Community Church", "Fairview Heights", "IL", "62208", "US", None),
    ("Quill & Ink Publishing", "Ann Arbor", "MI", "48104", "US", None),
    ("Vantage Point Surveying", "Champaign", "IL", "61820", "US", None),
    ("Château Verde Winery", "Traverse City", "MI", "49684", "US", None),
    ("Kowalczyk Imports Inc.", "Chicago", "IL", "60630", "US", None),
    ("Björk & Lund Consulting", "Minneapolis", "MN", "55401", "US", None),
    ("Hōkū Solar Systems", "Des Moines", "IA", "50309", "US", None),
    ("Prairie Wind Credit Services", "Springfield", "IL", "62701", "US", None),
    ("Ridgeview Optometry", "Naperville", "IL", "60563", "US", None),
    ("Lindenwood Charter Academy", "St. Charles", "IL", "60174", "US", None),
    ("Thornbury Dental Lab", "Toronto", "ON", "M5V 2T6", "CA", None),
    ("García Brothers Logistics", "Cicero", "IL", "60804", "US", None),
)
# fmt: off
_SYNTH_FIRST = ("Apex", "Beacon", "Cedar", "Delta", "Elm", "Falcon", "Glacier", "Horizon", "Juniper",
                "Kestrel")
_SYNTH_SECOND = ("Dental", "Legal", "Realty", "Clinic", "Builders", "Advisors", "Logistics", "Studio")
# Hardware (products) is taxed; services and subscriptions are not, in these states.
_TAX_RATES = {"IL": "0.1025", "WI": "0.055", "IN": "0.07", "MI": "0.06", "MO": "0.0868", "LA": "0.0945",
              "MN": "0.0788", "IA": "0.07"}
_DIALLING_CODES = {"FR": 33, "DE": 49, "DK": 45, "SE": 46}
_LEGAL_SUFFIXES = {"sarl", "gmbh", "aps", "ab", "inc", "llc", "pllc", "co"}
_TRANSLIT = str.maketrans({"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "Ae", "ł": "l", "Ł": "L",
                           "đ": "d", "Đ": "D", "œ": "oe", "Œ": "Oe", "—": " ", "'": ""})

_FIRST_NAMES = ("José", "Chloé", "François", "Jürgen", "Siobhán", "Łukasz", "Renée", "Björn", "Ngozi",
                "Priya", "Hiroshi", "Mei", "Oluwaseun", "María", "Inés", "Noël", "Andrés", "Małgorzata",
                "Thảo", "Dana", "Marcus", "Hannah", "Kevin", "Rachel", "Tom", "Aisha", "Greg", "Laura",
                "Sam", "Olivia", "Ben", "Ingrid", "Rafael", "Camille", "Omar", "Yuki", "Elena", "Derek")
_LAST_NAMES = ("García", "Müller", "Dubois", "O'Connor", "Nguyễn", "Kowalski", "Jensen", "Peña", "Åberg",
               "Smith", "Johnson", "Patel", "Kim", "Okafor", "Rossi", "Schmidt", "Brennan", "Haddad",
               "Tanaka", "Lefèvre", "Ramírez", "Novák", "Fitzgerald", "Whitfield", "Carter", "Lindgren",
               "Moreau", "Walsh", "Ibáñez", "Sørensen", "Chen", "Baptiste", "Hughes", "Delgado")
_BILLING_TITLES = ("Office Manager", "Controller", "Bookkeeper", "CFO", "Accounts Payable Specialist",
                   "Practice Administrator", "Finance Director")
_SERVICE_TITLES = ("IT Coordinator", "Operations Manager", "Practice Manager", "Facilities Manager",
                   "Operations Director")
_APPROVER_TITLES = ("Managing Partner", "CEO", "Owner", "Executive Director", "President")
_END_USER_TITLES = ("Receptionist", "Project Coordinator", "Associate", "Front Desk Lead")
_STREETS = ("Main St", "Oak Ave", "Lake Shore Dr", "Market St", "Elm St", "Washington Blvd", "Harbor Rd",
            "Maple Ave", "Commerce Dr", "Park Pl", "River Rd", "Industrial Pkwy")

_TICKETS = ("Printer offline", "Outlook keeps asking for password", "VPN not connecting",
            "Laptop won't boot", "Replace failed disk in NAS", "Wi-Fi drops in conference room",
            "Phishing email reported", "Line-of-business server slow", "Install plotter driver",
            "MFA reset for user", "Teams audio cutting out", "Shared mailbox permissions",
            "Onboard new hire", "Offboard departing employee", "Firewall firmware update",
            "Backup job failed", "Scan to email not working", "Ransomware alert investigation",
            "Move desk phones to new suite", "Access point offline", "Expired SSL certificate",
            "OneDrive sync errors", "Imaging workstation slow", "Label printer jams",
            "Recover deleted files", "Conference room display not working", "QuickBooks won't open",
            "Set up new laptop", "Email bouncing from client domain", "Door badge system offline")
# (work role, hourly rate in cents, service)
_ROLES = (("Help desk (remote)", 12500, "Help desk"), ("Onsite technician", 15000, "Onsite support"),
          ("Senior engineer", 18500, "Professional services"), ("After-hours support", 22500, "Help desk"))
# (item, unit price in cents, service)
_PRODUCTS = (("Dell Latitude 5450 laptop", 128900, "Hardware"),
             ("Dell OptiPlex 7020 desktop", 94900, "Hardware"),
             ("Lenovo ThinkPad T14 laptop", 139900, "Hardware"),
             ('Dell 27" monitor P2725H', 27900, "Hardware"),
             ("Ubiquiti U7 Pro access point", 18900, "Hardware"),
             ("Ubiquiti 24-port PoE switch", 79900, "Hardware"),
             ("APC Smart-UPS 1500VA", 74900, "Hardware"),
             ("YubiKey 5 NFC", 5500, "Hardware"),
             ("Logitech MeetUp conference camera", 89900, "Hardware"),
             ("Synology DS923+ NAS", 64900, "Hardware"),
             ("Windows Server 2022 Standard licence", 109900, "Licensing"),
             ("Adobe Acrobat Pro annual licence", 23988, "Licensing"),
             ("Veeam Backup licence (annual, per server)", 52000, "Licensing"),
             ("Microsoft 365 Business Standard annual licence", 15000, "Licensing"))
# (project, phases, hardware billed with phase 2)
_PROJECTS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("Office 365 migration", ("Discovery", "Pilot group", "Mailbox cutover", "Decommission on-prem"), None),
    ("Firewall replacement", ("Design", "Install & cutover", "Tuning"), "Fortinet FortiGate 60F firewall"),
    ("Server 2012 R2 retirement", ("Assessment", "Migration", "Decommission"), None),
    ("Wi-Fi refresh", ("Site survey", "Install", "Handover"), "Ubiquiti U7 Pro access point"),
    ("Entra ID & Intune rollout", ("Planning", "Pilot", "Rollout", "Hardening"), None),
    ("Office move", ("Planning", "Cabling", "Move weekend", "Post-move support"), None),
    ("Backup modernisation", ("Assessment", "Implementation", "Restore testing"), "Synology DS923+ NAS"),
    ("Teams Phone rollout", ("Number porting", "Handsets", "Cutover"), "Yealink MP54 Teams phone"),
)
_PROJECT_HARDWARE = {"Fortinet FortiGate 60F firewall": 89500, "Ubiquiti U7 Pro access point": 18900,
                     "Synology DS923+ NAS": 64900, "Yealink MP54 Teams phone": 21900}
# fmt: on


@dataclass(frozen=True)
class DemoLogin:
    email: str
    client_name: str
    company_id: int
    open_invoices: int
    open_balance_minor: int


@dataclass(frozen=True)
class DatasetSummary:
    folder: Path
    companies: int
    contacts: int
    invoices: int
    lines: int
    by_kind: dict[str, int]
    first_invoice_on: date
    last_invoice_on: date
    paid: int
    partially_paid: int
    open: int
    overdue: int
    demo_logins: tuple[DemoLogin, ...]


@dataclass
class _Client:
    id: int
    name: str
    identifier: str
    domain: str
    city: str
    state: str
    zip: str
    country: str
    owner: str | None
    address: str
    phone: str
    terms_days: int
    tax_rate: Decimal
    profile: str
    seats: int
    servers: int
    acquired_on: date
    has_agreement: bool
    tier_cents: int
    parent: _Client | None = None
    contacts: list[dict[str, Any]] = field(default_factory=list)
    billing: dict[str, Any] | None = None
    primary: dict[str, Any] | None = None
    updated_at: datetime | None = None


@dataclass
class _Line:
    description: str
    quantity: Decimal
    unit_cents: int
    category: str  # agreement | service | product | expense: which CW sub-total it counts towards
    taxable: bool = False
    agreement: str | None = None
    project: str | None = None
    phase: str | None = None
    ticket: str | None = None
    service: str | None = None

    @property
    def amount_cents(self) -> int:
        # NOTE: the one rounding rule of the dataset: quantity x unit price, half-up to the cent.
        return int((self.quantity * self.unit_cents).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class _Invoice:
    client: _Client
    kind: str
    type: str
    issued_on: date
    lines: list[_Line]
    apply_to_type: str
    apply_to_id: int | None = None
    refs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str = ""
    customer_po: str = ""
    id: int = 0
    number: str = ""
    payments_cents: int = 0
    credits_cents: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""

    @property
    def due_on(self) -> date:
        return self.issued_on + timedelta(days=self.client.terms_days)

    @property
    def subtotal_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @property
    def tax_cents(self) -> int:
        base = sum(line.amount_cents for line in self.lines if line.taxable)
        return int((base * self.client.tax_rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents

    @property
    def balance_cents(self) -> int:
        return self.total_cents - self.payments_cents - self.credits_cents


def generate(
    folder: Path, *, today: date, seed: int = 7, clients: int = 42, invoices: int = 2100
) -> DatasetSummary:
    """Write companies.json, contacts.json and invoices.json into `folder` and describe them.

    The same (today, seed, clients, invoices) always gives byte-identical files. Invoices span
    the 24 months before `today` (none dated `today` itself, so nothing is stamped in the
    future). Raises ValueError for sizes too small to hold every kind of invoice.
    """
    if clients < 4:
        raise ValueError("clients must be at least 4")
    if invoices < 20:
        raise ValueError("invoices must be at least 20")
    rng = random.Random(seed)
    gen = _Generator(rng, today)
    client_list = gen.clients(clients)
    invoice_list = gen.invoices(client_list, invoices)

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "companies.json", [_company_json(c) for c in client_list])
    _write_json(folder / "contacts.json", [contact for c in client_list for contact in c.contacts])
    _write_json(folder / "invoices.json", [_invoice_json(i) for i in invoice_list])
    return _summary(folder, client_list, invoice_list, today)


class _Generator:
    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.today = today
        self.start = _add_months(today, -24)
        self.last_day = today - timedelta(days=1)
        self.next_contact_id = 1201
        self.next_comm_id = 5001
        self.emails: set[str] = set()

    # ------------------------------------------------------------------ clients and contacts
    def clients(self, count: int) -> list[_Client]:
        rng = self.rng
        specs = list(_CLIENTS)
        for i in range(count - len(specs)):  # beyond the hand-written list: plain synthetic names
            n = i // 80
            name = f"{_SYNTH_FIRST[i % 10]} {_SYNTH_SECOND[(i // 10) % 8]}" + (f" {n + 1}" if n else "")
            specs.append((name, "Chicago", "IL", "60601", "US", None))
        profiles = ["prompt"] * 9 + ["on_due"] * 3 + ["slow"] * 5 + ["late"] * 3
        out: list[_Client] = []
        identifiers: set[str] = set()
        for index, (name, city, state, zip_code, country, owner) in enumerate(specs[:count]):
            ident = _identifier(name, identifiers)
            seats = max(1, int(rng.lognormvariate(2.8, 0.7))) if owner is None else rng.randint(2, 4)
            seats = min(seats, 140)
            new_client = rng.random() < 0.22
            acquired = (
                self.start + timedelta(days=rng.randint(20, 540))
                if new_client
                else self.start - timedelta(days=rng.randint(60, 2400))
            )
            client = _Client(
                id=250 + index * 3 + rng.randint(0, 2),
                name=name,
                identifier=ident,
                domain=_domain(name),
                city=city,
                state=state,
                zip=zip_code,
                country=country,
                owner=owner,
                address=f"{rng.randint(10, 9800)} {rng.choice(_STREETS)}",
                phone=_phone(rng, country),
                terms_days=rng.choice((15, 30, 30)),
                tax_rate=Decimal(_TAX_RATES.get(state, "0")) if country == "US" else Decimal(0),
                profile=rng.choice(profiles),
                seats=seats,
                servers=0 if seats < 8 else rng.randint(1, max(1, seats // 15)),
                acquired_on=acquired,
                has_agreement=rng.random() < 0.85,
                tier_cents=rng.choice((8500, 11500, 11500, 14500)),
            )
            out.append(client)
        # Showcase clients for the demo logins: one slow payer with a non-ASCII name, one late payer.
        out[0].profile, out[0].has_agreement = "slow", True
        out[1].profile, out[1].has_agreement = "late", True
        for parent, child in itertools.pairwise(out):  # roll-up billing: a clinic and its branch
            if child.name.startswith(parent.name + " —"):
                child.parent = parent
        for client in out:
            self._contacts(client)
        return out

    def _contacts(self, client: _Client) -> None:
        rng = self.rng
        people: list[tuple[str, str, str, tuple[str, ...]]] = []  # first, last, title, roles
        if client.owner:
            first, last = client.owner.split(" ", 1)
            people.append((first, last, "Owner", ("billing", "approver")))
            people.append((*self._person(), "Office Assistant", ("service",)))
        else:
            if rng.random() < 0.2:
                people.append(("Accounts", "Payable", "Accounts Payable", ("billing",)))
            else:
                people.append((*self._person(), rng.choice(_BILLING_TITLES), ("billing",)))
            people.append((*self._person(), rng.choice(_SERVICE_TITLES), ("service",)))
            if client.seats >= 10 or rng.random() < 0.5:
                people.append((*self._person(), rng.choice(_APPROVER_TITLES), ("approver", "decision")))
            if rng.random() < 0.3:
                people.append((*self._person(), rng.choice(_END_USER_TITLES), ("end_user",)))
        inactive_index = len(people) - 1 if len(people) >= 3 and rng.random() < 0.25 else None
        for i, (first, last, title, roles) in enumerate(people):
            is_billing = "billing" in roles
            email = self._email(first, last, client, is_billing)
            if is_billing and client.parent is not None and client.parent.billing is not None:
                # One person handles both clinics' bills: same mailbox on two companies' contacts.
                parent_billing = client.parent.billing
                first, last = parent_billing["firstName"], parent_billing["lastName"]
                title = parent_billing["title"]
                email = parent_billing["communicationItems"][0]["value"]
            contact = self._contact_json(
                client,
                first,
                last,
                title,
                roles,
                email,
                is_primary=i == (0 if client.owner else 1),
                is_inactive=i == inactive_index,
            )
            client.contacts.append(contact)
            if is_billing:
                client.billing = contact
            if contact["defaultFlag"] and client.primary is None:
                client.primary = contact

    def _person(self) -> tuple[str, str]:
        return self.rng.choice(_FIRST_NAMES), self.rng.choice(_LAST_NAMES)

    def _email(self, first: str, last: str, client: _Client, is_billing: bool) -> str:
        if first == "Accounts" and last == "Payable":
            local = "ap"
        else:
            local = f"{_ascii(first)}.{_ascii(last)}".lower().replace(" ", "")
        email = f"{local}@{client.domain}"
        n = 2
        while email in self.emails:
            email = f"{local}{n}@{client.domain}"
            n += 1
        self.emails.add(email)
        return email

    def _contact_json(
        self,
        client: _Client,
        first: str,
        last: str,
        title: str,
        roles: tuple[str, ...],
        email: str,
        *,
        is_primary: bool,
        is_inactive: bool,
    ) -> dict[str, Any]:
        contact_id = self.next_contact_id
        self.next_contact_id += self.rng.randint(1, 4)
        phone_digits = _phone(self.rng, client.country)
        items = [
            {
                "id": self._comm_id(),
                "contactId": contact_id,
                "type": {"id": 1, "name": "Email"},
                "value": email,
                "defaultFlag": True,
                "domain": "@" + email.split("@", 1)[1],
                "communicationType": "Email",
            },
            {
                "id": self._comm_id(),
                "contactId": contact_id,
                "type": {"id": 2, "name": "Direct"},
                "value": phone_digits,
                "extension": str(self.rng.randint(100, 499)),
                "defaultFlag": True,
                "communicationType": "Phone",
            },
        ]
        entered = max(client.acquired_on, self.start - timedelta(days=900))
        updated = self._stamp(self._date_between(entered, self.last_day))
        return {
            "id": contact_id,
            "firstName": first,
            "lastName": last,
            "company": _company_ref(client),
            "site": {"id": client.id * 10 + 1, "name": "Main"},
            "addressLine1": client.address,
            "city": client.city,
            "state": client.state,
            "zip": client.zip,
            "country": _COUNTRIES[client.country],
            "inactiveFlag": is_inactive,
            "title": title,
            "marriedFlag": False,
            "childrenFlag": False,
            "portalSecurityLevel": 1,
            "disablePortalLoginFlag": False,
            "unsubscribeFlag": False,
            "defaultPhoneType": "Direct",
            "defaultPhoneNbr": phone_digits,
            "defaultPhoneExtension": items[1]["extension"],
            "defaultBillingFlag": "billing" in roles,
            "defaultFlag": is_primary and not is_inactive,
            "companyLocation": _LOCATION,
            "communicationItems": items,
            "types": [_CONTACT_TYPES[r] for r in roles],
            "customFields": [],
            "_info": {"lastUpdated": _ts(updated), "updatedBy": self.rng.choice(_MEMBERS)},
        }

    def _comm_id(self) -> int:
        self.next_comm_id += 1
        return self.next_comm_id

    # ------------------------------------------------------------------ invoices
    def invoices(self, clients: list[_Client], count: int) -> list[_Invoice]:
        n_credit = max(1, round(count * 0.006))
        agreement = self._agreement_invoices(clients, budget=round(count * 0.45))
        rest = count - n_credit - len(agreement)
        n_project = max(1, round(rest * 0.16))
        n_product = max(1, round(rest * 0.28))
        n_tm = rest - n_project - n_product
        out = agreement
        out += self._project_invoices(clients, n_project)
        out += self._product_invoices(clients, n_product)
        out += self._tm_invoices(clients, n_tm)
        out += self._credit_memos(clients, n_credit)
        kind_order = {k: i for i, k in enumerate(KINDS)}
        out.sort(key=lambda inv: (inv.issued_on, kind_order[inv.kind], inv.client.id))
        next_id = 18000 + self.rng.randint(0, 500)
        for number, inv in enumerate(out, start=10001):
            inv.id = next_id
            next_id += self.rng.randint(1, 3)  # CW ids are not dense: other records share the sequence
            inv.number = f"INV-{number}"
            inv.updated_at = self._stamp(inv.issued_on, lo_hour=13, hi_hour=17)
            inv.updated_by = self.rng.choice(_MEMBERS)
        self._apply_credits(out)
        self._pay(out, clients)
        return out

    def _agreement_invoices(self, clients: list[_Client], *, budget: int) -> list[_Invoice]:
        rng = self.rng
        first_month = date(self.start.year, self.start.month, 1)
        months = [m for m in (_add_months(first_month, i) for i in range(26)) if self.start < m < self.today]
        slots: list[tuple[date, _Client]] = []
        for client in clients:
            if client.has_agreement:
                slots += [(m, client) for m in months if m > client.acquired_on]
        # Too many for the requested size: the earliest months go, as if those clients signed later.
        slots.sort(key=lambda s: (s[0], s[1].id))
        slots = slots[max(0, len(slots) - budget) :]
        state: dict[int, dict[str, int]] = {}
        out = []
        for month, client in slots:
            seats = state.setdefault(
                client.id,
                {"seats": client.seats, "servers": client.servers, "tb": max(1, client.seats // 12)},
            )
            if rng.random() < 0.18:  # headcount drifts, mostly up
                seats["seats"] = max(1, seats["seats"] + rng.choice((-1, 1, 1, 2)))
            if month.month == 1 and month != months[0]:
                client.tier_cents = _round_to(client.tier_cents * 104 // 100, 100)  # yearly uplift
            out.append(self._agreement_invoice(client, month, seats))
        return out

    def _agreement_invoice(self, client: _Client, month: date, counts: dict[str, int]) -> _Invoice:
        seats, servers, tb = counts["seats"], counts["servers"], counts["tb"]
        rows = [  # (description, quantity, unit price in cents, service)
            (f"Managed workstation × {seats}", seats, client.tier_cents, "Managed workstations"),
            (f"Managed server × {servers}", servers, client.tier_cents * 5 // 2, "Managed servers"),
            (f"Microsoft 365 Business Premium × {seats}", seats, 2200, "Microsoft 365"),
            (f"Email security & archiving × {seats}", seats, 450, "Security"),
            (f"Cloud backup — {tb} TB", tb if client.seats >= 5 else 0, 12000, "Backup"),
        ]
        lines = [
            _Line(text, Decimal(qty), unit, "agreement", agreement=AGREEMENT_NAME, service=service)
            for text, qty, unit, service in rows
            if qty
        ]
        agreement = {"id": 700 + client.id, "name": AGREEMENT_NAME, "type": _AGREEMENT_TYPE}
        return _Invoice(
            client=client,
            kind="agreement",
            type="Agreement",
            issued_on=month,
            lines=lines,
            apply_to_type="Agreement",
            apply_to_id=agreement["id"],
            refs={"agreement": {**agreement, "chargeFirmFlag": False}},
            reference=f"Managed services — {month:%B %Y}",
        )

    def _project_invoices(self, clients: list[_Client], count: int) -> list[_Invoice]:
        rng = self.rng
        out: list[_Invoice] = []
        project_id, phase_id = 3100, 9100
        while len(out) < count:
            client = self._weighted_client(clients, bias="size")
            name, phases, hardware = rng.choice(_PROJECTS)
            phases = phases[: count - len(out)]
            gap = rng.randint(21, 45)
            lo = max(self.start, client.acquired_on + timedelta(days=14))
            span = gap * (len(phases) - 1)
            if (self.last_day - lo).days < span:
                gap, span = 0, 0
            begin = self._date_between(lo, self.last_day - timedelta(days=span))
            is_fixed_fee = rng.random() < 0.4
            project_id += rng.randint(1, 9)
            for k, title in enumerate(phases, start=1):
                phase_id += rng.randint(1, 5)
                issued = _business_day(begin + timedelta(days=gap * (k - 1)), self.start, self.last_day)
                phase = f"Phase {k} — {title}"
                ref = f"{name} — Phase {k}"
                refs = {"project": name, "phase": phase}
                labour = {**refs, "service": "Professional services"}
                if is_fixed_fee:
                    fee = _round_to(rng.randint(150000, 900000) * (1 + client.seats // 40), 5000)
                    lines = [_Line(f"{ref}: {title} (fixed fee)", Decimal(1), fee, "service", **labour)]
                else:
                    lines = [
                        _Line(
                            f"{ref}: {title} — Senior engineer",
                            _hours(rng, 4, 40),
                            18500,
                            "service",
                            **labour,
                        ),
                        _Line(
                            f"{ref}: {title} — Project management",
                            _hours(rng, 1, 8),
                            15000,
                            "service",
                            **labour,
                        ),
                    ]
                if hardware and k == 2:
                    qty = 1 if "firewall" in hardware.lower() else max(2, client.seats // 6)
                    price = _PROJECT_HARDWARE[hardware]
                    lines.append(
                        _Line(hardware, Decimal(qty), price, "product", True, **refs, service="Hardware")
                    )
                out.append(
                    _Invoice(
                        client=client,
                        kind="project",
                        type="Progress" if is_fixed_fee else "Standard",
                        issued_on=issued,
                        lines=lines,
                        apply_to_type="ProjectPhase",
                        apply_to_id=phase_id,
                        refs={
                            "project": {"id": project_id, "name": name},
                            "phase": {"id": phase_id, "name": phase},
                        },
                        reference=ref,
                        customer_po=f"PO-{rng.randint(1000, 9999)}" if rng.random() < 0.3 else "",
                    )
                )
        return out

    def _product_invoices(self, clients: list[_Client], count: int) -> list[_Invoice]:
        rng = self.rng
        out = []
        order_id = 4100
        for _ in range(count):
            client = self._weighted_client(clients, bias="size")
            issued = self._issue_date(client)
            lines = []
            for item, price, service in rng.sample(_PRODUCTS, rng.choice((1, 1, 2, 2, 3, 4))):
                per_seat = service == "Licensing" and "server" not in item.lower()
                qty = (
                    rng.randint(1, max(1, client.seats // 3)) if per_seat else rng.choice((1, 1, 1, 2, 3, 5))
                )
                lines.append(
                    _Line(item, Decimal(qty), price, "product", service == "Hardware", service=service)
                )
            if rng.random() < 0.35:
                shipping = rng.choice((1500, 2500, 4900))
                lines.append(
                    _Line("Shipping & handling", Decimal(1), shipping, "expense", service="Hardware")
                )
            order_id += rng.randint(1, 6)
            out.append(
                _Invoice(
                    client=client,
                    kind="product",
                    type="Standard",
                    issued_on=issued,
                    lines=lines,
                    apply_to_type="SalesOrder",
                    apply_to_id=order_id,
                    refs={"salesOrder": {"id": order_id, "identifier": f"SO-{order_id}"}},
                    reference=f"Sales order SO-{order_id}",
                    customer_po=f"PO-{rng.randint(10000, 99999)}" if rng.random() < 0.4 else "",
                )
            )
        return out

    def _tm_invoices(self, clients: list[_Client], count: int) -> list[_Invoice]:
        rng = self.rng
        plans = []
        for _ in range(count):
            client = self._weighted_client(clients, bias="break_fix")
            if rng.random() < 0.3:  # monthly roll-up of several tickets, dated at month end
                month = _add_months(date(self.start.year, self.start.month, 1), rng.randint(0, 23))
                issued = min(_add_months(month, 1) - timedelta(days=1), self.last_day)
                issued = _business_day(max(issued, self.start, client.acquired_on), self.start, self.last_day)
                plans.append((issued, client, rng.randint(2, 6)))
            else:
                plans.append((self._issue_date(client), client, 1))
        plans.sort(key=lambda p: (p[0], p[1].id))
        ticket = 41000 + rng.randint(0, 999)
        out = []
        for issued, client, n_tickets in plans:
            lines: list[_Line] = []
            refs: list[dict[str, Any]] = []
            for _ in range(n_tickets):
                ticket += rng.randint(3, 25)  # ticket numbers grow with time, shared with unbilled work
                summary = rng.choice(_TICKETS)
                role, rate, service = rng.choices(_ROLES, weights=(6, 3, 2, 1))[0]
                on = {"ticket": f"#{ticket} {summary}", "service": service}
                lines.append(
                    _Line(f"#{ticket} {summary} — {role}", _hours(rng, 0.5, 6), rate, "service", **on)
                )
                if role == "Onsite technician" and rng.random() < 0.7:
                    lines.append(_Line(f"#{ticket} Trip charge", Decimal(1), 7500, "expense", **on))
                refs.append({"id": ticket, "summary": summary})
            single = len(refs) == 1
            out.append(
                _Invoice(
                    client=client,
                    kind="time_and_materials",
                    type="Standard",
                    issued_on=issued,
                    lines=lines,
                    apply_to_type="Ticket" if single else "All",
                    apply_to_id=refs[0]["id"] if single else None,
                    refs={"ticket": refs[0]} if single else {},
                    reference=f"#{refs[0]['id']} {refs[0]['summary']}"
                    if single
                    else f"Support — {issued:%B %Y}",
                )
            )
        return out

    def _credit_memos(self, clients: list[_Client], count: int) -> list[_Invoice]:
        rng = self.rng
        out = []
        with_agreement = [c for c in clients if c.has_agreement]
        for i in range(count):
            client = rng.choice(with_agreement or clients)
            issued = self._issue_date(client)
            one = Decimal(1)
            reason = i % 4
            if reason == 0:
                amount = _round_to(client.tier_cents * client.seats // 10, 100)
                text = f"SLA credit — {issued:%B %Y} service interruption"
                line = _Line(
                    text, one, -amount, "agreement", agreement=AGREEMENT_NAME, service="Managed workstations"
                )
            elif reason == 1:
                item, price, _service = rng.choice(_PRODUCTS[:10])
                line = _Line(f"Return: {item}", one, -price, "product", True, service="Hardware")
            elif reason == 2:
                amount = rng.choice((15000, 25000))
                line = _Line(
                    "Goodwill credit — delayed onboarding", one, -amount, "service", service="Help desk"
                )
            else:
                text = "Billing correction — duplicate trip charge"
                line = _Line(text, one, -7500, "expense", service="Onsite support")
            out.append(
                _Invoice(
                    client=client,
                    kind="credit_memo",
                    type="CreditMemo",
                    issued_on=issued,
                    lines=[line],
                    apply_to_type="All",
                    reference="Credit memo",
                )
            )
        return out

    # ------------------------------------------------------------------ payments
    def _apply_credits(self, invoices: list[_Invoice]) -> None:
        """Apply each credit memo to its client's next invoice big enough to absorb it."""
        for memo in (i for i in invoices if i.kind == "credit_memo"):
            target = next(
                (
                    i
                    for i in invoices
                    if i.client is memo.client
                    and i.kind != "credit_memo"
                    and i.issued_on >= memo.issued_on
                    and i.credits_cents == 0
                    and i.total_cents >= -memo.total_cents
                ),
                None,
            )
            if target is None:
                continue  # left open: a credit the client still has to use
            target.credits_cents = -memo.total_cents
            memo.credits_cents = memo.total_cents
            memo.updated_at = max(
                memo.updated_at or self._stamp(memo.issued_on), self._stamp(target.issued_on)
            )

    def _pay(self, invoices: list[_Invoice], clients: list[_Client]) -> None:
        rng = self.rng
        for inv in invoices:
            if inv.kind == "credit_memo" or inv.balance_cents <= 0:
                continue
            profile = inv.client.profile
            due = inv.due_on
            if profile == "prompt":
                paid_on = due - timedelta(days=rng.randint(0, min(10, inv.client.terms_days - 3)))
            elif profile == "on_due":
                paid_on = due + timedelta(days=rng.randint(0, 2))
            elif profile == "slow":
                paid_on = due + timedelta(days=rng.randint(3, 40))
            else:
                paid_on = due + timedelta(days=rng.randint(15, 95))
            stuck = rng.random() < (0.04 if profile == "late" else 0.006)  # disputed, or fell through
            partial = rng.random() < (0.10 if profile in ("slow", "late") else 0.02)
            if paid_on >= self.today or stuck:
                continue
            amount = inv.balance_cents
            if partial:
                amount = _partial_amount(rng, inv)
            inv.payments_cents = amount
            inv.updated_at = self._stamp(paid_on, lo_hour=14, hi_hour=23)
            inv.updated_by = "payments"
        # The showcase clients must have something to pay in the demo, whatever the dice said.
        for client in clients[:2]:
            own = [i for i in invoices if i.client is client and i.kind != "credit_memo"]
            if own and not any(i.balance_cents > 0 for i in own):
                latest = own[-1]
                latest.payments_cents = 0
                latest.updated_at = self._stamp(latest.issued_on, lo_hour=13, hi_hour=17)

    # ------------------------------------------------------------------ helpers
    def _weighted_client(self, clients: list[_Client], *, bias: str) -> _Client:
        if bias == "break_fix":
            weights = [(1 + c.seats / 15) * (1.0 if c.has_agreement else 3.0) for c in clients]
        else:
            weights = [1 + c.seats / 10 for c in clients]
        return self.rng.choices(clients, weights=weights)[0]

    def _issue_date(self, client: _Client) -> date:
        lo = max(self.start, client.acquired_on)
        return _business_day(self._date_between(lo, self.last_day), self.start, self.last_day)

    def _date_between(self, lo: date, hi: date) -> date:
        if hi <= lo:
            return hi
        return lo + timedelta(days=self.rng.randint(0, (hi - lo).days))

    def _stamp(self, day: date, *, lo_hour: int = 8, hi_hour: int = 22) -> datetime:
        moment = time(self.rng.randint(lo_hour, hi_hour), self.rng.randint(0, 59), self.rng.randint(0, 59))
        stamp = datetime.combine(day, moment, tzinfo=UTC)
        # Never later than the end of yesterday (UTC), so a poll right after generation sees it all.
        return min(stamp, datetime.combine(self.last_day, time(23, 59, 59), tzinfo=UTC))


# ---------------------------------------------------------------------- JSON shapes
def _company_ref(client: _Client) -> dict[str, Any]:
    return {"id": client.id, "identifier": client.identifier, "name": client.name}


def _company_json(client: _Client) -> dict[str, Any]:
    assert client.billing is not None and client.primary is not None
    billing_email = client.billing["communicationItems"][0]["value"]
    updated = max(_parse_ts(c["_info"]["lastUpdated"]) for c in client.contacts)
    record: dict[str, Any] = {
        "id": client.id,
        "identifier": client.identifier,
        "name": client.name,
        "status": {"id": 1, "name": "Active"},
        "types": [{"id": 1, "name": "Client"}],
        "addressLine1": client.address,
        "city": client.city,
        "state": client.state,
        "zip": client.zip,
        "country": _COUNTRIES[client.country],
        "phoneNumber": client.phone,
        "faxNumber": "",
        "website": f"www.{client.domain}",
        "territory": _LOCATION,
        "market": {"id": 1, "name": "Small business"},
        "accountNumber": f"C-{client.id}",
        "defaultContact": {"id": client.primary["id"], "name": _full_name(client.primary)},
        "dateAcquired": _ts(datetime.combine(client.acquired_on, time(0), tzinfo=UTC)),
        "annualRevenue": 0.0,
        "numberOfEmployees": client.seats,
        "timeZoneSetup": {"id": 1, "name": "US Central"}
        if client.country in ("US", "CA")
        else {"id": 7, "name": "Central European"},
        "leadFlag": False,
        "unsubscribeFlag": False,
        "taxCode": {"id": 11, "name": client.state} if client.tax_rate else {"id": 1, "name": "Exempt"},
        "billingTerms": _TERMS[client.terms_days],
        "invoiceTemplate": {"id": 1, "name": "Standard Invoice"},
        "billToCompany": _company_ref(client),
        "billingSite": {"id": client.id * 10 + 1, "name": "Main"},
        "billingContact": {"id": client.billing["id"], "name": _full_name(client.billing)},
        "invoiceDeliveryMethod": {"id": 2, "name": "E-Mail"},
        "invoiceToEmailAddress": billing_email,
        "deletedFlag": False,
        "currency": _USD,
        "isVendorFlag": False,
        "site": {"id": client.id * 10 + 1, "name": "Main"},
        "customFields": [],
        "_info": {"lastUpdated": _ts(updated), "updatedBy": "jchen"},
    }
    if client.parent is not None:
        record["parentCompany"] = _company_ref(client.parent)
    return record


def _invoice_json(inv: _Invoice) -> dict[str, Any]:
    c = inv.client
    assert c.billing is not None and inv.updated_at is not None
    totals = dict.fromkeys(("agreement", "service", "product", "expense"), 0)
    for line in inv.lines:
        totals[line.category] += line.amount_cents
    balance = inv.balance_cents
    if inv.kind == "credit_memo":
        status = _STATUS_CLOSED if balance == 0 else _STATUS_SENT
    elif balance == 0:
        status = _STATUS_PAID
    elif inv.payments_cents or inv.credits_cents:
        status = _STATUS_PARTIAL
    else:
        status = _STATUS_SENT
    record: dict[str, Any] = {
        "id": inv.id,
        "invoiceNumber": inv.number,
        "type": inv.type,
        "status": status,
        "company": _company_ref(c),
        "billToCompany": _company_ref(c),
        "shipToCompany": _company_ref(c),
        "accountNumber": f"C-{c.id}",
        "applyToType": inv.apply_to_type,
        "attention": _full_name(c.billing)[:60],
        "billingSite": {"id": c.id * 10 + 1, "name": "Main"},
        "billingSiteAddressLine1": c.address,
        "billingSiteCity": c.city,
        "billingSiteState": c.state,
        "billingSiteZip": c.zip,
        "billingSiteCountry": _COUNTRIES[c.country]["name"],
        "billingTerms": _TERMS[c.terms_days],
        "reference": inv.reference[:50],
        "customerPO": inv.customer_po,
        "templateSetupId": 1,
        "invoiceTemplate": {"id": 1, "name": "Standard Invoice"},
        "addToBatchEmailList": True,
        "date": _ts(datetime.combine(inv.issued_on, time(0), tzinfo=UTC)),
        "restrictDownpaymentFlag": False,
        "locationId": _LOCATION["id"],
        "location": _LOCATION,
        "departmentId": _DEPARTMENTS[inv.kind]["id"],
        "department": _DEPARTMENTS[inv.kind],
        "territoryId": _LOCATION["id"],
        "territory": _LOCATION,
        "topComment": "Thank you for your business.",
        "bottomComment": f"Terms: {_TERMS[c.terms_days]['name']}. Pay online in the client portal.",
        "taxableFlag": bool(c.tax_rate),
        "taxCode": {"id": 11, "name": c.state} if c.tax_rate else {"id": 1, "name": "Exempt"},
        "internalNotes": "",
        "downpaymentPreviouslyTaxedFlag": False,
        "serviceTotal": _money(totals["service"]),
        "overrideDownPaymentAmountFlag": False,
        "currency": _USD,
        "dueDate": _ts(datetime.combine(inv.due_on, time(0), tzinfo=UTC)),
        "expenseTotal": _money(totals["expense"]),
        "productTotal": _money(totals["product"]),
        "previousProgressApplied": 0.0,
        "serviceAdjustmentAmount": 0.0,
        "agreementAmount": _money(totals["agreement"]),
        "downpaymentApplied": 0.0,
        "subtotal": _money(inv.subtotal_cents),
        "total": _money(inv.total_cents),
        "remainingDownpayment": 0.0,
        "salesTax": _money(inv.tax_cents),
        "payments": _money(inv.payments_cents),
        "credits": _money(inv.credits_cents),
        "balance": _money(balance),
        "specialInvoiceFlag": False,
        "customFields": [],
        "_info": {"lastUpdated": _ts(inv.updated_at), "updatedBy": inv.updated_by},
        "lines": [_line_json(line) for line in inv.lines],
    }
    if inv.apply_to_id is not None:
        record["applyToId"] = inv.apply_to_id
    if status["isClosed"]:
        record["closedBy"] = inv.updated_by
    record.update(inv.refs)
    return record


def _line_json(line: _Line) -> dict[str, Any]:
    return {
        "description": line.description,
        "quantity": _quantity(line.quantity),
        "unitPrice": _money(line.unit_cents),
        "amount": _money(line.amount_cents),
        "agreement": line.agreement,
        "project": line.project,
        "phase": line.phase,
        "ticket": line.ticket,
        "service": line.service,
    }


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    # Written aside and renamed: a connector polling the folder never reads half a file.
    # One record per line keeps the files greppable and half the size of an indented dump.
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write("[\n")
        fh.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in records))
        fh.write("\n]\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------- summary
def _summary(folder: Path, clients: list[_Client], invoices: list[_Invoice], today: date) -> DatasetSummary:
    by_kind = dict.fromkeys(KINDS, 0)
    for inv in invoices:
        by_kind[inv.kind] += 1
    receivable = [i for i in invoices if i.kind != "credit_memo"]
    open_ = [i for i in receivable if i.balance_cents > 0]
    shared = _shared_emails(clients)
    logins: list[DemoLogin] = []
    for client in clients:
        assert client.billing is not None
        email = client.billing["communicationItems"][0]["value"]
        own = [i for i in open_ if i.client is client]
        if own and email not in shared:
            logins.append(
                DemoLogin(
                    email=email,
                    client_name=client.name,
                    company_id=client.id,
                    open_invoices=len(own),
                    open_balance_minor=sum(i.balance_cents for i in own),
                )
            )
        if len(logins) == 2:
            break
    return DatasetSummary(
        folder=folder,
        companies=len(clients),
        contacts=sum(len(c.contacts) for c in clients),
        invoices=len(invoices),
        lines=sum(len(i.lines) for i in invoices),
        by_kind=by_kind,
        first_invoice_on=min(i.issued_on for i in invoices),
        last_invoice_on=max(i.issued_on for i in invoices),
        paid=sum(1 for i in receivable if i.balance_cents == 0),
        partially_paid=sum(1 for i in open_ if i.payments_cents > 0),
        open=len(open_),
        overdue=sum(1 for i in open_ if i.due_on < today),
        demo_logins=tuple(logins),
    )


def _shared_emails(clients: list[_Client]) -> set[str]:
    seen: dict[str, int] = {}
    for client in clients:
        for contact in client.contacts:
            email = contact["communicationItems"][0]["value"]
            seen[email] = seen.get(email, 0) + 1
    return {email for email, n in seen.items() if n > 1}


# ---------------------------------------------------------------------- small pure helpers
def _money(cents: int) -> float:
    # Exact: a float's repr is the shortest string that round-trips, so 2-decimal values print as such.
    return float(Decimal(cents).scaleb(-2))


def _quantity(q: Decimal) -> str:
    return format(q.normalize(), "f")


def _hours(rng: random.Random, lo: float, hi: float) -> Decimal:
    return Decimal(rng.randint(int(lo * 4), int(hi * 4))) / 4  # billed in quarter hours


def _round_to(cents: int, step: int) -> int:
    return max(step, (cents + step // 2) // step * step)


def _partial_amount(rng: random.Random, inv: _Invoice) -> int:
    """Something less than the balance: half, a round sum, or all but the largest line."""
    balance = inv.balance_cents
    choices: list[Callable[[], int]] = [
        lambda: balance // 2 // 100 * 100,
        lambda: rng.choice((25000, 50000, 100000, 200000)),
        lambda: balance - max(line.amount_cents for line in inv.lines),
    ]
    for pick in rng.sample(choices, len(choices)):
        amount = pick()
        if 0 < amount < balance:
            return amount
    return max(1, balance // 2)


def _business_day(day: date, lo: date, hi: date) -> date:
    shifted = day - timedelta(days=max(0, day.weekday() - 4))  # weekend -> the Friday before
    if shifted < lo:
        shifted = day + timedelta(days=7 - day.weekday())  # ... or the Monday after
    return min(max(shifted, lo), hi)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(ch for ch in folded if not unicodedata.combining(ch) and ord(ch) < 128)


def _name_words(name: str) -> list[str]:
    words = _ascii(name).replace("&", " ").replace(".", " ").split()
    return [w for w in words if w.isalnum() and w.lower() not in _LEGAL_SUFFIXES]


def _identifier(name: str, taken: set[str]) -> str:
    base = "".join(w[:1].upper() + w[1:] for w in _name_words(name))[:26] or "Client"
    ident, n = base, 2
    while ident in taken:
        ident = f"{base}{n}"
        n += 1
    taken.add(ident)
    return ident


def _domain(name: str) -> str:
    # Two words are enough for a plausible domain; a clinic and its branch share one, as in life.
    return "".join(_name_words(name)[:2]).lower() + ".example"


def _phone(rng: random.Random, country: str) -> str:
    if country in ("US", "CA"):
        return f"{rng.choice((312, 773, 630, 847, 414, 317, 616))}555{rng.randint(100, 199):04d}"
    return f"+{_DIALLING_CODES[country]}555{rng.randint(100000, 999999)}"


def _full_name(contact: dict[str, Any]) -> str:
    return f"{contact['firstName']} {contact['lastName']}"


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
