"""Log lines are structured and never carry a secret; X-Forwarded-* counts only from the proxy."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import requests

from app import logs
from app.demo.runner import demo_config
from app.services import build_services
from app.web import create_app
from tests.conftest import free_port, make_config

ROOT = Path(__file__).resolve().parents[2]
STRIPE_KEY = "sk_live_51HxQ2eFakeKeyForTheMaskingTest0123456789"


def _capture(cfg) -> io.StringIO:
    logs.configure(cfg)
    out = io.StringIO()
    logging.getLogger().handlers[0].setStream(out)
    return out


def test_a_log_line_with_the_stripe_key_or_any_config_secret_is_masked(tmp_path):
    cfg = make_config(tmp_path, replace={'secret_key = "sk_test_123"': f'secret_key = "{STRIPE_KEY}"'})
    out = _capture(cfg)
    log = logging.getLogger("app.sync.test")
    log.warning("stripe said no to key %s (webhook secret %s)", STRIPE_KEY, cfg.stripe.webhook_secret)
    log.info("PSA call with Authorization: Bearer eyJhbGciOi.J9.abc and Basic Y3c6c2VjcmV0cGFzcw==")
    log.info("session key %s", cfg.cashloop.secret_key)
    try:
        raise RuntimeError(f"connect failed for {STRIPE_KEY}")
    except RuntimeError:
        log.exception("sign-in link /magic/AbCdEf0123456789xyz was opened")
    text = out.getvalue()
    assert STRIPE_KEY not in text and str(cfg.stripe.webhook_secret) not in text
    assert str(cfg.cashloop.secret_key) not in text and "eyJhbGciOi" not in text and "Y3c6c2Vj" not in text
    assert "AbCdEf0123456789xyz" not in text and "/magic/***" in text
    lines = text.splitlines()
    assert len(lines) == 4  # the traceback is folded into its own line
    assert lines[0].startswith("ts=") and " level=WARNING logger=app.sync.test msg=" in lines[0]
    assert 'msg="stripe said no to key *** (webhook secret ***)"' in lines[0]
    assert " exc=" in lines[3] and "RuntimeError: connect failed for ***" in lines[3]


def test_json_log_lines_are_one_object_per_line(tmp_path):
    cfg = make_config(tmp_path, extra='\n[ops]\nlog_format = "json"\n')
    out = _capture(cfg)
    logging.getLogger("app.x").error("two\nlines with %s", STRIPE_KEY)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR" and record["msg"] == "two\nlines with ***"


def test_the_service_log_masks_secrets_and_sign_in_tokens_in_gunicorn_lines_too(tmp_path):
    port = free_port()
    (tmp_path / "psa-export").mkdir()
    tmp_path.chmod(0o700)
    config = tmp_path / "config.toml"
    config.write_text(demo_config(data_dir=tmp_path, port=port, stripe_base="http://127.0.0.1:9", smtp_port=9,
                                  secret_key="log-test-secret-key-0123456789ab"))
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        requests.get(f"http://127.0.0.1:{port}/magic/Secr3tSignInToken0123", timeout=5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "GET /magic/*** HTTP/1.1" in out and "Secr3tSignInToken0123" not in out
    assert "log-test-secret-key-0123456789ab" not in out
    assert all(line.startswith("ts=") for line in out.splitlines() if line.strip()), out[:2000]
    assert "scheduler stopped" in out  # SIGTERM: the scheduler was stopped before the worker left


def _client(tmp_path, trusted: int):
    cfg = make_config(tmp_path, replace={'listen = "127.0.0.1:8080"': 'listen = "0.0.0.0:8080"'},
                      extra="")
    cfg = replace(cfg, cashloop=replace(cfg.cashloop, trusted_proxies=trusted))
    app = create_app(build_services(cfg))

    @app.get("/_peer")
    def peer():
        from flask import jsonify, request

        return jsonify(addr=request.remote_addr, scheme=request.scheme)

    return app.test_client()


def test_forwarded_headers_count_only_when_they_come_from_the_proxy_address(tmp_path):
    client = _client(tmp_path, trusted=1)
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    via_proxy = client.get("/_peer", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()
    assert via_proxy == {"addr": "203.0.113.9", "scheme": "https"}
    direct = client.get("/_peer", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.7"}).get_json()
    assert direct == {"addr": "198.51.100.7", "scheme": "http"}


def test_without_a_proxy_configured_forwarded_headers_never_count(tmp_path):
    client = _client(tmp_path, trusted=0)
    got = client.get("/_peer", headers={"X-Forwarded-For": "203.0.113.9"},
                     environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()
    assert got["addr"] == "127.0.0.1"
