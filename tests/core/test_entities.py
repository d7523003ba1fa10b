"""Entities: [[entities]] config and its errors, per-entity services, intake assignment, moves."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.config import ConfigError, parse_config
from app.core import entities
from app.core.payments import PayItem, PaymentRequestError, start_payment
from app.entity_services import for_client, for_key
from app.jobs import intake
from app.services import build_services
from sync.base import Page, RemoteCompany
from tests.conftest import make_config
from tests.e2e.entity_world import CA_FROM, CA_SECRET, ca_toml, two_entity_config
from tests.web import factories as f


@pytest.fixture
def two(tmp_path, frozen_clock):
    return build_services(two_entity_config(tmp_path), clock=frozen_clock)


def test_single_entity_services_are_themselves(services):
    client = f.make_client(services, "Acme")
    assert for_client(services, client.id) is services
    assert services.config.entities == ()
    rows = services.store.all("SELECT key, name, currency FROM entities")
    assert [tuple(r) for r in rows] == [("default", "Northwind IT Services LLC", "USD")]


def test_each_entity_has_its_own_stripe_key_branding_sender_and_journal(two, tmp_path):
    ca = for_key(two, "ca")
    assert ca.config.stripe.secret_key == CA_SECRET and two.config.stripe.secret_key == "sk_test_123"
    assert ca.gateway is not two.gateway and ca.gateway is for_key(two, "ca").gateway  # made once
    assert (ca.config.entity.name, ca.config.entity.currency) == ("Northwind Canada Ltd", "CAD")
    assert ca.config.branding.name == "Northwind Canada" and two.config.branding.name == "Northwind US"
    assert ca.config.email.from_address == CA_FROM and ca.config.email.host == two.config.email.host
    assert ca.config.journal_path == tmp_path / "journal-ca.csv"
    assert two.config.journal_path == tmp_path / "journal.csv"
    ids = {r["key"]: r["id"] for r in two.store.all("SELECT id, key FROM entities")}
    assert ca.entity_id == ids["ca"] and two.entity_id == ids["default"] and ids["ca"] != ids["default"]


def _mutated(tmp_path, old: str, new: str) -> str:
    from app.demo.runner import demo_config

    text = demo_config(data_dir=tmp_path, port=8080, stripe_base="http://127.0.0.1:9", smtp_port=9,
                       secret_key="test-secret-key-0123456789abcdef") + ca_toml("http://127.0.0.1:9")
    assert old in text
    return text.replace(old, new)


BAD = {
    "duplicate key": (None, "entities.ca.key: 'ca' names two [[entities]] tables"),
    "bad currency": (('currency = "CAD"', 'currency = "CAX"'), "entities.ca.currency:"),
    "missing secret": ((f'secret_key = "{CA_SECRET}"\n', ""),
                       "entities.ca.stripe.secret_key: missing required key"),
    "reserved key": (('key = "ca"', 'key = "default"'), 'entities.default.key: key must be'),
    "unknown key": (('currency = "CAD"', 'currency = "CAD"\ncolour = "red"'),
                    "entities.ca.colour: unknown key"),
    "books without section": (
        ('[entities.psa_match]', '[entities.accounting]\nkind = "xero"\n\n[entities.psa_match]'),
        "entities.ca.accounting.xero: missing section"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_entity_config_names_the_entity(tmp_path, case):
    change, expected = BAD[case]
    if change is None:
        text = _mutated(tmp_path, "[[entities]]", "[[entities]]") + ca_toml("http://127.0.0.1:9")
    else:
        text = _mutated(tmp_path, *change)
    with pytest.raises(ConfigError) as err:
        parse_config(text, source="config.toml")
    assert expected in str(err.value) and str(err.value).startswith("config.toml: ")


def test_a_psa_value_two_entities_claim_is_a_config_error(tmp_path):
    second = ca_toml("http://127.0.0.1:9").replace('key = "ca"', 'key = "ca2"').replace(
        'company_ids = ["co-ca"]', 'company_ids = ["co-other"]')
    with pytest.raises(ConfigError, match=r"entities\.ca2\.psa_match\.connectwise_territories: 'Toronto' "
                                          r"is also claimed by entities\.ca"):
        parse_config(_mutated(tmp_path, "[[entities]]", "[[entities]]") + second)


def test_check_config_exits_2_naming_the_entity(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(_mutated(tmp_path, 'currency = "CAD"', 'currency = "XYZ"'))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "entities.ca.currency" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ intake


def _company(remote_id: str, **raw) -> RemoteCompany:
    return RemoteCompany(remote_id=remote_id, name=f"Company {remote_id}", raw={"id": remote_id, **raw})


def _apply(svc, *companies, source="connectwise"):
    with svc.store.write() as db:
        return intake.apply_page(db, svc.clock, source=source, obj="company", entity_id=svc.entity_id,
                                 page=Page(items=list(companies), cursor=None))


def _entity_of(svc, remote_id: str) -> str | None:
    return svc.store.scalar("SELECT e.key FROM clients c JOIN entities e ON e.id = c.entity_id "
                            "WHERE c.remote_id = ?", (remote_id,))


def test_intake_places_each_company_by_its_entity_rules(two):
    counts = _apply(
        two,
        _company("7", territory={"id": 3, "name": "Toronto"}),  # ConnectWise location
        _company("co-ca", territory={"id": 1, "name": "Chicago"}),  # listed by id
        _company("9", territory={"id": 1, "name": "Chicago"}),  # nobody claims it: the default entity
    )
    assert counts["created"] == 3
    assert (_entity_of(two, "7"), _entity_of(two, "co-ca"), _entity_of(two, "9")) == ("ca", "ca", "default")


def test_a_company_two_entities_claim_is_quarantined_with_the_reason(tmp_path, frozen_clock):
    extra = ca_toml("http://127.0.0.1:9").replace('key = "ca"', 'key = "ca2"').replace(
        'connectwise_territories = ["Toronto"]', 'connectwise_territories = ["Ottawa"]').replace(
        'company_ids = ["co-ca"]', 'company_ids = ["7"]')
    cfg = make_config(tmp_path, extra=ca_toml("http://127.0.0.1:9") + extra)
    svc = build_services(cfg, clock=frozen_clock)
    counts = _apply(svc, _company("7", territory={"id": 3, "name": "Toronto"}))
    assert counts["quarantined"] == 1 and _entity_of(svc, "7") is None
    reason = svc.store.scalar("SELECT reason FROM quarantine WHERE remote_id = '7'")
    assert "claimed by entities ca (connectwise_territories toronto) and ca2 (company id 7)" in reason


def test_autotask_and_halo_companies_match_by_their_own_fields(tmp_path, frozen_clock):
    extra = ca_toml("http://127.0.0.1:9", extra_match='autotask_territories = ["29683453"]\n'
                                                       'halo_toplevels = ["Canada"]')
    svc = build_services(make_config(tmp_path, extra=extra), clock=frozen_clock)
    _apply(svc, _company("A1", territoryID=29683453), _company("A2", territoryID=1), source="autotask")
    _apply(svc, _company("H1", toplevel_id=4, toplevel_name="Canada"), _company("H2", toplevel_name="US"),
           source="halopsa")
    # A ConnectWise rule never claims another PSA's record that happens to carry the same field.
    _apply(svc, _company("H3", territory={"name": "Toronto"}), source="halopsa")
    assert [_entity_of(svc, r) for r in ("A1", "A2", "H1", "H2", "H3")] == [
        "ca", "default", "ca", "default", "default"]


def test_a_client_that_paid_keeps_its_entity_and_a_person_is_asked(two):
    _apply(two, _company("5", territory={"name": "Chicago"}))
    client_id = two.store.scalar("SELECT id FROM clients WHERE remote_id = '5'")
    with two.store.write() as db:
        db.execute("UPDATE clients SET stripe_customer_id = 'cus_us_1' WHERE id = ?", (client_id,))
    _apply(two, _company("5", territory={"name": "Toronto"}))  # moved at the PSA
    assert _entity_of(two, "5") == "default"
    held = two.store.one("SELECT kind, summary FROM exceptions WHERE ref = ?", (f"client:{client_id}",))
    assert held["kind"] == "entity_change_held" and "already paid through its current one" in held["summary"]


def test_an_admin_move_is_kept_by_intake_and_refused_once_money_moved(two):
    _apply(two, _company("6", territory={"name": "Chicago"}))
    client_id = two.store.scalar("SELECT id FROM clients WHERE remote_id = '6'")
    entities.move_client(two.store, two.clock, client_id=client_id, entity_key="ca", actor="admin:a@x")
    _apply(two, _company("6", territory={"name": "Chicago"}, note="changed"))  # the PSA record changes
    assert _entity_of(two, "6") == "ca"
    assert for_client(two, client_id) is for_key(two, "ca")
    with two.store.write() as db:
        db.execute("UPDATE clients SET stripe_customer_id = 'cus_ca_1' WHERE id = ?", (client_id,))
    with pytest.raises(entities.EntityError, match="cannot move"):
        entities.move_client(two.store, two.clock, client_id=client_id, entity_key="default",
                             actor="admin:a@x")
    with pytest.raises(entities.EntityError, match="no entity 'uk'"):
        entities.move_client(two.store, two.clock, client_id=client_id, entity_key="uk", actor="admin:a@x")


def test_one_payment_never_covers_invoices_of_two_entities(two):
    us = f.make_client(two, "Contoso US")
    ca = f.make_client(two, "Contoso Canada")
    entities.move_client(two.store, two.clock, client_id=ca.id, entity_key="ca", actor="admin:a@x")
    with two.store.write() as db:  # a parent in one entity, a child in the other
        db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (us.id, ca.id))
    a = f.make_invoice(two, us, "US-1", total_minor=10_000)
    b = f.make_invoice(two, ca, "CA-1", total_minor=20_000)
    # The family a parent pays for stops at its entity (app.core.client_tree), and the payments engine
    # refuses invoices of two entities whoever asks.
    with pytest.raises(PaymentRequestError, match=r"billed by different companies of ours|not available"):
        start_payment(two.store, two.clock, client_id=us.id,
                      items=[PayItem(a.id, 10_000), PayItem(b.id, 20_000)], initiated_by="login:p@x",
                      for_children=True, allow_partial=True, minimum_partial="1.00")
    assert two.store.scalar("SELECT COUNT(*) FROM payments") == 0
    with two.store.write() as db, pytest.raises(entities.EntityError, match="billed by different companies"):
        entities.check_one_entity(db, us.id, [a.id, b.id])
    with two.store.write() as db:
        entities.check_one_entity(db, us.id, [a.id])  # one entity's invoices pass
