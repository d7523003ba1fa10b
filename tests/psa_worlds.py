"""One small MSP world per PSA (ConnectWise, Autotask, HaloPSA), in each vendor's own record shapes,
on its spec-checking loopback fake, with the Cashloop config that points at it.

A world builds the same invoices everywhere (three lines, 8.25% tax, exact cents), so the intake
tests run once per PSA and assert the same outcomes; where a vendor differs (Autotask cannot edit
an invoice, only void it or mark it paid), the world says what a "change at the source" is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.config import Config
from tests.conftest import make_config
from tests.fakes.autotask import AutotaskFake, at_time
from tests.fakes.connectwise import ConnectWiseFake, cw_time
from tests.fakes.halopsa import HaloFake, halo_time

KINDS = ("connectwise", "autotask", "halopsa")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # records were last touched after this, before the test clock
USD = {"id": 1, "symbol": "$", "currencyCode": "USD", "numberOfDecimals": 2, "name": "US Dollars"}
BAD = ("missing total", "unknown company", "lines not summing", "bad currency", "bad date")


def cents(minor: int) -> float:
    """What a vendor's JSON carries: a double, from the exact decimal."""
    return float(Decimal(minor).scaleb(-2))


@dataclass
class Spec:
    """One generated invoice, in Cashloop's terms, to compare the import against."""

    n: int
    remote_id: str
    number: str
    company: int
    lines: list[int]
    tax: int

    @property
    def total(self) -> int:
        return sum(self.lines) + self.tax


def plan(n: int, companies: int = 12) -> list[tuple[int, list[int], int]]:
    """(company index, line amounts, tax) of invoice n: deterministic, varied, exact."""
    out = []
    for i in range(n):
        lines = [5_000 + (i * 37) % 90_000, 1_250 + (i * 101) % 20_000, 99 + (i * 7) % 4_000]
        tax = (sum(lines) * 825 + 5_000) // 10_000  # 8.25%, rounded half up at the PSA
        out.append((i % companies, lines, tax))
    return out


@dataclass
class World:
    kind: str
    fake: Any
    now: Callable[[], datetime]
    invoices: dict[str, Spec] = field(default_factory=dict)
    companies: list[int] = field(default_factory=list)

    # -- the common surface ------------------------------------------------------------------------

    def toml(self) -> str:
        raise NotImplementedError

    def config(self, tmp_path: Path, *, page_size: int = 500, invite: bool = False, **kw: Any) -> Config:
        old = f'kind = "files"\npoll_minutes = 5\n\n[psa.files]\npath = "{tmp_path / "psa-export"}"\n'
        return make_config(
            tmp_path,
            replace={
                old: self.toml().format(page_size=page_size),
                "invite_billing_contacts = false": f"invite_billing_contacts = {str(invite).lower()}",
            },
            **kw,
        )

    def config_text(self, tmp_path: Path, *, page_size: int = 500) -> str:
        """The whole TOML file (for `python -m app.cli --config`)."""
        from app.demo.runner import demo_config

        text = demo_config(
            data_dir=tmp_path,
            port=8080,
            stripe_base="http://127.0.0.1:9",
            smtp_port=9,
            secret_key="test-secret-key-0123456789abcdef",
        )
        old = f'kind = "files"\npoll_minutes = 5\n\n[psa.files]\npath = "{tmp_path / "psa-export"}"\n'
        assert old in text
        return text.replace(old, self.toml().format(page_size=page_size))

    def populate(self, n: int, companies: int = 12) -> list[Spec]:
        for c in range(companies):
            self.company(100 + c, f"Client {c:02d} — Ünïcode & Co", f"ap{c}@client{c}.example")
        for i, (c, lines, tax) in enumerate(plan(n, companies)):
            self.invoice(i, 100 + c, lines, tax)
        return list(self.invoices.values())

    def company(self, cid: int, name: str, billing_email: str) -> None:
        raise NotImplementedError

    def invoice(self, n: int, company: int, lines: list[int], tax: int, **extra: Any) -> Spec:
        raise NotImplementedError

    def change(self, remote_id: str) -> dict[str, Any]:
        """A change at the source, as this PSA allows one; returns the invoice columns to expect."""
        raise NotImplementedError

    def void(self, remote_id: str) -> None:
        raise NotImplementedError

    def move(self, remote_id: str, company: int) -> None:
        """The invoice is reassigned to another company at the source."""
        raise NotImplementedError

    def rename_company(self, cid: int, name: str) -> None:
        """The company's name is edited at the source (a change the next poll reads)."""
        raise NotImplementedError

    def edit_contact(self, cid: int) -> None:
        """Company `cid`'s billing contact gets a new phone number at the source."""
        raise NotImplementedError

    def delete(self, remote_id: str) -> None:
        raise NotImplementedError

    def break_invoice(self, remote_id: str, how: str) -> str:
        """Make the invoice malformed in one way of BAD; returns a fragment of the expected reason."""
        raise NotImplementedError

    def invoice_list_requests(self) -> list[Any]:
        raise NotImplementedError

    def fail_next(self, status: int, retry_after: float | None = None, times: int = 1) -> None:
        self.fake.fail_next(status, retry_after, times)

    def lock_out(self) -> None:
        """The PSA stops accepting Cashloop's credentials (a revoked key)."""
        raise NotImplementedError

    @property
    def violations(self) -> list[str]:
        return self.fake.violations

    def stamp(self, n: int) -> datetime:
        return T0 + timedelta(minutes=n)

    def setup_stamp(self, cid: int) -> datetime:
        """When company `cid` and its contact were last edited: spread over the weeks before T0."""
        return T0 - timedelta(days=30) + timedelta(minutes=cid % 20_000)


class ConnectWiseWorld(World):
    def toml(self) -> str:
        user, private = self.fake.credentials
        company_id, public = user.split("+")
        return (
            f'kind = "connectwise"\npoll_minutes = 5\n\n[psa.connectwise]\n'
            f'base_url = "{self.fake.base_url}"\n'
            f'company_id = "{company_id}"\npublic_key = "{public}"\nprivate_key = "{private}"\n'
            f'client_id = "{self.fake.client_id}"\npage_size = {{page_size}}\n'
        )

    def company(self, cid: int, name: str, billing_email: str) -> None:
        self.fake.add_company(
            {
                "id": cid,
                "identifier": f"C{cid}",
                "name": name,
                "_info": {"lastUpdated": cw_time(self.setup_stamp(cid))},
            }
        )
        self.fake.add_contact(
            {
                "id": cid * 10,
                "firstName": "Dana",
                "lastName": f"Payer {cid}",
                "inactiveFlag": False,
                "company": {"id": cid, "identifier": f"C{cid}", "name": name},
                "communicationItems": [
                    {
                        "id": cid * 100,
                        "type": {"id": 1, "name": "Email"},
                        "value": billing_email,
                        "defaultFlag": True,
                        "communicationType": "Email",
                    }
                ],
                "types": [{"id": 7, "name": "Billing"}],
                "_info": {"lastUpdated": cw_time(self.setup_stamp(cid))},
            }
        )
        self.companies.append(cid)

    def invoice(self, n: int, company: int, lines: list[int], tax: int, **extra: Any) -> Spec:
        remote = 50_000 + n
        subtotal = sum(lines)
        rec = {
            "id": remote,
            "invoiceNumber": f"INV-{n:05d}",
            "type": "Standard",
            "status": {"id": 2, "name": "Sent"},
            "company": {"id": company, "identifier": f"C{company}", "name": f"Client {company}"},
            "date": "2026-01-01T00:00:00Z",
            "dueDate": "2026-01-31T00:00:00Z",
            "currency": USD,
            "agreementAmount": 0.0,
            "serviceTotal": cents(lines[0]),
            "productTotal": cents(lines[1]),
            "expenseTotal": cents(lines[2]),
            "subtotal": cents(subtotal),
            "salesTax": cents(tax),
            "total": cents(subtotal + tax),
            "payments": 0.0,
            "credits": 0.0,
            "balance": cents(subtotal + tax),
            "ticket": {"id": 40_000 + n, "summary": f"Work order {n}"},
            "_info": {"lastUpdated": cw_time(self.stamp(n))},
        }
        rec.update(extra)
        self.fake.add_invoice(rec)
        spec = Spec(n, str(remote), f"INV-{n:05d}", company, lines, tax)
        self.invoices[spec.remote_id] = spec
        return spec

    def _record(self, remote_id: str) -> dict[str, Any]:
        return next(i for i in self.fake.invoices if str(i["id"]) == remote_id)

    def change(self, remote_id: str) -> dict[str, Any]:
        rec = self._record(remote_id)
        spec = self.invoices[remote_id]
        spec.lines[0] += 10_000
        total = spec.total
        self.fake.touch(
            rec,
            self.now(),
            serviceTotal=cents(spec.lines[0]),
            subtotal=cents(sum(spec.lines)),
            total=cents(total),
            balance=cents(total),
        )
        return {"total_minor": total}

    def void(self, remote_id: str) -> None:
        self.fake.touch(self._record(remote_id), self.now(), status={"id": 9, "name": "Void"})

    def move(self, remote_id: str, company: int) -> None:
        rec = self._record(remote_id)
        self.fake.touch(rec, self.now(), company={**rec["company"], "id": company})

    def rename_company(self, cid: int, name: str) -> None:
        self.fake.touch(next(c for c in self.fake.companies if c["id"] == cid), self.now(), name=name)

    def edit_contact(self, cid: int) -> None:
        contact = next(c for c in self.fake.contacts if c["id"] == cid * 10)
        self.fake.touch(contact, self.now(), phone="555-0100")

    def delete(self, remote_id: str) -> None:
        self.fake.invoices.remove(self._record(remote_id))

    def break_invoice(self, remote_id: str, how: str) -> str:
        rec = self._record(remote_id)
        if how == "missing total":
            del rec["total"]
            return "missing total"
        if how == "unknown company":
            rec["company"] = {"id": 999_999, "identifier": "Nobody", "name": "Nobody Ltd"}
            return "company 999999 is unknown"
        if how == "lines not summing":
            rec["total"] = rec["total"] + 50.0
            return "but total is"
        if how == "bad currency":
            rec["currency"] = {"currencyCode": "XYZ"}
            return "unknown currency 'XYZ'"
        if how == "bad date":
            rec["dueDate"] = "2026-02-30T00:00:00Z"
            return "unparseable dueDate"
        raise ValueError(how)

    def invoice_list_requests(self) -> list[Any]:
        return [
            r for r in self.fake.requests if r.path == "/finance/invoices" and r.query.get("fields") != "id"
        ]

    def lock_out(self) -> None:
        self.fake.credentials = (self.fake.credentials[0], "rotated-by-the-msp")


class AutotaskWorld(World):
    def toml(self) -> str:
        f = self.fake
        return (
            f'kind = "autotask"\npoll_minutes = 5\n\n[psa.autotask]\nusername = "{f.username}"\n'
            f'secret = "{f.secret}"\nintegration_code = "{f.integration_code}"\n'
            f'discovery_url = "{f.discovery_url}"\npage_size = {{page_size}}\n'
        )

    def company(self, cid: int, name: str, billing_email: str, currency_id: int | None = None) -> None:
        stamp = at_time(self.setup_stamp(cid))
        self.fake.add(
            "companies",
            {
                "id": cid,
                "companyName": name,
                "companyNumber": f"C{cid}",
                "isActive": True,
                "companyType": 1,
                "currencyID": currency_id,
                "lastTrackedModifiedDateTime": stamp,
            },
        )
        self.fake.add(
            "contacts",
            {
                "id": cid * 10,
                "companyID": cid,
                "firstName": "Dana",
                "lastName": f"Payer {cid}",
                "emailAddress": billing_email,
                "isActive": 1,
                "title": "Accounts Payable",
                "primaryContact": False,
                "lastModifiedDate": stamp,
            },
        )
        self.fake.add(
            "contracts",
            {"id": 9_000 + cid, "companyID": cid, "contractName": f"Managed services {cid}", "status": 1},
        )
        self.companies.append(cid)

    def invoice(self, n: int, company: int, lines: list[int], tax: int, **extra: Any) -> Spec:
        remote = 60_000 + n
        taxes = _spread(tax, lines)
        created = at_time(self.stamp(n))
        rec = {
            "id": remote,
            "companyID": company,
            "invoiceNumber": f"INV-{n:05d}",
            "invoiceDateTime": "2026-01-01T00:00:00Z",
            "dueDate": "2026-01-31T00:00:00Z",
            "invoiceTotal": cents(sum(lines) + tax),
            "totalTaxValue": cents(tax),
            "isVoided": False,
            "createDateTime": created,
            "paidDate": None,
            "voidedDate": None,
            "comments": f"Invoice {n}",
        }
        rec.update(extra)
        self.fake.add("invoices", rec)
        refs = [{"contractID": 9_000 + company, "serviceID": 77}, {"ticketID": 40_000 + n}, {}]
        for k, (amount, item_tax) in enumerate(zip(lines, taxes, strict=True)):
            self.fake.add(
                "billing_items",
                {
                    "id": remote * 10 + k,
                    "invoiceID": remote,
                    "companyID": company,
                    "itemName": ["Managed services", "Onsite labour", "Toner cartridge"][k],
                    "description": f"line {k + 1} of invoice {n}",
                    "quantity": 1.0,
                    "rate": cents(amount),
                    "extendedPrice": cents(amount),
                    "taxDollars": cents(item_tax),
                    "itemDate": "2026-01-01T00:00:00Z",
                    **refs[k],
                },
            )
        spec = Spec(n, str(remote), f"INV-{n:05d}", company, lines, tax)
        self.invoices[spec.remote_id] = spec
        return spec

    def _record(self, remote_id: str) -> dict[str, Any]:
        return next(i for i in self.fake.invoices if str(i["id"]) == remote_id)

    def change(self, remote_id: str) -> dict[str, Any]:
        # Autotask invoices cannot be edited once processed; "mark as paid" is the change there is.
        rec = self._record(remote_id)
        rec["paidDate"] = at_time(self.now())
        return {"paid_elsewhere_minor": self.invoices[remote_id].total}

    def void(self, remote_id: str) -> None:
        rec = self._record(remote_id)
        rec.update(isVoided=True, voidedDate=at_time(self.now()), voidedByResourceID=4)

    def move(self, remote_id: str, company: int) -> None:
        rec = self._record(remote_id)
        rec["companyID"] = company
        for item in self.fake.billing_items:
            if item["invoiceID"] == rec["id"]:
                item["companyID"] = company

    def rename_company(self, cid: int, name: str) -> None:
        rec = next(c for c in self.fake.companies if c["id"] == cid)
        rec.update(companyName=name, lastTrackedModifiedDateTime=at_time(self.now()))

    def edit_contact(self, cid: int) -> None:
        rec = next(c for c in self.fake.contacts if c["id"] == cid * 10)
        rec.update(phone="555-0100", lastModifiedDate=at_time(self.now()))

    def delete(self, remote_id: str) -> None:
        self.fake.remove_invoice(int(remote_id))

    def break_invoice(self, remote_id: str, how: str) -> str:
        rec = self._record(remote_id)
        if how == "missing total":
            rec["invoiceTotal"] = None
            return "missing invoiceTotal"
        if how == "unknown company":
            rec["companyID"] = 999_999
            for item in self.fake.billing_items:
                if item["invoiceID"] == rec["id"]:
                    item["companyID"] = 999_999
            return "company 999999 is unknown"
        if how == "lines not summing":
            item = next(i for i in self.fake.billing_items if i["invoiceID"] == rec["id"])
            item["extendedPrice"] = item["extendedPrice"] + 50.0
            return "lines sum to"
        if how == "bad currency":
            self.fake.add(
                "currencies", {"id": 2, "name": "XYZ", "description": "Not a currency", "isActive": True}
            )
            self.company(990, "Odd Currency Ltd", "ap@odd.example", currency_id=2)
            rec["companyID"] = 990
            return "unknown currency 'XYZ'"
        if how == "bad date":
            rec["dueDate"] = "2026-02-30T00:00:00Z"
            return "unparseable dueDate"
        raise ValueError(how)

    def invoice_list_requests(self) -> list[Any]:
        return [
            r
            for r in self.fake.requests
            if r.path.startswith("/V1.0/Invoices/query")
            and not r.path.endswith("/count")
            and "IncludeFields" not in (r.body or {})
        ]

    def lock_out(self) -> None:
        self.fake.secret = "rotated-by-the-msp"


class HaloWorld(World):
    def toml(self) -> str:
        f = self.fake
        return (
            f'kind = "halopsa"\npoll_minutes = 5\n\n[psa.halopsa]\nbase_url = "{f.base_url}"\n'
            f'tenant = "{f.tenant}"\nclient_id = "{f.client_id}"\nclient_secret = "{f.client_secret}"\n'
            f"page_size = {{page_size}}\n"
        )

    def company(self, cid: int, name: str, billing_email: str) -> None:
        self.fake.add(
            "clients",
            {
                "id": cid,
                "name": name,
                "inactive": False,
                "accountsemailaddress": billing_email,
                "accountsfirstname": "Dana",
                "accountslastname": f"Payer {cid}",
            },
        )
        self.fake.add(
            "users",
            {
                "id": cid * 10,
                "client_id": cid,
                "name": f"Dana Payer {cid}",
                "firstname": "Dana",
                "surname": f"Payer {cid}",
                "emailaddress": billing_email,
                "inactive": False,
            },
        )
        self.fake.add(
            "users",
            {
                "id": cid * 10 + 1,
                "client_id": cid,
                "name": f"Sam Tech {cid}",
                "firstname": "Sam",
                "surname": f"Tech {cid}",
                "emailaddress": f"it{cid}@client.example",
                "inactive": False,
            },
        )
        self.companies.append(cid)

    def invoice(self, n: int, company: int, lines: list[int], tax: int, **extra: Any) -> Spec:
        remote = 70_000 + n
        taxes = _spread(tax, lines)
        total = sum(lines) + tax
        rec = {
            "id": remote,
            "client_id": company,
            "client_name": f"Client {company}",
            "invoicenumber": f"INV-{n:05d}",
            "invoice_date": "2026-01-01T00:00:00",
            "duedate": "2026-01-31T00:00:00",
            "currency": "USD",
            "total": cents(total),
            "tax_total": cents(tax),
            "amountpaid": 0.0,
            "amountdue": cents(total),
            "paymentstatus": 0,
            "posted": True,
            "voided": False,
            "contract_id": 9_000 + company,
            "contract_ref": f"Managed services {company}",
            "last_modified": halo_time(self.stamp(n)),
            "lines": [
                {
                    "id": remote * 10 + k,
                    "ihid": remote,
                    "item_shortdescription": ["Managed services", "Onsite labour", "Toner cartridge"][k],
                    "qty_order": 1.0,
                    "unit_price": cents(a),
                    "net_amount": cents(a),
                    "tax_amount": cents(t),
                    "item_code": ["MSP", "LAB", "TONER"][k],
                }
                for k, (a, t) in enumerate(zip(lines, taxes, strict=True))
            ],
        }
        rec.update(extra)
        self.fake.add("invoices", rec)
        spec = Spec(n, str(remote), f"INV-{n:05d}", company, lines, tax)
        self.invoices[spec.remote_id] = spec
        return spec

    def _record(self, remote_id: str) -> dict[str, Any]:
        return next(i for i in self.fake.invoices if str(i["id"]) == remote_id)

    def change(self, remote_id: str) -> dict[str, Any]:
        rec = self._record(remote_id)
        spec = self.invoices[remote_id]
        spec.lines[0] += 10_000
        rec["lines"][0].update(unit_price=cents(spec.lines[0]), net_amount=cents(spec.lines[0]))
        self.fake.touch(rec, total=cents(spec.total), amountdue=cents(spec.total))
        return {"total_minor": spec.total}

    def void(self, remote_id: str) -> None:
        self.fake.touch(self._record(remote_id), voided=True)

    def move(self, remote_id: str, company: int) -> None:
        self.fake.touch(self._record(remote_id), client_id=company)

    def rename_company(self, cid: int, name: str) -> None:
        self.fake.touch(next(c for c in self.fake.clients if c["id"] == cid), name=name)

    def edit_contact(self, cid: int) -> None:
        self.fake.touch(next(u for u in self.fake.users if u["id"] == cid * 10), phonenumber="555-0100")

    def delete(self, remote_id: str) -> None:
        self.fake.invoices.remove(self._record(remote_id))

    def break_invoice(self, remote_id: str, how: str) -> str:
        rec = self._record(remote_id)
        if how == "missing total":
            rec["total"] = None
            return "missing total"
        if how == "unknown company":
            rec["client_id"] = 999_999
            return "company 999999 is unknown"
        if how == "lines not summing":
            rec["lines"][0]["net_amount"] += 50.0
            return "lines sum to"
        if how == "bad currency":
            rec["currency"] = "XYZ"
            return "unknown currency 'XYZ'"
        if how == "bad date":
            rec["duedate"] = "2026-02-30T00:00:00"
            return "unparseable duedate"
        raise ValueError(how)

    def invoice_list_requests(self) -> list[Any]:
        return [
            r
            for r in self.fake.requests
            if r.path == "/Invoice" and r.query.get("idonly") != "true" and r.query.get("page_size") != "1"
        ]

    def fail_next(self, status: int, retry_after: float | None = None, times: int = 1) -> None:
        self.fake.fail_next(status, retry_after, times, path="/Invoice")

    def lock_out(self) -> None:
        self.fake.client_secret = "rotated-by-the-msp"
        self.fake.tokens.clear()


def _spread(tax: int, lines: list[int]) -> list[int]:
    """Tax per line, in proportion, with the remainder on the first line (they sum to `tax`)."""
    total = sum(lines)
    shares = [tax * a // total for a in lines]
    shares[0] += tax - sum(shares)
    return shares


def make_world(kind: str, now: Callable[[], datetime]) -> World:
    """A started fake wrapped in its world; stop it with `world.fake.stop()`."""
    if kind == "connectwise":
        return ConnectWiseWorld(kind, ConnectWiseFake(now=now).start(), now)
    if kind == "autotask":
        return AutotaskWorld(kind, AutotaskFake(now=now).start(), now)
    if kind == "halopsa":
        return HaloWorld(kind, HaloFake(now=now).start(), now)
    raise ValueError(kind)
