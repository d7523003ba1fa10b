"""localstripe, started the way the demo and the tests need it.

localstripe (a fake Stripe API, test-only) is run here with three deviations from its own
`localstripe` command, each for a reason:

1. It binds 127.0.0.1 only. Upstream binds `::` on every interface, which would expose a
   key-less fake payment API to the network the appliance sits on.
2. Its state goes to a per-instance pickle (`--state FILE`) or nowhere. Upstream always writes
   the hard-coded `/tmp/localstripe.pickle` after every write, so two instances (two test runs,
   or the demo next to the tests) would read and overwrite each other's customers and charges.
   We replace `Store.dump_to_disk` / `Store.try_load_from_disk` in the child process only.
3. It adds `DELETE /_config/webhooks/{id}`. Upstream can register webhooks but never forget one,
   and `DELETE /_config/data` keeps them, so a test's receiver would keep being called (and
   failing) for the rest of a session.

Child:  `python -m app.demo.stripe_double --port N [--state FILE]`
Parent: `with StripeDouble() as double: ... double.api_base ...`
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

SECRET_KEY = "sk_test_123"  # noqa: S105 - localstripe accepts any sk_ key; used everywhere in tests
PUBLISHABLE_KEY = "pk_test_123"
STARTUP_TIMEOUT_SECONDS = 15.0
_EXIT_PORT_IN_USE = 3  # lets the parent retry an auto-picked port that was taken in between
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class StripeDoubleError(RuntimeError):
    """localstripe could not be started, reached or configured."""


# --------------------------------------------------------------------------- child side


def _redirect_persistence(state: Path | None) -> None:
    from localstripe.resources import Store

    def load(store: Any) -> None:
        if state is not None and state.exists():
            with state.open("rb") as fh:
                old = pickle.load(fh)  # noqa: S301 - our own file, written below by this process
            store.clear()
            store.update(old)

    def dump(store: Any) -> None:
        if state is None:
            return
        # Write-then-rename, so a demo killed mid-write keeps its previous state.
        tmp = state.with_name(state.name + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(dict(store), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, state)

    Store.try_load_from_disk = load
    Store.dump_to_disk = dump


def serve(port: int, state: Path | None, extensions: list[str] | None = None) -> None:
    """Run localstripe on 127.0.0.1:`port` until SIGTERM/SIGINT. Exits 3 if the port is taken.

    Each of `extensions` is a module name whose `install(app)` patches localstripe before it serves
    (the tests' Stripe extension, tests/stripe_ext.py, for what localstripe lacks).
    """
    _redirect_persistence(state)
    from aiohttp import web
    from localstripe import server, webhooks

    async def forget_webhook(request: web.Request) -> web.Response:
        webhooks._webhooks.pop(request.match_info["id"], None)
        return web.Response()

    server.app.router.add_delete("/_config/webhooks/{id}", forget_webhook)
    for name in extensions or []:
        importlib.import_module(name).install(server.app)
    server.store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        print(f"stripe_double: cannot bind 127.0.0.1:{port}: {exc}", file=sys.stderr)
        sys.exit(_EXIT_PORT_IN_USE if exc.errno == errno.EADDRINUSE else 1)
    web.run_app(server.app, sock=sock, print=None, access_log=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="localstripe on loopback with its own state file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, default=None,
                        help="pickle file for the fake's data; omitted = in memory only")
    parser.add_argument("--extension", action="append", default=[],
                        help="module whose install(app) extends the fake (repeatable)")
    args = parser.parse_args(argv)
    serve(args.port, args.state.resolve() if args.state else None, args.extension)


# --------------------------------------------------------------------------- parent side


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StripeDouble:
    """A localstripe child process on a loopback port, as a context manager.

    `port=None` picks a free port. `state=None` keeps the fake's data in memory only. Entering
    blocks until the fake answers an authenticated request, or raises StripeDoubleError after
    ~15 s with the child's stderr. Leaving stops it (terminate, then kill).
    """

    secret_key = SECRET_KEY
    publishable_key = PUBLISHABLE_KEY

    def __init__(self, port: int | None = None, *, state: str | Path | None = None,
                 startup_timeout: float = STARTUP_TIMEOUT_SECONDS, extensions: tuple[str, ...] = ()) -> None:
        self._fixed_port = port
        self._extensions = extensions
        self._state = Path(state).resolve() if state is not None else None
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def js_url(self) -> str:
        return self.api_base + "/js.stripe.com/v3/"

    def start(self) -> StripeDouble:
        """Start the child and wait until it serves; raises StripeDoubleError."""
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.port = self._fixed_port or _free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except StripeDoubleError:
                code = self._proc.poll() if self._proc else None
                self.stop()
                if code == _EXIT_PORT_IN_USE and attempt + 1 < attempts:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the child if running. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> StripeDouble:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def register_webhook(self, url: str, secret: str, *, webhook_id: str = "cashloop",
                         events: list[str] | None = None) -> None:
        """Have the fake POST every event (or only `events`) to `url`, signed with `secret`.

        Re-registering the same `webhook_id` replaces it. Events arrive about 1 s after the call
        that caused them, once, with no retries.
        """
        fields: list[tuple[str, str]] = [("url", url), ("secret", secret)]
        fields += [(f"events[{i}]", e) for i, e in enumerate(events or [])]
        self._request("POST", f"/_config/webhooks/{urllib.parse.quote(webhook_id)}", fields)

    def unregister_webhook(self, webhook_id: str = "cashloop") -> None:
        """Stop sending events to a registered webhook (no-op if unknown)."""
        self._request("DELETE", f"/_config/webhooks/{urllib.parse.quote(webhook_id)}")

    def reset(self) -> None:
        """Delete every object in the fake. Registered webhooks are kept."""
        self._request("DELETE", "/_config/data")

    def stderr_text(self) -> str:
        """What the child has written to stdout/stderr so far (for failure messages)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return str(self._log.read().decode("utf-8", "replace"))

    def _spawn(self) -> None:
        if self._log is None:
            # A file, not a pipe: nobody drains a pipe while the tests run, and a full pipe
            # would block the child.
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "app.demo.stripe_double", "--port", str(self.port)]
        if self._state is not None:
            cmd += ["--state", str(self._state)]
        for name in self._extensions:
            cmd += ["--extension", name]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,  # noqa: S603
                                      stderr=subprocess.STDOUT, env=env)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise StripeDoubleError(
                    f"localstripe exited with code {self._proc.returncode} before serving on "
                    f"{self.api_base}.\n--- its output ---\n{self.stderr_text()}")
            try:
                status = self._request("GET", "/v1/customers", auth=True, timeout=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (OSError, StripeDoubleError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise StripeDoubleError(
            f"localstripe did not answer GET {self.api_base}/v1/customers within "
            f"{self._startup_timeout:.0f} s (last: {last}).\n--- its output ---\n{self.stderr_text()}")

    def _request(self, method: str, path: str, fields: list[tuple[str, str]] | None = None, *,
                 auth: bool = False, timeout: float = 5.0) -> int:
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        req = urllib.request.Request(self.api_base + path, data=data, method=method)  # noqa: S310
        if auth:
            req.add_header("Authorization", f"Bearer {SECRET_KEY}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                body = json.loads(body)["error"]["message"]
            raise StripeDoubleError(f"{method} {path} -> HTTP {exc.code}: {body}") from exc


if __name__ == "__main__":
    main()
