"""Shared fixtures: a migrated store, a frozen clock, and the real parts on loopback.

The Stripe double (localstripe), the SMTP sink (aiosmtpd) and Chromium are started once per
session. When one of them cannot start, the tests that need it fail with the reason; they are
never skipped.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.config import Config, parse_config
from app.core.clock import FrozenClock
from app.demo.runner import WEBHOOK_SECRET, demo_config
from app.services import Services, build_services

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("CASHLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def stripe_double() -> Iterator[object]:
    from app.demo.stripe_double import StripeDouble, StripeDoubleError

    try:
        double = StripeDouble().start()
    except StripeDoubleError as exc:
        pytest.fail(f"localstripe (the Stripe double) did not start: {exc}")
    yield double
    double.stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[object]:
    from app.demo.mail_sink import MailSink

    sink = MailSink()
    try:
        sink.start()
    except Exception as exc:
        pytest.fail(f"the aiosmtpd SMTP sink did not start: {exc}")
    yield sink
    sink.stop()


@pytest.fixture
def mail(smtp_sink):
    smtp_sink.clear()
    return smtp_sink


@pytest.fixture
def frozen_clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))


def make_config(
    tmp_path: Path,
    *,
    port: int = 8080,
    stripe_base: str = "http://127.0.0.1:9",
    smtp_port: int = 9,
    extra: str = "",
    replace: dict[str, str] | None = None,
) -> Config:
    """The demo's config pointed at this test's folder and doubles; `extra` TOML is appended."""
    (tmp_path / "psa-export").mkdir(exist_ok=True)
    text = demo_config(
        data_dir=tmp_path,
        port=port,
        stripe_base=stripe_base,
        smtp_port=smtp_port,
        secret_key="test-secret-key-0123456789abcdef",
    )
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_config(text + extra, source=str(tmp_path / "config.toml"))


@pytest.fixture
def cw() -> Iterator[object]:
    """The ConnectWise fake on loopback."""
    from tests.fakes.connectwise import ConnectWiseFake

    with ConnectWiseFake() as fake:
        yield fake
    # Any request the real API would refuse fails the test that made it.
    assert fake.violations == []


@pytest.fixture
def cw_services(tmp_path, frozen_clock, cw) -> Services:
    from tests.cw_world import cw_config

    return build_services(cw_config(tmp_path, cw), clock=frozen_clock)


# tests.psa_worlds.KINDS, spelled out: that module imports this one.
@pytest.fixture(params=["connectwise", "autotask", "halopsa"])
def psa_world(request, frozen_clock) -> Iterator[object]:
    """Each PSA's fake with its world helpers (tests.psa_worlds), one test run per PSA."""
    from tests.psa_worlds import make_world

    w = make_world(request.param, frozen_clock.utc_now)
    yield w
    w.fake.stop()
    assert w.violations == []


@pytest.fixture
def services(tmp_path, frozen_clock) -> Services:
    cfg = make_config(tmp_path)
    return build_services(cfg, clock=frozen_clock)


@pytest.fixture
def stripe_services(tmp_path, frozen_clock, stripe_double, mail) -> Services:
    """Services wired to the session's Stripe double and SMTP sink."""
    cfg = make_config(tmp_path, stripe_base=stripe_double.api_base, smtp_port=mail.port)
    return build_services(cfg, clock=frozen_clock)


class LiveServer:
    """The Flask app on a loopback port in a thread (threaded, like gunicorn's gthread worker)."""

    def __init__(self, app, port: int) -> None:
        from werkzeug.serving import make_server

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server = make_server("127.0.0.1", port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (./dev does it as root)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            pytest.fail(f"Chromium at {CHROMIUM} did not launch: {exc}")
        yield b
        b.close()


@pytest.fixture
def artifacts(request) -> Path:
    folder = ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def stripe_ext_double() -> Iterator[object]:
    """A second localstripe with the tests' extension (ACH, disputes, refund events, Stripe's
    off-session authentication error, optional Idempotency-Key replay): tests/stripe_ext.py."""
    from app.demo.stripe_double import StripeDouble, StripeDoubleError

    try:
        double = StripeDouble(extensions=("tests.stripe_ext",)).start()
    except StripeDoubleError as exc:
        pytest.fail(f"localstripe with the tests' extension did not start: {exc}")
    yield double
    double.stop()


@pytest.fixture
def stripe_ext(stripe_ext_double):
    """The extension's controls, reset for this test; `.double` is the double itself."""
    from tests.stripe_ext import StripeExt

    ext = StripeExt(stripe_ext_double.api_base)
    ext.reset()
    ext.double = stripe_ext_double  # type: ignore[attr-defined]
    return ext
