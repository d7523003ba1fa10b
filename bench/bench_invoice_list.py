"""The invoice list of a client with 2,000 invoices under 50 concurrent keep-alive clients, against a
trivial route of the same server. Run by hand:

    .venv/bin/python bench/bench_invoice_list.py [--invoices 2000] [--seconds 15] [--connections 50]

1. writes a store in a temporary folder: the measured client with `--invoices` invoices (every
   kind, 3 lines each, a third partly or fully paid through the portal, some disputed), plus 40
   other clients with 50 invoices each, so the database is not the client's alone;
2. starts the real server (app.server's gunicorn options: one gthread worker, 8 threads, no
   scheduler, no access log) pinned to CPU 0 — the target is for 1 vCPU;
3. signs the client's billing contact in and runs wrk (pinned to CPU 1 when there is one) with
   the session cookie: first /healthz (the trivial route: one SELECT 1 and a small JSON answer),
   then /invoices?status=all (page 1 of 40, sorted by due date), then the same sorted by balance
   with a search, each for `--seconds` after a 3 s warm-up;
4. records p50 and p99 of each, and the ratio of the list's p99 to the trivial route's p99; then
   the same without the page cache (pages are kept per client until its data changes,
   app.web.list_cache): every request a different search, first one matching (almost) nothing,
   then one matching 111 invoices in a random case and sort, so each renders 50 rows anew.

Target (DESIGN.md "Targets"): the list's p99 at most 4x the trivial route's p99.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Figure, free_port, record, use_repo_root

use_repo_root()

TARGET_RATIO = 4.0
PASSWORD = "bench-password-0123"  # noqa: S105 - a throwaway login in a temporary database


def _log(msg: str) -> None:
    print(f"[bench_invoice_list] {msg}", file=sys.stderr, flush=True)


def _config_text(workdir: Path, port: int) -> str:
    from app.demo.runner import demo_config

    text = demo_config(
        data_dir=workdir,
        port=port,
        stripe_base="http://127.0.0.1:9",
        smtp_port=9,
        secret_key="bench-secret-key-0123456789abcdef",  # noqa: S106,
    )
    return text + "\n[scheduler]\nenabled = false\n"


def _fill(workdir: Path, port: int, invoices: int) -> None:
    import random
    from datetime import date, timedelta

    from app.config import parse_config
    from app.services import build_services
    from tests.web import factories as f

    svc = build_services(parse_config(_config_text(workdir, port)))
    rnd = random.Random(7)
    today = date.today()
    kinds = ("agreement", "project", "time_and_materials", "product")
    for c in range(40):
        other = f.make_client(svc, f"Other client {c}")
        for n in range(50):
            f.make_invoice(
                svc,
                other,
                f"O{c}-{n}",
                total_minor=rnd.randrange(1_000, 90_000),
                issued_on=(today - timedelta(days=n * 7)).isoformat(),
                due_on=(today - timedelta(days=n * 7 - 30)).isoformat(),
            )
    client = f.make_client(svc, "Bench Dental LLC")
    f.make_person(svc, client, "ap@bench.example", role="billing")
    with svc.store.write() as db:
        from app.core.logins import set_password

        set_password(db, svc.clock, "ap@bench.example", PASSWORD)
    for n in range(invoices):
        kind = kinds[n % 4]
        total = rnd.randrange(5_000, 900_000)
        issued = today - timedelta(days=n // 3)
        inv = f.make_invoice(
            svc,
            client,
            f"INV-{10_000 + n}",
            kind=kind,
            total_minor=total,
            issued_on=issued.isoformat(),
            due_on=(issued + timedelta(days=30)).isoformat(),
            project="Office move" if kind == "project" else None,
            agreement="Managed services" if kind == "agreement" else None,
            ticket=f"#{50_000 + n} Printer" if kind == "time_and_materials" else None,
            description=f"Work order {n}",
            lines=[
                {
                    "description": f"Line {k}",
                    "amount_minor": total // 3 + (total % 3 if k == 0 else 0),
                    "service": ("Help desk", "Onsite", "Hardware")[k],
                }
                for k in range(3)
            ],
        )
        if n % 3 == 0:
            f.make_payment(svc, client, [(inv, total if n % 2 else total // 4)])
        if n % 97 == 0:
            from app.core import line_disputes

            with svc.store.write() as db:
                line_disputes.open_dispute(
                    db,
                    svc.clock,
                    client_id=client.id,
                    invoice_id=inv.id,
                    line_no=1,
                    reason="Bench dispute of one line",
                    raised_by="ap@bench.example",
                )
    svc.store.db.execute("ANALYZE")


def serve(config_path: str) -> None:
    """Child process: the real gunicorn server, without the scheduler and the access log."""
    from app.config import load_config
    from app.server import _Gunicorn, gunicorn_options, make_app

    cfg = load_config(config_path)
    options = gunicorn_options(cfg)
    options.update(accesslog=None, loglevel="warning")
    _Gunicorn(lambda: make_app(cfg, with_scheduler=False), options).run()


def _cookie(base: str) -> str:
    import requests

    s = requests.Session()
    page = s.get(f"{base}/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(
        f"{base}/login",
        data={"email": "ap@bench.example", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, r.text[:300]
    listing = s.get(f"{base}/invoices?status=all", timeout=30)
    assert listing.status_code == 200 and "INV-1" in listing.text
    return "; ".join(f"{k}={v}" for k, v in s.cookies.items())


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _rows_shown(url: str, cookie: str) -> int:
    import requests

    html = requests.get(url, headers={"Cookie": cookie}, timeout=30).text
    return len(re.findall(r'<tr id="invoice-', html))


# Every request a different search, so (almost) none is answered from the page cache.
_COLD_LUA = """
request = function()
  return wrk.format(nil, "/invoices?status=all&sort=balance&q=" .. math.random(1, 1000000))
end
"""
# Every request a search that matches 111 invoices ("work order 7": 7, 70-79, 700-799), spelt in
# a random case (LIKE ignores it, the cache key does not) with a random sort: each is a page of
# 50 rows computed and rendered anew.
_COLD_FULL_LUA = """
local sorts = {"due", "date", "number", "kind", "reference", "total", "balance", "status"}
request = function()
  local q = ""
  for c in ("work+order+"):gmatch(".") do
    if math.random() < 0.5 then q = q .. c:upper() else q = q .. c end
  end
  q = q .. math.random(1, 19)
  local dir = math.random() < 0.5 and "&dir=desc" or ""
  return wrk.format(nil, "/invoices?status=all&q=" .. q .. "&sort=" .. sorts[math.random(1, 8)] .. dir)
end
"""


def _wrk(
    url: str, *, cookie: str, seconds: int, connections: int, cpu: int | None, script: Path | None = None
) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Cookie: {cookie}",
        *(["-s", str(script)] if script else []),
        url,
    ]
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=preexec).stdout
    found = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        found[pct] = float(m.group(1)) * _UNIT[m.group(2)]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["rps"] = float(rps.group(1)) if rps else 0.0
    found["non2xx"] = float(errors.group(1)) if errors else 0.0
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], (cpus[1] if len(cpus) > 1 else None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-invoice-list-"))
    port = free_port()
    try:
        _log(f"writing {args.invoices} invoices (+2,000 of other clients) in {workdir}")
        _fill(workdir, port, args.invoices)
        config = workdir / "config.toml"
        config.write_text(_config_text(workdir, port))
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(config)],
            preexec_fn=lambda: os.sched_setaffinity(0, {server_cpu}),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            import requests

            for _ in range(100):
                try:
                    if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.1)
            cookie = _cookie(base)
            routes = {
                "trivial /healthz": f"{base}/healthz",
                "list /invoices?status=all": f"{base}/invoices?status=all",
                "list sorted by balance, searched": (
                    f"{base}/invoices?status=all&sort=balance&dir=desc&q=Work"
                ),
            }
            measured = {}
            for name, url in routes.items():
                _wrk(url, cookie=cookie, seconds=3, connections=args.connections, cpu=client_cpu)  # warm-up
                measured[name] = _wrk(
                    url, cookie=cookie, seconds=args.seconds, connections=args.connections, cpu=client_cpu
                )
                _log(f"{name}: {measured[name]}")
            lua = workdir / "cold.lua"
            lua.write_text(_COLD_LUA)
            cold = _wrk(
                f"{base}/invoices",
                cookie=cookie,
                seconds=args.seconds,
                connections=args.connections,
                cpu=client_cpu,
                script=lua,
            )
            _log(f"cold: {cold}")
            lua_full = workdir / "cold_full.lua"
            lua_full.write_text(_COLD_FULL_LUA)
            assert _rows_shown(f"{base}/invoices?status=all&q=wORk+order+7", cookie) == 50
            cold_full = _wrk(
                f"{base}/invoices",
                cookie=cookie,
                seconds=args.seconds,
                connections=args.connections,
                cpu=client_cpu,
                script=lua_full,
            )
            _log(f"cold, 50 rows: {cold_full}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    trivial = measured["trivial /healthz"]
    figures = []
    for name, m in measured.items():
        figures.append(
            Figure(
                f"{name} p50 / p99",
                f"{m['50']:.1f} ms / {m['99']:.1f} ms, {m['rps']:.0f} req/s"
                + (f", {m['non2xx']:.0f} non-2xx" if m["non2xx"] else ""),
            )
        )
    for name in list(measured)[1:]:
        ratio = measured[name]["99"] / trivial["99"]
        figures.append(
            Figure(
                f"{name}: p99 / trivial p99",
                f"{ratio:.2f}x",
                f"<= {TARGET_RATIO:.0f}x",
                ratio <= TARGET_RATIO and measured[name]["non2xx"] == 0,
            )
        )
    # Without the page cache: every request a new search, so each one computes its page.
    for name, m in (
        ("list, every request a new search (cold, few or no rows)", cold),
        ("list, every request a new search of 111 rows (cold, 50 rows rendered)", cold_full),
    ):
        ratio = m["99"] / trivial["99"]
        figures.append(
            Figure(
                f"{name} p50 / p99",
                f"{m['50']:.1f} ms / {m['99']:.1f} ms, {m['rps']:.0f} req/s: {ratio:.2f}x trivial p99"
                + (f", {m['non2xx']:.0f} non-2xx" if m["non2xx"] else ""),
                f"<= {TARGET_RATIO:.0f}x",
                ratio <= TARGET_RATIO and m["non2xx"] == 0,
            )
        )
    pinned = f"server pinned to CPU {server_cpu}" + (
        f", wrk to CPU {client_cpu}" if client_cpu is not None else ""
    )
    record(
        "bench_invoice_list.py",
        f"--invoices {args.invoices} --seconds {args.seconds} "
        f"--connections {args.connections} (wrk -t2, keep-alive)",
        pinned,
        figures,
    )
    return 0 if all(fg.ok is not False for fg in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
