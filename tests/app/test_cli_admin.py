"""`cashloop create-admin` enrolls two-factor sign-in; `cashloop admin-2fa` replaces it."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pyotp

from app.core import admin_auth
from app.core.clock import SystemClock
from app.services import build_services
from tests.app.test_cli import _cashloop, _config_file
from tests.conftest import make_config


def _enrollment(stdout: str) -> tuple[str, list[str]]:
    uri = re.search(r"otpauth://totp/\S+", stdout)
    assert uri, stdout
    codes = re.findall(r"^  ([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})$", stdout, re.M)
    return uri.group(0), codes


def _check(services, admin_id: int, code: str) -> bool:
    with services.store.write() as db:
        return admin_auth.check_code(
            db, SystemClock(), admin_id, code, threshold=5, lockout=timedelta(minutes=15)
        ).ok


def test_create_admin_prints_an_otpauth_uri_and_ten_recovery_codes_stored_only_as_hashes(tmp_path):
    path = _config_file(tmp_path)
    (tmp_path / "pw").write_text("a long admin passphrase\n")
    proc = _cashloop(
        "create-admin",
        "--config",
        path,
        "--email",
        "ana@msp.example",
        "--role",
        "finance",
        "--password-file",
        str(tmp_path / "pw"),
    )
    assert proc.returncode == 0, proc.stderr
    uri, codes = _enrollment(proc.stdout)
    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    assert parsed.path == "/Northwind%20IT:ana%40msp.example" and query["issuer"] == ["Northwind IT"]
    secret = query["secret"][0]
    assert len(codes) == 10 and len(set(codes)) == 10
    services = build_services(make_config(tmp_path))
    row = services.store.one("SELECT id, role, totp_secret FROM admin_users WHERE email = 'ana@msp.example'")
    assert row["role"] == "finance" and row["totp_secret"] == secret
    hashes = [r[0] for r in services.store.all("SELECT code_hash FROM admin_recovery_codes")]
    assert len(hashes) == 10 and not any(c in h or c.replace("-", "") in h for c in codes for h in hashes)
    assert _check(services, row["id"], pyotp.TOTP(secret).now())
    assert _check(services, row["id"], codes[3]) and not _check(services, row["id"], codes[3])


def test_admin_2fa_replaces_the_secret_and_the_codes_and_ends_the_admins_sessions(tmp_path):
    path = _config_file(tmp_path)
    (tmp_path / "pw").write_text("a long admin passphrase\n")
    first = _cashloop(
        "create-admin",
        "--config",
        path,
        "--email",
        "ana@msp.example",
        "--password-file",
        str(tmp_path / "pw"),
    )
    _, old_codes = _enrollment(first.stdout)
    again = _cashloop("admin-2fa", "--config", path, "--email", "ana@msp.example")
    assert again.returncode == 0, again.stderr
    uri, new_codes = _enrollment(again.stdout)
    services = build_services(make_config(tmp_path))
    admin_id = services.store.scalar("SELECT id FROM admin_users")
    assert not _check(services, admin_id, old_codes[0]) and _check(services, admin_id, new_codes[0])
    assert (
        services.store.scalar("SELECT totp_secret FROM admin_users")
        == parse_qs(urlparse(uri).query)["secret"][0]
    )
    missing = _cashloop("admin-2fa", "--config", path, "--email", "nobody@msp.example")
    assert missing.returncode == 2 and "no admin nobody@msp.example" in missing.stderr
