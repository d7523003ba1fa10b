"""The entity filter on the operations pages: the exceptions queue, outbox, emails, audit log,
tie-out, accounting and the dashboard's DSO each show exactly the rows of the entity chosen, plus
the rows that belong to no entity (a PSA connector, an address no contact has) under every filter."""

from __future__ import annotations

import re
from datetime import date

import pytest

from app.core import entities
from app.core.audit import audit, raise_exception
from app.core.clock import to_db
from app.core.outbox import enqueue
from app.services import build_services
from tests.e2e.entity_world import ca_toml
from tests.web import factories as f
from tests.web.conftest import web_config


@pytest.fixture
def svc(tmp_path, clock):
    return build_services(web_config(tmp_path, extra=ca_toml("http://127.0.0.1:9")), clock=clock)


@pytest.fixture
def world(svc):
    """Contoso (default, USD) and Maple Leaf (ca, CAD), each with an invoice, a payment, a contact."""
    us = f.make_client(svc, "Contoso Dental Inc")
    ca = f.make_client(svc, "Maple Leaf Dental Ltd")
    entities.move_client(svc.store, svc.clock, client_id=ca.id, entity_key="ca", actor="admin:test")
    f.make_contact(svc, us, "ap@contoso.example")
    f.make_contact(svc, ca, "ap@mapleleaf.example")
    f.make_contact(svc, ca, "owner@mapleleaf.example")
    us_inv = f.make_invoice(svc, us, "US-1", total_minor=100_000)
    ca_inv = f.make_invoice(svc, ca, "CA-1", total_minor=50_000, currency="CAD")
    us_pay = f.make_payment(svc, us, [(us_inv, 30_000)])
    ca_pay = f.make_payment(svc, ca, [(ca_inv, 20_000)], currency="CAD")
    return {"us": us, "ca": ca, "us_inv": us_inv, "ca_inv": ca_inv, "us_pay": us_pay, "ca_pay": ca_pay}


def _ids(html: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, html))


def _outbox(svc, kind: str, key: str, payload: dict) -> int:
    with svc.store.write() as db:
        enqueue(db, svc.clock, kind=kind, key=key, payload=payload)
    return int(svc.store.scalar("SELECT id FROM outbox WHERE idem_key = ?", (key,)))


def test_the_outbox_shows_each_entitys_entries_and_those_of_no_entity(as_owner, svc, world):
    us_journal = _outbox(svc, "journal_payment", "j-us", {"payment_id": world["us_pay"].id})
    ca_journal = _outbox(svc, "journal_payment", "j-ca", {"payment_id": world["ca_pay"].id})
    ca_psa = _outbox(svc, "psa_payment", "p-ca", {"allocation_id": int(svc.store.scalar(
        "SELECT id FROM allocations WHERE payment_id = ?", (world["ca_pay"].id,)))})
    ca_mail = _outbox(svc, "email", "e-ca", {"entity": "ca", "to": ["someone@elsewhere.example"]})
    us_mail = _outbox(svc, "email", "e-us", {"to": ["AP@contoso.example"], "context": {}})
    receipt = _outbox(svc, "email", "e-rcpt", {"to": ["x@y.example"],
                                                "context": {"payment_token": world["ca_pay"].token}})
    detach = _outbox(svc, "stripe_detach_method", "d-us",
                     {"processor_ref": "pm_1", "client_id": world["us"].id})
    stranger = _outbox(svc, "email", "e-none", {"to": ["nobody@nowhere.example"]})
    us_rows = {us_journal, us_mail, detach, stranger}
    ca_rows = {ca_journal, ca_psa, ca_mail, receipt, stranger}

    def shown(query: str) -> set[int]:
        html = as_owner.get(f"/admin/outbox?view=all{query}").get_data(as_text=True)
        return {int(n) for n in _ids(html, r'<tr id="outbox-(\d+)"')}

    assert shown("&entity=default") == us_rows
    assert shown("&entity=ca") == ca_rows
    assert shown("") == us_rows | ca_rows
    page = as_owner.get("/admin/outbox?view=all&entity=ca").get_data(as_text=True)
    assert 'id="outbox-count">5 entries' in page and 'href="/admin/outbox?view=dead&amp;entity=ca"' in page


def test_the_email_log_follows_the_recipients_client(as_owner, svc, world):
    with svc.store.write() as db:
        for subject, to in (
            ("Receipt for Contoso", "ap@contoso.example"),
            ("Statement for Maple Leaf", "ap@mapleleaf.example, owner@mapleleaf.example"),
            ("Sign-in code", "admin@northwind.example"),  # no client's contact: every filter
            ("Mixed recipients", "ap@contoso.example, ap@mapleleaf.example"),  # two entities: every filter
        ):
            db.execute(
                "INSERT INTO email_log (at, kind, to_addr, subject, status) VALUES (?, 'x', ?, ?, 'sent')",
                (to_db(svc.clock.utc_now()), to, subject),
            )

    def shown(query: str) -> set[str]:
        html = as_owner.get(f"/admin/emails{query}").get_data(as_text=True)
        return {s for s in ("Receipt for Contoso", "Statement for Maple Leaf", "Sign-in code",
                            "Mixed recipients") if s in html}

    assert shown("?entity=default") == {"Receipt for Contoso", "Sign-in code", "Mixed recipients"}
    assert shown("?entity=ca") == {"Statement for Maple Leaf", "Sign-in code", "Mixed recipients"}
    assert len(shown("")) == 4
    assert shown("?entity=ca&q=Statement") == {"Statement for Maple Leaf"}


def test_the_audit_log_and_its_export_follow_the_target(as_owner, svc, world):
    ca_mail = _outbox(svc, "email", "e-ca", {"entity": "ca", "to": ["ap@mapleleaf.example"]})
    ca_id = svc.entities.ids()["ca"]
    with svc.store.write() as db:
        for action, target, detail in (
            ("t.us_client", f"client:{world['us'].id}", None),
            ("t.us_payment", f"payment:{world['us_pay'].id}", None),
            ("t.ca_payment", f"payment:{world['ca_pay'].id}", None),
            ("t.ca_invoice", f"invoice:{world['ca_inv'].id}", None),
            ("t.ca_outbox", f"outbox:{ca_mail}", None),
            ("t.ca_books", "accounting:quickbooks", {"entity_id": ca_id}),
            ("t.ca_method", "pm_123", {"client_id": world["ca"].id}),
            ("t.settings", "admin:ana@northwind.example", None),  # no entity: every filter
        ):
            audit(db, svc.clock, actor="admin:test", action=action, target=target, detail=detail)

    def shown(query: str) -> set[str]:
        html = as_owner.get(f"/admin/audit?action=t.{query}").get_data(as_text=True)
        return _ids(html, r'data-action="(t\.[a-z_]+)"')

    assert shown("&entity=default") == {"t.us_client", "t.us_payment", "t.settings"}
    assert shown("&entity=ca") == {"t.ca_payment", "t.ca_invoice", "t.ca_outbox", "t.ca_books",
                                   "t.ca_method", "t.settings"}
    assert len(shown("")) == 8
    csv = as_owner.get("/admin/export/audit.csv?action=t.&entity=ca").get_data(as_text=True)
    assert "t.ca_payment" in csv and "t.settings" in csv and "t.us_client" not in csv


def test_the_exceptions_queue_shows_what_names_the_entitys_records(as_owner, svc, world):
    ca_id = svc.entities.ids()["ca"]
    ca_journal = _outbox(svc, "journal_payment", "j-ca", {"payment_id": world["ca_pay"].id})
    us_mail = _outbox(svc, "email", "receipt-us", {"to": ["ap@contoso.example"]})
    refs = {
        "us_payment": ("amount_mismatch", f"payment:{world['us_pay'].id}"),
        "us_client": ("no_billing_address", f"client:{world['us'].id}"),
        "us_refused": ("email_refused", "ap@contoso.example:receipt-us"),
        "us_tieout": ("tieout", "default:2026-03-04"),
        "ca_invoice": ("overpayment", f"invoice:{world['ca_inv'].id}"),
        "ca_autopay": ("autopay_exhausted", f"invoice:{world['ca_inv'].id}:attempt:3"),
        "ca_dead": ("outbox_dead", str(ca_journal)),
        "ca_tieout": ("tieout", "ca:2026-03-04"),
        "ca_books": ("accounting_connection", f"quickbooks:{ca_id}"),
        "psa": ("sync_auth", "connectwise"),  # the PSA serves every entity
        "config": ("payout_failed", "payout:po_unknown"),  # a payout with no items yet
    }
    ids = {}
    with svc.store.write() as db:
        for name, (kind, ref) in refs.items():
            raise_exception(db, svc.clock, kind=kind, ref=ref, summary=name)
            found = db.execute("SELECT id FROM exceptions WHERE kind = ? AND ref = ?", (kind, ref))
            ids[name] = found.fetchone()[0]
        found = db.execute("SELECT remote_id FROM invoices WHERE id = ?", (world["ca_inv"].id,))
        ca_remote = found.fetchone()[0]
        for remote_id in (ca_remote, "never-stored"):
            db.execute(
                "INSERT INTO quarantine (source, object, remote_id, reason, first_seen_at, last_seen_at) "
                "VALUES ('files', 'invoices', ?, 'bad total', ?, ?)",
                (remote_id, to_db(svc.clock.utc_now()), to_db(svc.clock.utc_now())),
            )
    assert us_mail
    q_ca, q_none = (r[0] for r in svc.store.all("SELECT id FROM quarantine ORDER BY id"))
    everywhere = {f"exception-{ids['psa']}", f"exception-{ids['config']}", f"quarantine-{q_none}"}

    def shown(query: str) -> set[str]:
        html = as_owner.get(f"/admin/exceptions{query}").get_data(as_text=True)
        return _ids(html, r'id="item-((?:exception|quarantine)-\d+)"')

    us = {f"exception-{ids[n]}" for n in refs if n.startswith("us_")}
    ca = {f"exception-{ids[n]}" for n in refs if n.startswith("ca_")} | {f"quarantine-{q_ca}"}
    assert shown("?entity=default") == us | everywhere
    assert shown("?entity=ca") == ca | everywhere
    assert shown("") == us | ca | everywhere
    # The dashboard's count follows the filter, and the resolve button keeps it.
    assert len(ca | everywhere) == 9 and len(us | everywhere) == 7
    for query, count in (("?entity=ca", "9"), ("?entity=default", "7"), ("", "13")):
        dash = as_owner.get(f"/admin/{query}").get_data(as_text=True)
        assert f'id="exceptions-count">{count}<' in dash
    page = as_owner.get("/admin/exceptions?entity=ca").get_data(as_text=True)
    assert f'action="/admin/exceptions/{ids["ca_invoice"]}/resolve?entity=ca"' in page


def test_the_sync_page_counts_the_chosen_entitys_records_of_each_connector(as_owner, svc, world):
    now = to_db(svc.clock.utc_now())
    ca_remote = svc.store.scalar("SELECT remote_id FROM invoices WHERE id = ?", (world["ca_inv"].id,))
    us_remote = svc.store.scalar("SELECT remote_id FROM invoices WHERE id = ?", (world["us_inv"].id,))
    with svc.store.write() as db:
        db.execute("INSERT INTO sync_state (connector, object, last_run_at, last_success_at, counts_json) "
                   "VALUES ('files', 'invoices', ?, ?, '{}')", (now, now))
        for remote_id in (ca_remote, us_remote, "never-stored"):
            db.execute(
                "INSERT INTO quarantine (source, object, remote_id, reason, first_seen_at, last_seen_at) "
                "VALUES ('files', 'invoices', ?, 'bad total', ?, ?)", (remote_id, now, now),
            )
        for inv in (world["ca_inv"], world["us_inv"]):
            raise_exception(db, svc.clock, kind="source_change_on_paid_invoice",
                            ref=f"invoice:{inv.id}:total", summary="changed")
    f.make_client(svc, "Prairie Vet Clinic")  # a second default client

    def counts(query: str) -> tuple[str, str, str]:
        html = as_owner.get(f"/admin/sync{query}").get_data(as_text=True)
        ids = ("quarantined", "held", "entity-clients")
        found = [re.search(rf'id="{i}-files">([^<]*)<', html) for i in ids]
        return tuple(m.group(1) if m else "" for m in found)  # type: ignore[return-value]

    assert counts("") == ("3 quarantined", "2 held changes", "")
    assert counts("?entity=ca") == ("2 quarantined", "1 held changes", "1 client of this entity")
    assert counts("?entity=default") == ("2 quarantined", "1 held changes", "2 clients of this entity")


def test_the_tieout_page_shows_the_chosen_entitys_reports(as_owner, svc, world):
    from app.jobs import tie_out

    tie_out.run(svc, start=date(2026, 3, 3), end=date(2026, 3, 3))
    tie_out.run(svc, start=date(2026, 3, 4), end=date(2026, 3, 4))
    by_key = {
        k: [r[0] for r in svc.store.all("SELECT id FROM tieout_reports WHERE entity_key = ? ORDER BY id",
                                        (k,))]
        for k in ("default", "ca")
    }
    assert len(by_key["default"]) == 2 and len(by_key["ca"]) == 2

    def shown(query: str) -> tuple[set[int], set[int]]:
        html = as_owner.get(f"/admin/tieout{query}").get_data(as_text=True)
        newest = {int(n) for n in _ids(html, r'id="tieout-heading-(\d+)"')}
        history = {int(n) for n in _ids(html, r'href="/admin/tieout\?report=(\d+)')}
        return newest, history

    assert shown("?entity=ca") == ({by_key["ca"][1]}, set(by_key["ca"]))
    assert shown("?entity=default") == ({by_key["default"][1]}, set(by_key["default"]))
    assert shown("") == ({by_key["ca"][1], by_key["default"][1]}, set(by_key["ca"] + by_key["default"]))
    assert as_owner.get(f"/admin/tieout?report={by_key['default'][0]}&entity=ca").status_code == 404
    assert as_owner.get(f"/admin/tieout?report={by_key['ca'][0]}&entity=ca").status_code == 200
    # "Run it now" under the filter runs that entity's tie-out only, and comes back to its page.
    from tests.web.admin.helpers import post

    ran = post(as_owner, "/admin/tieout/run?entity=ca")
    assert ran.status_code == 302 and ran.headers["Location"].endswith("/admin/tieout?entity=ca")
    newest = svc.store.all("SELECT entity_key, period_end FROM tieout_reports WHERE id > ?",
                           (max(by_key["ca"] + by_key["default"]),))
    assert [tuple(r) for r in newest] == [("ca", "2026-03-09")]


def test_the_dashboard_dso_and_failed_payments_are_the_chosen_entitys(as_owner, svc, world):
    f.make_invoice(svc, world["ca"], "CA-USD", total_minor=40_000, issued_on="2026-02-20")  # ca, in USD

    def dso(query: str) -> str:
        html = as_owner.get(f"/admin/{query}").get_data(as_text=True)
        found = re.search(r'id="dso-basis-USD">([^<]*)<', html)
        return found.group(1) if found else ""

    assert dso("?entity=default").startswith("$700.00 open")  # US-1 less the 300.00 paid
    assert dso("?entity=ca").startswith("$400.00 open")
    assert dso("").startswith("$1,100.00 open")
    # The failed-payments card follows the filter too.
    f.make_payment(svc, world["ca"], [(world["ca_inv"], 5_000)], currency="CAD", status="failed",
                   failure_reason="card_declined")
    for query, count in (("?entity=ca", "1"), ("?entity=default", "0"), ("", "1")):
        html = as_owner.get(f"/admin/{query}").get_data(as_text=True)
        assert f'id="failed-count">{count}<' in html, query


def _qbo_toml(table: str, qbo, front) -> str:
    return f"""
[{table}]
kind = "quickbooks"

[{table}.quickbooks]
client_id = "{qbo.client_id}"
client_secret = "{qbo.client_secret}"
api_base = "{qbo.api_base}"
authorize_url = "{front.authorize_url}"
token_url = "{front.token_url}"
bank_account = "Checking"
timeout_seconds = 2
"""


@pytest.fixture
def books(tmp_path, clock):
    """Two entities, each with its own QuickBooks app (fake) and authorization front."""
    from tests.e2e.accounting_world import AuthorizationFront
    from tests.fakes.qbo import REALM, QboFake

    def front(qbo: QboFake, realm: str) -> AuthorizationFront:
        return AuthorizationFront(qbo.client_id, qbo.client_secret, qbo.issue_tokens, qbo.token_url, clock,
                                  extra={"realmId": realm})

    with (
        QboFake() as us_qbo,
        QboFake(client_id="ca-qbo-app", client_secret="ca-qbo-secret") as ca_qbo,
        front(us_qbo, REALM) as us_front,
        front(ca_qbo, "4620816365") as ca_front,
    ):
        toml = (_qbo_toml("accounting", us_qbo, us_front) + ca_toml("http://127.0.0.1:9")
                + _qbo_toml("entities.accounting", ca_qbo, ca_front))
        (tmp_path / "books").mkdir()
        yield build_services(web_config(tmp_path / "books", extra=toml), clock=clock), us_front, ca_front


def test_the_accounting_page_shows_and_connects_the_chosen_entitys_books(books, clock):
    from urllib.parse import urlsplit

    from app.core.accounting_tokens import StoreVault, TokenCipher
    from app.web import create_app
    from tests.web.admin.helpers import make_admin, post, sign_in

    svc, us_front, ca_front = books
    ids = svc.entities.ids()
    client = sign_in(create_app(svc).test_client(), make_admin(svc, "o@northwind.example", "owner"), clock)

    def vault(key: str) -> StoreVault:
        view = svc.entities.view(key)
        return StoreVault(svc.store, clock, TokenCipher(view.config), entity_id=ids[key], kind="quickbooks")

    # Entries waiting for the books: one of the default entity, two of ca's, parked until a connect.
    us, ca = f.make_client(svc, "Contoso Dental Inc"), f.make_client(svc, "Maple Leaf Dental Ltd")
    entities.move_client(svc.store, clock, client_id=ca.id, entity_key="ca", actor="admin:test")
    us_pay = f.make_payment(svc, us, [(f.make_invoice(svc, us, "US-1"), 5_000)])
    ca_invoice = f.make_invoice(svc, ca, "CA-1", currency="CAD")
    ca_pays = [f.make_payment(svc, ca, [(ca_invoice, n)], currency="CAD") for n in (1_000, 2_000)]
    for key, pay in (("j-us", us_pay), ("j-ca1", ca_pays[0]), ("j-ca2", ca_pays[1])):
        _outbox(svc, "journal_payment", key, {"payment_id": pay.id})
    with svc.store.write() as db:
        db.execute("UPDATE outbox SET parked_at = ?", (to_db(clock.utc_now()),))

    page = client.get("/admin/accounting?entity=ca").get_data(as_text=True)
    assert 'data-entity="ca">Northwind Canada Ltd<' in page and "Not connected" in page
    assert 'id="accounting-waiting">2 (journal_payment 2)' in page and 'id="accounting-pending">2<' in page
    default_page = client.get("/admin/accounting").get_data(as_text=True)
    assert 'id="accounting-waiting">1 (journal_payment 1)' in default_page
    assert 'action="/admin/accounting/connect?entity=ca"' in page
    start = post(client, "/admin/accounting/connect?entity=ca")
    assert start.status_code == 302 and start.headers["Location"].startswith(ca_front.authorize_url)
    assert svc.store.scalar("SELECT entity_id FROM accounting_oauth_states") == ids["ca"]
    back = urlsplit(ca_front.consent(start.headers["Location"]))
    assert ca_front.consents[0]["client_id"] == "ca-qbo-app" and not us_front.consents
    done = client.get(f"{back.path}?{back.query}")  # the callback carries no entity: the state does
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/accounting?entity=ca")
    assert len(ca_front.exchanges) == 1 and not us_front.exchanges
    ca_tokens = vault("ca").load()
    assert ca_tokens is not None and ca_tokens.tenant_id == "4620816365"
    assert vault("default").load() is None  # the default entity's books are untouched
    assert "Connected" in client.get("/admin/accounting?entity=ca").get_data(as_text=True)
    default_page = client.get("/admin/accounting").get_data(as_text=True)
    assert 'data-entity="default">Northwind MSP LLC' in default_page and "Not connected" in default_page
    # Disconnecting under the filter disconnects that entity only.
    assert post(client, "/admin/accounting/disconnect").status_code == 302
    assert vault("ca").load() is not None
    assert post(client, "/admin/accounting/disconnect?entity=ca").status_code == 302
    assert vault("ca").load() is None
    assert svc.store.scalar("SELECT json_extract(detail_json, '$.entity_id') FROM audit_log "
                            "WHERE action = 'accounting.disconnected'") == ids["ca"]
