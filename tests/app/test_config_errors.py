"""A bad config stops `cashloop serve` before anything starts: exit 2, one line naming the key."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from app.config import ConfigError, documented_keys, parse_config
from app.demo.runner import demo_config
from tests.conftest import free_port


def _toml(tmp_path, port: int) -> str:
    return demo_config(data_dir=tmp_path / "data", port=port, stripe_base="http://127.0.0.1:9", smtp_port=9,
                       secret_key="test-secret-key-0123456789abcdef")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


CASES = {
    "missing key": (lambda t: t.replace('name = "Northwind IT Services LLC"\n', ""),
                    "entity.name: missing required key"),
    "unknown key": (lambda t: t.replace("[outbox]", "[outbox]\ninterval_secs = 5"),
                    "outbox.interval_secs: unknown key"),
    "wrong type": (lambda t: t.replace("poll_minutes = 5", 'poll_minutes = "five"'),
                   "psa.poll_minutes: expected an integer"),
    "unreadable secret file": (lambda t: t.replace('secret_key = "sk_test_123"',
                                                   'secret_key_file = "/nonexistent/stripe.key"'),
                               "stripe.secret_key_file: cannot read /nonexistent/stripe.key"),
    "bad value": (lambda t: t.replace('timezone = "America/Chicago"', 'timezone = "Mars/Olympus"'),
                  "cashloop.timezone: unknown time zone 'Mars/Olympus'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_exits_2_naming_the_key_and_nothing_listens(tmp_path, case):
    port = free_port()
    mutate, expected = CASES[case]
    path = tmp_path / "config.toml"
    text = mutate(_toml(tmp_path, port))
    path.write_text(text)
    for argv in (["serve", "--config", str(path)], ["check-config", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(path) in lines[0] and expected in lines[0], lines[0]
    assert not _listening(port)
    assert not (tmp_path / "data").exists()  # nothing was created either


def test_good_config_checks_ok(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(_toml(tmp_path, free_port()))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "OK" in proc.stdout


def test_secret_file_is_read_and_never_printed(tmp_path):
    secret = tmp_path / "stripe.key"
    secret.write_text("sk_test_fromfile\n")
    text = _toml(tmp_path, 8080).replace('secret_key = "sk_test_123"', f'secret_key_file = "{secret}"')
    cfg = parse_config(text)
    assert cfg.stripe.secret_key == "sk_test_fromfile"
    assert "sk_test_fromfile" not in repr(cfg)


def test_both_inline_and_file_secret_is_an_error(tmp_path):
    text = _toml(tmp_path, 8080).replace('secret_key = "sk_test_123"',
                                         'secret_key = "sk_test_123"\nsecret_key_file = "/x"')
    with pytest.raises(ConfigError, match=r"stripe\.secret_key: give either"):
        parse_config(text)


def test_every_setting_is_documented_in_the_example_config():
    from pathlib import Path

    example = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text(encoding="utf-8")
    missing = []
    for key, doc in documented_keys():
        section, _, name = key.rpartition(".")
        if f"[{section}]" not in example or not any(
            line.lstrip("# ").startswith(f"{name} =") or line.lstrip("# ").startswith(f"{name}_file =")
            for line in example.splitlines()):
            missing.append(key)
        assert doc, f"{key} has no doc string"
    assert missing == []


def test_example_config_is_valid(tmp_path):
    import re
    from pathlib import Path

    example = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text(encoding="utf-8")

    def local_secret(match: re.Match[str]) -> str:
        path = tmp_path / Path(match.group(2)).name
        path.write_text("secret-value-0123456789abcdef\n")
        return f'{match.group(1)}_file = "{path}"'

    text = re.sub(r'^(\w+)_file = "([^"]+)"', local_secret, example, flags=re.M)
    cfg = parse_config(text, source="config.example.toml")
    assert cfg.psa.kind == "connectwise" and cfg.psa.connectwise is not None
    assert cfg.stripe.webhook_secret == "secret-value-0123456789abcdef"
