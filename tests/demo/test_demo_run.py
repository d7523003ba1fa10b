"""`cashloop demo` as a newcomer starts it: the installed command in a fresh folder, outside the
repository and without it on the import path. It prints the logins, serves the portal, takes the
Stripe double's bank-account settings, and Ctrl-C stops it with nothing left listening."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import free_port

VENV_BIN = Path(sys.executable).parent


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_demo_command_starts_outside_the_checkout_serves_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [str(VENV_BIN / "cashloop"), "demo", "--port", str(port), "--data", str(tmp_path / "demo")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C to stop."):
                break
        out = "".join(lines)
        assert "Cashloop demo is running." in out, out[-3000:]
        assert "Client login:" in out and "Test bank:" in out
        stripe_base = next(ln.split()[-1] for ln in lines if ln.strip().startswith("Stripe double:"))
        stripe_port = int(stripe_base.rsplit(":", 1)[1])
        assert requests.get(f"http://127.0.0.1:{port}/login", timeout=10).status_code == 200
        # The double took the demo's settings: bank debits settle by themselves a minute later.
        settings = requests.post(f"{stripe_base}/_config/ext/config", data={}, timeout=10).json()
        assert settings["ach_settle_after_seconds"] == 60
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, "".join(lines)[-3000:]
    assert not _listening(port) and not _listening(stripe_port)
