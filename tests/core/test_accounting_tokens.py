"""The accounting token vault: Fernet at rest, the key file's rules, revocation, and the config
checks that stop a bad accounting setup before anything starts."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app.config import ConfigError
from app.core.accounting_tokens import StoreVault, TokenCipher, TokenKeyError, key_path
from app.services import build_services
from sync.accounting.oauth import TokenSet
from sync.base import AccountingAuthError
from tests.conftest import make_config

QBO = """
[accounting]
kind = "quickbooks"
{key}
[accounting.quickbooks]
client_id = "ABcdEF0123456789"
client_secret = "qbo-client-secret"
bank_account = "Checking"
"""

TOKENS = TokenSet(
    access_token="access-AAAA-1111-secret",
    refresh_token="refresh-RRRR-2222-secret",
    expires_at=datetime(2026, 3, 10, 16, 0, tzinfo=UTC),
    tenant_id="9130350",
    tenant_name="Northwind Books",
)


def _vault(svc, cfg=None) -> StoreVault:
    return StoreVault(
        svc.store, svc.clock, TokenCipher(cfg or svc.config), entity_id=svc.entity_id, kind="quickbooks"
    )


def _raw_db(svc) -> bytes:
    svc.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return b"".join(p.read_bytes() for p in svc.config.db_path.parent.glob("cashloop.db*"))


def test_tokens_are_stored_encrypted_and_come_back_whole(tmp_path, frozen_clock):
    svc = build_services(make_config(tmp_path, extra=QBO.format(key="")), clock=frozen_clock)
    vault = _vault(svc)
    assert vault.load() is None and vault.connection() is None
    vault.save(TOKENS)

    assert vault.load() == TOKENS
    raw = _raw_db(svc)
    assert b"access-AAAA-1111-secret" not in raw and b"refresh-RRRR-2222-secret" not in raw
    row = svc.store.one("SELECT * FROM accounting_connections")
    assert (row["entity_id"], row["kind"], row["status"], row["tenant_id"]) == (
        svc.entity_id,
        "quickbooks",
        "connected",
        "9130350",
    )
    assert Fernet(key_path(svc.config).read_bytes().strip()).decrypt(row["tokens_enc"]).startswith(b"{")
    shown = vault.connection()
    assert shown is not None and shown.tenant_name == "Northwind Books" and "secret" not in repr(shown)


def test_the_default_key_file_is_created_once_with_mode_0600(tmp_path, frozen_clock):
    svc = build_services(make_config(tmp_path, extra=QBO.format(key="")), clock=frozen_clock)
    path = key_path(svc.config)
    assert path == svc.config.data_path / "accounting-token.key" and not path.exists()
    _vault(svc).save(TOKENS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert _vault(svc).load() == TOKENS  # a second cipher reads the same key, never a new one
    assert path.read_bytes() == first


def test_a_configured_key_file_must_exist_and_hold_a_fernet_key(tmp_path):
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, extra=QBO.format(key=f'token_key_file = "{missing}"'))
    assert "accounting.token_key_file" in str(err.value) and str(missing) in str(err.value)

    bad = tmp_path / "bad.key"
    bad.write_text("not-a-key\n")
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, extra=QBO.format(key=f'token_key_file = "{bad}"'))
    assert "accounting.token_key_file" in str(err.value) and "not a Fernet key" in str(err.value)

    good = tmp_path / "good.key"
    good.write_bytes(Fernet.generate_key())
    cfg = make_config(tmp_path, extra=QBO.format(key=f'token_key_file = "{good}"'))
    assert key_path(cfg) == good


def test_a_changed_key_is_a_clear_error_that_names_the_setting(tmp_path, frozen_clock):
    good = tmp_path / "good.key"
    good.write_bytes(Fernet.generate_key())
    svc = build_services(
        make_config(tmp_path, extra=QBO.format(key=f'token_key_file = "{good}"')), clock=frozen_clock
    )
    _vault(svc).save(TOKENS)
    good.write_bytes(Fernet.generate_key())  # someone replaced the key file
    with pytest.raises(TokenKeyError) as err:
        _vault(svc).load()
    assert isinstance(err.value, AccountingAuthError)  # the outbox waits on it, it does not fail
    assert "accounting.token_key_file" in str(err.value) and str(good) in str(err.value)
    assert "refresh-RRRR" not in str(err.value)

    good.unlink()  # and a key that vanished after start-up
    with pytest.raises(TokenKeyError, match=r"accounting\.token_key_file: cannot read the token key"):
        _vault(svc).load()


def test_revoked_drops_the_tokens_and_a_new_save_reconnects(tmp_path, frozen_clock):
    svc = build_services(make_config(tmp_path, extra=QBO.format(key="")), clock=frozen_clock)
    vault = _vault(svc)
    vault.save(TOKENS)
    vault.mark_revoked("the accounting system refused the sign-in: invalid_grant")
    assert vault.load() is None
    row = svc.store.one("SELECT status, tokens_enc, last_error, tenant_id FROM accounting_connections")
    assert (row["status"], row["tokens_enc"], row["tenant_id"]) == ("revoked", None, "9130350")
    assert "invalid_grant" in row["last_error"]

    frozen_clock.advance(timedelta(minutes=5))
    fresh = replace(TOKENS, access_token="access-new", refresh_token="refresh-new")
    vault.save(fresh)
    assert vault.load() == fresh
    assert svc.store.one("SELECT status, last_error FROM accounting_connections")[:] == ("connected", None)
    assert svc.store.scalar("SELECT COUNT(*) FROM accounting_connections") == 1


def test_disconnect_deletes_the_tokens(tmp_path, frozen_clock):
    svc = build_services(make_config(tmp_path, extra=QBO.format(key="")), clock=frozen_clock)
    vault = _vault(svc)
    assert vault.disconnect() is False
    vault.save(TOKENS)
    assert vault.disconnect() is True and vault.load() is None
    assert svc.store.one("SELECT status, tokens_enc FROM accounting_connections")[:] == ("disconnected", None)
    assert b"refresh-RRRR-2222-secret" not in _raw_db(svc)


def test_connections_are_kept_per_entity(tmp_path, frozen_clock):
    svc = build_services(make_config(tmp_path, extra=QBO.format(key="")), clock=frozen_clock)
    with svc.store.write() as db:
        db.execute("INSERT INTO entities (key, name, currency) VALUES ('ca', 'Northwind Canada', 'CAD')")
        other = db.execute("SELECT id FROM entities WHERE key = 'ca'").fetchone()[0]
    cipher = TokenCipher(svc.config)
    StoreVault(svc.store, svc.clock, cipher, entity_id=svc.entity_id, kind="quickbooks").save(TOKENS)
    second = StoreVault(svc.store, svc.clock, cipher, entity_id=other, kind="quickbooks")
    assert second.load() is None
    second.save(replace(TOKENS, tenant_id="4620816365", tenant_name="Northwind CA"))
    assert _vault(svc).load() == TOKENS and second.load().tenant_id == "4620816365"


@pytest.mark.parametrize("kind", ["quickbooks", "xero"])
def test_an_oauth_kind_without_its_section_stops_config_loading(tmp_path, kind):
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, extra=f'\n[accounting]\nkind = "{kind}"\n')
    assert f"accounting.{kind}: missing section for accounting.kind = '{kind}'" in str(err.value)


def test_the_registry_names_the_missing_section_too(tmp_path, frozen_clock):
    from types import SimpleNamespace

    from sync.registry import accounting_sink

    cfg = SimpleNamespace(accounting=SimpleNamespace(kind="xero", xero=None))
    with pytest.raises(ValueError, match=r"accounting\.xero: missing section"):
        accounting_sink(cfg, None, frozen_clock, entity_id=1)  # type: ignore[arg-type]


def test_default_key_lives_in_the_data_dir(tmp_path: Path):
    cfg = make_config(tmp_path)
    assert key_path(cfg) == tmp_path / "accounting-token.key"
