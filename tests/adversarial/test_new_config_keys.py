"""Hostile values for the settings added with accounting, payouts, ACH, skips and the tie-out.

Every case goes through the real command (`python -m app.cli check-config PATH`), like
test_config_attacks.py: exit 2 and one line naming the key, never a traceback, and never a value
that loads fine only to fail later (a URL without a scheme, an empty account, a timer that
overflows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_config
from tests.adversarial.test_config_attacks import _assert_one_clear_line, _base, _check_config, _write

QBO = """
[accounting]
kind = "quickbooks"

[accounting.quickbooks]
client_id = "ABcdEF0123456789"
client_secret = "qbo-client-secret"
bank_account = "Checking"
"""

XERO = """
[accounting]
kind = "xero"

[accounting.xero]
client_id = "0A1B2C3D4E5F"
client_secret = "xero-client-secret"
clearing_account = "090"
bank_account = "091"
fee_account = "404"
surcharge_account = "260"
"""


def _with(tmp_path: Path, section: str, old: str | None = None, new: str = "") -> Path:
    """The demo config plus `section`, with `old` replaced by `new` (or `new` appended)."""
    if old is None:
        text = section + (f"{new}\n" if new else "")
    else:
        assert old in section
        text = section.replace(old, new)
    return _write(tmp_path, _base(tmp_path) + text)


def test_the_accounting_sections_as_given_load(tmp_path):
    # The baseline of every case below: without the one bad value the file is fine.
    assert load_config(_with(tmp_path, QBO)).accounting.quickbooks.bank_account == "Checking"
    assert load_config(_with(tmp_path, XERO)).accounting.xero.fee_account == "404"


QBO_CASES = {
    "empty client id": ('client_id = "ABcdEF0123456789"', 'client_id = ""', "quickbooks.client_id", "empty"),
    "blank client id": (
        'client_id = "ABcdEF0123456789"',
        'client_id = "   "',
        "quickbooks.client_id",
        "empty",
    ),
    "empty bank account": (
        'bank_account = "Checking"',
        'bank_account = ""',
        "quickbooks.bank_account",
        "empty",
    ),
    "token url without scheme": (
        None,
        'token_url = "oauth.platform.intuit.com/oauth2/v1/tokens/bearer"',
        "quickbooks.token_url",
        "not an http(s) URL",
    ),
    "empty authorize url": (None, 'authorize_url = ""', "quickbooks.authorize_url", "not an http(s) URL"),
    "api base of another scheme": (
        None,
        'api_base = "ftp://intuit.example/v3"',
        "quickbooks.api_base",
        "URL",
    ),
    "timeout as a string": (None, 'timeout_seconds = "30"', "quickbooks.timeout_seconds", "integer"),
    "environment misspelt": (None, 'environment = "prod"', "quickbooks.environment", "production, sandbox"),
    "number prefix as a list": (None, 'number_prefix = ["CW-"]', "quickbooks.number_prefix", "string"),
}


@pytest.mark.parametrize("case", list(QBO_CASES))
def test_a_bad_quickbooks_value_exits_2_naming_its_key(tmp_path, case):
    old, new, key, why = QBO_CASES[case]
    path = _with(tmp_path, QBO, old, new)
    _assert_one_clear_line(_check_config(path), path, f"accounting.{key}", why)


XERO_CASES = {
    "empty client id": ('client_id = "0A1B2C3D4E5F"', 'client_id = ""', "xero.client_id", "empty"),
    "empty fee account": ('fee_account = "404"', 'fee_account = ""', "xero.fee_account", "empty"),
    "blank clearing account": (
        'clearing_account = "090"',
        'clearing_account = " "',
        "xero.clearing_account",
        "empty",
    ),
    "connections url that is no url": (
        None,
        'connections_url = "api.xero.com/connections"',
        "xero.connections_url",
        "URL",
    ),
    "token url javascript": (None, 'token_url = "javascript:alert(1)"', "xero.token_url", "URL"),
    "api base empty": (None, 'api_base = ""', "xero.api_base", "URL"),
    "account code as a number": ('bank_account = "091"', "bank_account = 91", "xero.bank_account", "string"),
}


@pytest.mark.parametrize("case", list(XERO_CASES))
def test_a_bad_xero_value_exits_2_naming_its_key(tmp_path, case):
    old, new, key, why = XERO_CASES[case]
    path = _with(tmp_path, XERO, old, new)
    _assert_one_clear_line(_check_config(path), path, f"accounting.{key}", why)


def test_kind_xero_without_its_section_exits_2_naming_it(tmp_path):
    path = _with(tmp_path, '\n[accounting]\nkind = "xero"\n')
    _assert_one_clear_line(_check_config(path), path, "accounting.xero")


JOURNAL_CASES = {
    "format of another program": ('format = "xlsx"', "accounting.journal.format", "csv, iif"),
    "format empty": ('format = ""', "accounting.journal.format", "csv, iif"),
    "format in capitals": ('format = "IIF"', "accounting.journal.format", "csv, iif"),
}


@pytest.mark.parametrize("case", list(JOURNAL_CASES))
def test_a_bad_journal_format_exits_2_naming_the_key(tmp_path, case):
    line, key, why = JOURNAL_CASES[case]
    path = _with(tmp_path, f"\n[accounting]\n[accounting.journal]\n{line}\n")
    _assert_one_clear_line(_check_config(path), path, key, why)


def test_a_journal_path_that_is_a_directory_exits_2_naming_the_key(tmp_path):
    # Loaded fine before, then every journal entry failed (IsADirectoryError) until it was dead.
    folder = tmp_path / "exports"
    folder.mkdir()
    path = _with(tmp_path, f'\n[accounting]\n[accounting.journal]\npath = "{folder}"\n')
    _assert_one_clear_line(_check_config(path), path, "accounting.journal.path", "is a directory")


# ---- the token key file -----------------------------------------------------------------------


def _key_file(tmp_path: Path, target: str) -> Path:
    return _with(tmp_path, f'\n[accounting]\ntoken_key_file = "{target}"\n')


def test_a_token_key_file_that_is_no_key_exits_2_naming_the_key(tmp_path):
    key = tmp_path / "token.key"
    key.write_text("not-a-fernet-key\n")
    path = _key_file(tmp_path, str(key))
    _assert_one_clear_line(_check_config(path), path, "accounting.token_key_file", "not a Fernet key")


def test_a_token_key_file_with_binary_bytes_exits_2_naming_the_key(tmp_path):
    key = tmp_path / "token.key"
    key.write_bytes(b"\xff\xfe\x00" * 20)
    path = _key_file(tmp_path, str(key))
    _assert_one_clear_line(_check_config(path), path, "accounting.token_key_file", "not a Fernet key")


def test_a_huge_token_key_file_exits_2_without_reading_it_whole(tmp_path):
    # The wrong file (a database dump): refused as too large, not read into memory.
    key = tmp_path / "dump.sql"
    with key.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    path = _key_file(tmp_path, str(key))
    _assert_one_clear_line(_check_config(path), path, "accounting.token_key_file", "larger than a key file")


def test_a_token_key_file_pointing_at_an_endless_device_exits_2_at_once(tmp_path):
    # Before: read_bytes() on /dev/zero never returned (and ate the memory) while loading the config.
    path = _key_file(tmp_path, "/dev/zero")
    _assert_one_clear_line(_check_config(path), path, "accounting.token_key_file", "larger than a key file")


def test_a_token_key_file_that_is_missing_or_a_directory_exits_2_naming_the_key(tmp_path):
    for target, why in ((tmp_path / "nope.key", "No such file"), (tmp_path, "Is a directory")):
        path = _key_file(tmp_path, str(target))
        _assert_one_clear_line(_check_config(path), path, "accounting.token_key_file", why)


# ---- stripe, autopay, ops, outbox -------------------------------------------------------------

SCALAR_CASES = {
    # (the line in the base to replace, or a section to add the line to), the line, key, why
    "ach enabled as a string": (
        "ach_enabled = false",
        'ach_enabled = "yes"',
        "stripe.ach_enabled",
        "true or false",
    ),
    "ach enabled as 1": ("ach_enabled = false", "ach_enabled = 1", "stripe.ach_enabled", "true or false"),
    "payout check every 0 minutes": (
        "[stripe]",
        "payout_reconcile_minutes = 0",
        "stripe.payout_reconcile_minutes",
        "1-1440",
    ),
    "payout check every -5 minutes": (
        "[stripe]",
        "payout_reconcile_minutes = -5",
        "stripe.payout_reconcile_minutes",
        "1-1440",
    ),
    # Loaded fine before; the scheduler's timedelta(minutes=...) then overflowed at start.
    "payout check every 10^13 minutes": (
        "[stripe]",
        "payout_reconcile_minutes = 9999999999999",
        "stripe.payout_reconcile_minutes",
        "1-1440",
    ),
    "payout check as a float": (
        "[stripe]",
        "payout_reconcile_minutes = 1.5",
        "stripe.payout_reconcile_minutes",
        "integer",
    ),
    # Loaded fine before; the check's `now - timedelta(days=...)` then overflowed on every run.
    "payout lookback of 10^8 days": (
        "[stripe]",
        "payout_lookback_days = 99999999",
        "stripe.payout_lookback_days",
        "1-366",
    ),
    "payout lookback 0": ("[stripe]", "payout_lookback_days = 0", "stripe.payout_lookback_days", "1-366"),
    "skip days 0": ("[autopay]", "skip_days = 0", "autopay.skip_days", "1-60"),
    "skip days 61": ("[autopay]", "skip_days = 61", "autopay.skip_days", "1-60"),
    "skip days as a string": ("[autopay]", 'skip_days = "7"', "autopay.skip_days", "integer"),
    "tie-out at 24:00": ("[ops]", 'tieout_time = "24:00"', "ops.tieout_time", "24-hour"),
    "tie-out at 5:30": ("[ops]", 'tieout_time = "5:30"', "ops.tieout_time", "24-hour"),
    "tie-out empty": ("[ops]", 'tieout_time = ""', "ops.tieout_time", "24-hour"),
    "tie-out as a number": ("[ops]", "tieout_time = 530", "ops.tieout_time", "string"),
    "tie-out as a TOML time": ("[ops]", "tieout_time = 05:30:00", "ops.tieout_time", "string"),
    "park 0 seconds": ("[outbox]", "park_seconds = 0", "outbox.park_seconds", "1-86400"),
    # Loaded fine before; parking an entry then overflowed the next-attempt time in the drain.
    "park 10^17 seconds": ("[outbox]", "park_seconds = 99999999999999999", "outbox.park_seconds", "1-86400"),
    "park as a boolean": ("[outbox]", "park_seconds = true", "outbox.park_seconds", "integer"),
}


@pytest.mark.parametrize("case", list(SCALAR_CASES))
def test_a_bad_new_setting_exits_2_naming_its_key(tmp_path, case):
    anchor, line, key, why = SCALAR_CASES[case]
    text = _base(tmp_path)
    if anchor.startswith("["):
        if anchor in text:
            text = text.replace(anchor + "\n", f"{anchor}\n{line}\n", 1)
        else:
            text += f"\n{anchor}\n{line}\n"
    else:
        assert anchor in text
        text = text.replace(anchor, line, 1)
    path = _write(tmp_path, text)
    _assert_one_clear_line(_check_config(path), path, key, why)


def test_the_bounds_themselves_load(tmp_path):
    text = (
        _base(tmp_path)
        .replace("[stripe]\n", "[stripe]\npayout_reconcile_minutes = 1440\npayout_lookback_days = 366\n", 1)
        .replace("[outbox]\n", "[outbox]\npark_seconds = 86400\n", 1)
    )
    cfg = load_config(_write(tmp_path, text + '\n[autopay]\nskip_days = 60\n[ops]\ntieout_time = "23:59"\n'))
    assert (cfg.stripe.payout_reconcile_minutes, cfg.stripe.payout_lookback_days) == (1440, 366)
    assert (cfg.outbox.park_seconds, cfg.autopay.skip_days, cfg.ops.tieout_time) == (86400, 60, "23:59")


def test_load_config_raises_only_config_error_for_the_new_keys(tmp_path):
    """The server's entry point has the same contract: a ConfigError, nothing else, nothing accepted."""
    hostile = {
        "qbo-url": _base(tmp_path) + QBO + 'token_url = "intuit"\n',
        "xero-empty": _base(tmp_path) + XERO.replace('fee_account = "404"', 'fee_account = ""'),
        "park": _base(tmp_path).replace("[outbox]\n", "[outbox]\npark_seconds = 10000000000000000\n", 1),
    }
    unexpected = {}
    for name, text in hostile.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError:
            continue
        except Exception as exc:
            unexpected[name] = f"{type(exc).__name__}: {exc}"
        else:
            unexpected[name] = "accepted"
    assert unexpected == {}
