"""Hostile config files: every one must stop Cashloop with exit 2 and one line naming the key.

Each case is run through the real command (`python -m app.cli check-config PATH`), because that is
what an operator sees: a Python traceback instead of the one-line error is a defect even when the
process also stops.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import ConfigError, load_config
from app.demo.runner import demo_config


def _base(tmp_path: Path) -> str:
    return demo_config(
        data_dir=tmp_path / "data",
        port=8080,
        stripe_base="http://127.0.0.1:9",
        smtp_port=9,
        secret_key="test-secret-key-0123456789abcdef",
    )


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def _assert_one_clear_line(proc: subprocess.CompletedProcess[str], path: Path, *fragments: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("cashloop: config error: "), lines[0]
    assert str(path) in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0][:500])
    assert len(lines[0]) < 1000, "the error line must stay readable (no whole-file or whole-secret dumps)"


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---- the file itself --------------------------------------------------------------------------


def test_a_file_that_is_not_toml_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, _base(tmp_path).replace("[stripe]", "[stripe\n"))
    _assert_one_clear_line(_check_config(path), path, "not valid TOML")


def test_an_empty_file_exits_2_naming_the_first_missing_section(tmp_path):
    path = _write(tmp_path, "")
    _assert_one_clear_line(_check_config(path), path, "cashloop: missing required key")


def test_a_config_path_that_is_a_directory_exits_2_with_one_line(tmp_path):
    folder = tmp_path / "config.d"
    folder.mkdir()
    _assert_one_clear_line(_check_config(folder), folder, "cannot read config")


def test_a_config_file_with_non_utf8_bytes_exits_2_with_one_line(tmp_path):
    text = _base(tmp_path).replace('name = "Northwind IT"', 'name = "Northwind IT \udcff"')
    path = _write(tmp_path, text.encode("utf-8", "surrogateescape"))  # a raw 0xFF byte in a string
    _assert_one_clear_line(_check_config(path), path, "UTF-8")


def test_a_config_file_saved_as_latin1_exits_2_with_one_line(tmp_path):
    text = _base(tmp_path).replace('name = "Northwind IT"', 'name = "Société Générale IT"')
    path = _write(tmp_path, text.encode("latin-1"))
    _assert_one_clear_line(_check_config(path), path, "UTF-8")


# ---- shapes and types -------------------------------------------------------------------------


def _section_as_scalar(text: str) -> str:
    """`stripe = "sk_test_123"` at the top instead of the [stripe] table."""
    start, end = text.index("[stripe]"), text.index("[email]")
    return 'stripe = "sk_test_123"\n' + text[:start] + text[end:]


def _nested_section_as_scalar(text: str) -> str:
    """`files = "/srv/export"` inside [psa] instead of the [psa.files] table."""
    start = text.index("[psa.files]")
    end = text.index("[portal]")
    return (
        text[:start].replace("poll_minutes = 5\n", 'poll_minutes = 5\nfiles = "/srv/export"\n') + text[end:]
    )


SHAPE_CASES: dict[str, tuple[Callable[[str], str], tuple[str, ...]]] = {
    # A whole section written as a key: `stripe = "sk_..."` instead of a [stripe] table.
    "section as a scalar": (_section_as_scalar, ("stripe: expected a table",)),
    "nested section as a scalar": (_nested_section_as_scalar, ("psa.files: expected a table",)),
    "list where a string is expected": (
        lambda t: t.replace('name = "Northwind IT Services LLC"', 'name = ["Northwind", "IT"]'),
        ("entity.name: expected a string",),
    ),
    "table where a string is expected": (
        lambda t: t.replace('base_url = "http://127.0.0.1:8080"', 'base_url = { url = "http://x" }'),
        ("cashloop.base_url: expected a string",),
    ),
    "string where a list is expected": (
        lambda t: t.replace("[psa.files]\n", '[psa.files]\nvoid_statuses = "Void"\n'),
        ("psa.files.void_statuses: expected a list of strings",),
    ),
    "list where a literal is expected": (
        lambda t: t.replace('security = "none"', 'security = ["none"]'),
        ("email.security: must be one of",),
    ),
    "date where a string is expected": (
        lambda t: t.replace('timezone = "America/Chicago"', "timezone = 2026-03-10"),
        ("cashloop.timezone: expected a string",),
    ),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_a_wrongly_shaped_value_exits_2_naming_its_key(tmp_path, case):
    mutate, fragments = SHAPE_CASES[case]
    path = _write(tmp_path, mutate(_base(tmp_path)))
    _assert_one_clear_line(_check_config(path), path, *fragments)


VALUE_CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # A URL urllib cannot even split (unbalanced IPv6 bracket).
    "url with a broken ipv6 host": (
        'base_url = "http://127.0.0.1:8080"',
        'base_url = "http://[::1"',
        ("cashloop.base_url",),
    ),
    # str.isdigit() accepts '²' but int() refuses it.
    "listen port in superscript digits": (
        'listen = "127.0.0.1:8080"',
        'listen = "127.0.0.1:²"',
        ("cashloop.listen",),
    ),
    # zoneinfo raises OSError (file name too long), not ZoneInfoNotFoundError.
    "a time zone name longer than a file name": (
        'timezone = "America/Chicago"',
        f'timezone = "{"A" * 400}"',
        ("cashloop.timezone",),
    ),
    "a negative overlap that would skip records": (
        "poll_minutes = 5",
        "poll_minutes = 5\noverlap_minutes = -60",
        ("psa.overlap_minutes",),
    ),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_a_bad_value_exits_2_naming_its_key_never_a_traceback(tmp_path, case):
    old, new, fragments = VALUE_CASES[case]
    text = _base(tmp_path)
    assert old in text
    path = _write(tmp_path, text.replace(old, new, 1))
    _assert_one_clear_line(_check_config(path), path, *fragments)


# ---- secret files -----------------------------------------------------------------------------


def _with_secret_file(tmp_path: Path, content: bytes, key: str = "webhook_secret") -> Path:
    secret = tmp_path / f"{key}.txt"
    secret.write_bytes(content)
    text = _base(tmp_path)
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{key} = ") and "whsec" in ln)
    return _write(tmp_path, text.replace(line, f'{key}_file = "{secret}"'))


def test_an_empty_secret_file_exits_2_naming_the_key(tmp_path):
    path = _with_secret_file(tmp_path, b"")
    _assert_one_clear_line(_check_config(path), path, "stripe.webhook_secret")


def test_a_secret_file_of_only_whitespace_exits_2_naming_the_key(tmp_path):
    path = _with_secret_file(tmp_path, b"  \n\n")
    _assert_one_clear_line(_check_config(path), path, "stripe.webhook_secret")


def test_an_empty_inline_webhook_secret_exits_2_naming_the_key(tmp_path):
    # An empty signing secret lets anyone compute a valid Stripe-Signature.
    text = _base(tmp_path).replace('webhook_secret = "whsec_cashloop_demo"', 'webhook_secret = ""')
    path = _write(tmp_path, text)
    _assert_one_clear_line(_check_config(path), path, "stripe.webhook_secret")


def test_a_huge_secret_file_exits_2_naming_the_key(tmp_path):
    # Someone points the key at the wrong file (a log, a database dump): 8 MiB is no API key.
    path = _with_secret_file(tmp_path, b"whsec_" + b"A" * (8 * 1024 * 1024))
    proc = _check_config(path)
    _assert_one_clear_line(proc, path, "stripe.webhook_secret")


def test_a_secret_file_with_non_utf8_bytes_exits_2_naming_the_key(tmp_path):
    path = _with_secret_file(tmp_path, b"whsec_\xff\xfe\x00binary")
    _assert_one_clear_line(_check_config(path), path, "stripe.webhook_secret_file")


def test_a_secret_file_that_is_a_directory_exits_2_naming_the_key(tmp_path):
    text = _base(tmp_path).replace(
        'webhook_secret = "whsec_cashloop_demo"', f'webhook_secret_file = "{tmp_path}"'
    )
    path = _write(tmp_path, text)
    _assert_one_clear_line(_check_config(path), path, "stripe.webhook_secret_file", "cannot read")


def test_load_config_raises_only_config_error_for_every_hostile_file(tmp_path):
    """The library entry point (used by the server) has the same contract as the command."""
    hostile = {
        "latin1.toml": _base(tmp_path).replace('name = "Northwind IT"', 'name = "Société"').encode("latin-1"),
        "ipv6.toml": _base(tmp_path)
        .replace('base_url = "http://127.0.0.1:8080"', 'base_url = "http://[::1"')
        .encode(),
        "listen.toml": _base(tmp_path)
        .replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:²"')
        .encode(),
    }
    unexpected = {}
    for name, data in hostile.items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigError:
            continue
        except Exception as exc:
            unexpected[name] = f"{type(exc).__name__}: {exc}"
        else:
            unexpected[name] = "accepted"
    assert unexpected == {}


# ---- PSA settings that parse but could never work ------------------------------------------------

_FILES_SECTION = 'kind = "files"\npoll_minutes = 5\n\n[psa.files]\npath = "{path}"\n'
_CW = (
    'kind = "connectwise"\npoll_minutes = 5\n{psa}\n[psa.connectwise]\nbase_url = "{base_url}"\n'
    'company_id = "{company}"\npublic_key = "pub"\nprivate_key = "priv"\n'
    'client_id = "00000000-0000-4000-8000-000000000000"\n{section}\n'
)
_AT = (
    'kind = "autotask"\n[psa.autotask]\nusername = "{user}"\nsecret = "s3cret"\n'
    'integration_code = "TRACK"\n{section}\n'
)
_HALO = (
    'kind = "halopsa"\n[psa.halopsa]\nbase_url = "https://msp.halopsa.com/api"\nclient_id = "{client}"\n'
    'client_secret = "s3cret"\n{section}\n'
)


def _cw(psa: str = "", base_url: str = "https://cw.example/v4_6_release/apis/3.0", company: str = "acme",
        section: str = "") -> str:
    return _CW.format(psa=psa, base_url=base_url, company=company, section=section)


PSA_CASES = {
    "connectwise company_id empty": (_cw(company=""), "psa.connectwise.company_id"),
    "connectwise base_url not a URL": (_cw(base_url="not a url"), "psa.connectwise.base_url"),
    "connectwise site with a scheme": (
        _cw(base_url="", section='site = "https://na.myconnectwise.net"'), "psa.connectwise.site"),
    "connectwise timeout 1e20 s": (_cw(section="timeout_seconds = 100000000000000000000"),
                                   "psa.connectwise.timeout_seconds"),
    "connectwise page_size past its cap": (_cw(section="page_size = 5000"), "psa.connectwise.page_size"),
    "deletion check every 1e14 hours": (_cw(psa="deletion_check_hours = 100000000000000"),
                                        "psa.deletion_check_hours"),
    "poll every 1e14 minutes": (_cw().replace("poll_minutes = 5", "poll_minutes = 100000000000000"),
                                "psa.poll_minutes"),
    "no overlap at all": (_cw(psa="overlap_minutes = 0"), "psa.overlap_minutes"),
    "autotask zone_url without a scheme": (
        _AT.format(user="api@example.com", section='zone_url = "webservices5.autotask.net"'),
        "psa.autotask.zone_url"),
    "autotask username empty": (_AT.format(user=" ", section=""), "psa.autotask.username"),
    "halopsa auth_url not a URL": (
        _HALO.format(client="abc", section='auth_url = "msp.halopsa.com/auth"'), "psa.halopsa.auth_url"),
    "halopsa client_id empty": (_HALO.format(client="", section=""), "psa.halopsa.client_id"),
    "outbox drained once in 30 years": (None, "outbox.interval_seconds"),
}


@pytest.mark.parametrize("case", list(PSA_CASES))
def test_a_psa_or_timer_setting_that_could_never_work_is_refused_naming_its_key(tmp_path, case):
    body, key = PSA_CASES[case]
    text = _base(tmp_path)
    if body is None:
        head, outbox, rest = text.partition("[outbox]\n")
        line = next(ln for ln in rest.splitlines() if ln.startswith("interval_seconds = "))
        text = head + outbox + rest.replace(line, "interval_seconds = 1000000000", 1)
    else:
        files = _FILES_SECTION.format(path=tmp_path / "data" / "psa-export")
        assert files in text
        text = text.replace(files, body, 1)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert key in str(err.value), str(err.value)
