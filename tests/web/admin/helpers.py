"""Admins and a seeded finance world for the admin console's tests.

`seed_finance_world` writes a small MSP whose every dashboard figure was computed by hand (in
the comments); today is Tuesday 2026-03-10 in Chicago (the clock of tests/web/conftest.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from flask.testing import FlaskClient

from app.core.admin_auth import enroll
from app.core.admins import create_admin
from app.core.clock import FrozenClock, to_db
from app.services import Services
from tests.web import factories

ADMIN_PASSWORD = "a long admin passphrase"
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass(frozen=True)
class Admin:
    id: int
    email: str
    role: str
    secret: str | None
    recovery_codes: tuple[str, ...] = ()

    def code(self, clock: FrozenClock, *, offset_steps: int = 0) -> str:
        assert self.secret, "this admin has no TOTP"
        return pyotp.TOTP(self.secret).at(clock.utc_now(), counter_offset=offset_steps)


def make_admin(svc: Services, email: str, role: str = "owner", *, with_totp: bool = True) -> Admin:
    admin_id = create_admin(svc.store, svc.clock, email=email, password=ADMIN_PASSWORD, role=role)
    if not with_totp:
        return Admin(admin_id, email, role, None)
    with svc.store.write() as db:
        e = enroll(db, svc.clock, admin_id, issuer="Northwind IT", actor="test")
    return Admin(admin_id, email, role, e.secret, e.recovery_codes)


def csrf(client: FlaskClient) -> str:
    page = client.get("/magic").get_data(as_text=True)  # a page that renders for anyone
    found = CSRF.search(page)
    assert found, page[:500]
    return found.group(1)


def post(client: FlaskClient, url: str, data: dict | None = None, **kw):
    return client.post(url, data={**(data or {}), "csrf_token": csrf(client)}, **kw)


def password_step(client: FlaskClient, admin: Admin, password: str = ADMIN_PASSWORD):
    return post(client, "/admin/login", {"email": admin.email, "password": password})


def sign_in(client: FlaskClient, admin: Admin, clock: FrozenClock) -> FlaskClient:
    first = password_step(client, admin)
    assert first.status_code == 302 and "/admin/code" in first.headers["Location"], first.get_data(
        as_text=True
    )
    second = post(client, "/admin/code", {"code": admin.code(clock)})
    assert second.status_code == 302, second.get_data(as_text=True)
    return client


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class World:
    acme: factories.Ref
    globex: factories.Ref
    initech: factories.Ref
    umbrella: factories.Ref
    hooli: factories.Ref
    invoices: dict[str, factories.Ref]


def seed_finance_world(svc: Services) -> World:
    """Five clients, USD and CAD invoices in every aging bucket, payments either side of a month
    boundary in Chicago, and autopay rules for two clients.

    Hand-computed on 2026-03-10 (Chicago):
    - USD aging: current 1,300.00 (A1 1,000.00 + A2 300.00, due today) · 1-30 2,000.00 (G1, 30 days)
      · 31-60 1,750.00 (G2 750.00 at 31 days + I1 1,000.00 at 60) · 61-90 3,400.00 (I2 400.00 at 61
      + U1 3,000.00 at 90) · 90+ 999.99 (U2, 91 days). Open AR 9,449.99; overdue 8,149.99.
    - CAD aging: 1-30 250.00 (K1, 9 days).
    - DSO (90 days) USD: invoiced in (2025-12-10, 2026-03-10] = A1 1,050 + A2 500 + G1 2,000 + G2 750
      + H1 800 = 5,100.00; 9,449.99 x 90 / 5,100.00 = 166.76 -> 167 days. CAD: 250 x 90 / 250 = 90.
    - Collected USD, March: 200.00 (03-02) + 50.00 (00:30 on 03-01 local, 06:30Z) = 250.00;
      February: 676.55 (02-27) + 123.45 (23:30 on 02-28 local, 05:30Z on 03-01) = 800.00.
    - Autopay: Acme and Umbrella enabled (Globex has a disabled rule) = 2 of 5 invoiced clients
      (40.0%); their USD invoiced in 365 days 1,550.00 + 3,999.99 = 5,549.99 of 10,699.99 = 51.9%.
    - Failed payments in the last 30 days: 1 (Globex, 2,000.00).
    """
    f = factories
    acme = f.make_client(svc, "Acme Dental LLC")
    globex = f.make_client(svc, "Globex Corporation")
    initech = f.make_client(svc, "Initech Inc.")
    umbrella = f.make_client(svc, "Umbrella Health")
    hooli = f.make_client(svc, "Hooli Müller GmbH")
    for ref, email in (
        (acme, "dana@acme.example"),
        (globex, "ap@globex.example"),
        (initech, "ap@initech.example"),
        (umbrella, "ap@umbrella.example"),
        (hooli, "ap@hooli.example"),
    ):
        f.make_contact(svc, ref, email)
    inv = {
        "A1": f.make_invoice(
            svc, acme, "A1", total_minor=105_000, issued_on="2026-02-20", due_on="2026-03-20"
        ),
        "A2": f.make_invoice(
            svc, acme, "A2", total_minor=50_000, issued_on="2026-02-01", due_on="2026-03-10"
        ),
        "AX": f.make_invoice(
            svc,
            acme,
            "AX",
            total_minor=1_000_000,
            issued_on="2026-01-01",
            due_on="2026-01-01",
            is_approved=False,
        ),
        "G1": f.make_invoice(
            svc, globex, "G1", total_minor=200_000, issued_on="2026-01-15", due_on="2026-02-08"
        ),
        "G2": f.make_invoice(
            svc, globex, "G2", total_minor=75_000, issued_on="2026-01-01", due_on="2026-02-07"
        ),
        "GC": f.make_invoice(
            svc,
            globex,
            "GC",
            total_minor=-10_000,
            kind="credit_memo",
            issued_on="2026-02-01",
            due_on="2026-02-01",
        ),
        "I1": f.make_invoice(
            svc,
            initech,
            "I1",
            total_minor=120_000,
            issued_on="2025-12-01",
            due_on="2026-01-09",
            paid_elsewhere_minor=20_000,
        ),
        "I2": f.make_invoice(
            svc, initech, "I2", total_minor=40_000, issued_on="2025-11-15", due_on="2026-01-08"
        ),
        "K1": f.make_invoice(
            svc,
            initech,
            "K1",
            total_minor=25_000,
            currency="CAD",
            issued_on="2026-02-01",
            due_on="2026-03-01",
        ),
        "U1": f.make_invoice(
            svc, umbrella, "U1", total_minor=300_000, issued_on="2025-11-01", due_on="2025-12-10"
        ),
        "U2": f.make_invoice(
            svc, umbrella, "U2", total_minor=99_999, issued_on="2025-10-01", due_on="2025-12-09"
        ),
        "H1": f.make_invoice(
            svc, hooli, "H1", total_minor=80_000, issued_on="2026-02-25", due_on="2026-03-27"
        ),
        "HV": f.make_invoice(
            svc, hooli, "HV", total_minor=500_000, status="void", issued_on="2026-02-25", due_on="2026-02-25"
        ),
    }
    f.make_payment(svc, acme, [(inv["A2"], 20_000)], created_at=at("2026-03-02T16:00:00"))
    f.make_payment(svc, acme, [(inv["A1"], 5_000)], created_at=at("2026-03-01T06:30:00"))
    f.make_payment(svc, hooli, [(inv["H1"], 67_655)], created_at=at("2026-02-27T18:00:00"))
    f.make_payment(svc, hooli, [(inv["H1"], 12_345)], created_at=at("2026-03-01T05:30:00"))
    f.make_payment(
        svc,
        globex,
        [(inv["G1"], 200_000)],
        status="failed",
        failure_reason="card_declined",
        created_at=at("2026-03-05T15:00:00"),
    )
    now = to_db(svc.clock.utc_now())
    with svc.store.write() as db:
        for ref, enabled in ((acme, 1), (umbrella, 1), (globex, 0)):
            db.execute(
                "INSERT INTO autopay_rules (client_id, is_enabled, kinds_json, updated_at, updated_by) "
                "VALUES (?, ?, '[\"agreement\"]', ?, 'test')",
                (ref.id, enabled, now),
            )
    return World(acme, globex, initech, umbrella, hooli, inv)
