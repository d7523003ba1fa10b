"""Portal latency under load and idle memory, under gunicorn as in production. Run by hand:

    .venv/bin/python bench/bench_portal.py [--invoices 2000] [--duration 10]

1. generates a files-connector export (app.demo.dataset.generate) and gives every invoice to one
   client, then imports it through the real intake (app.jobs.poll_psa.run);
2. gives that client's billing contact a password (app.core.logins.set_password);
3. starts `cashloop serve --config ... --bind 127.0.0.1:<free port>` in a subprocess: app.server.serve,
   one gthread worker with 8 threads and the scheduler, pinned to CPU 0 when there are more;
4. signs in with requests (GET /login for the CSRF token, POST /login) and hands the session cookie
   to wrk (`-t2 -c50 --latency`, pinned to the other CPUs), which loads `/healthz` and then
   `/invoices?status=all` for `--duration` seconds each, after a short warm-up of each;
5. reads VmRSS of the gunicorn worker from /proc/<pid>/status before and after the load.

Targets (DESIGN.md "Targets"): invoice list p99 <= 4x the p99 of the trivial route; idle resident
memory < 120 MB. Everything binds to 127.0.0.1; the server is stopped and the data removed at the
end, whatever happens. Needs wrk (`apt-get install -y wrk`). Results go to bench/results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import ROOT, Figure, free_port, mb, record, rss_kib, use_repo_root

use_repo_root()

TARGET_P99_RATIO = 4.0
TARGET_IDLE_MB = 120
PASSWORD = "bench-password-2026"  # noqa: S105 - a throwaway login on a loopback-only instance
SECRET_KEY = "bench-secret-key-0123456789abcdef"  # noqa: S105 - same
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _log(msg: str) -> None:
    print(f"[bench_portal] {msg}", file=sys.stderr, flush=True)


def _config_text(data_dir: Path, port: int) -> str:
    from app.demo.runner import demo_config

    return demo_config(
        data_dir=data_dir, port=port, stripe_base="http://127.0.0.1:9", smtp_port=9, secret_key=SECRET_KEY
    )


def seed(data_dir: Path, port: int, invoices: int, others: int = 0) -> tuple[str, int, str]:
    """One client with `invoices` invoices (and `others` spread over other clients) through the real
    intake; returns (email, visible invoice count, client name)."""
    from app.config import parse_config
    from app.core.logins import set_password
    from app.demo.dataset import generate
    from app.jobs import poll_psa
    from app.services import build_services

    export = data_dir / "psa-export"
    generate(export, today=date.today(), clients=max(4, others // 50 + 1), invoices=invoices + others)
    companies = json.loads((export / "companies.json").read_text(encoding="utf-8"))
    owner = companies[0]
    records = json.loads((export / "invoices.json").read_text(encoding="utf-8"))

    def give(inv: dict, company: dict) -> None:
        for key in ("company", "billToCompany", "shipToCompany"):
            if key in inv:
                inv[key] = {"id": company["id"], "identifier": company["identifier"], "name": company["name"]}

    for n, inv in enumerate(records):
        if n < invoices:  # the first `invoices` go to one client, as if it were the MSP's biggest
            give(inv, owner)
        elif inv["company"]["id"] == owner["id"]:  # the others keep their clients, but not that one
            give(inv, companies[1])
    tmp = export / "invoices.json.tmp"
    tmp.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, export / "invoices.json")

    toml = _config_text(data_dir, port)
    (data_dir / "config.toml").write_text(toml)
    data_dir.chmod(0o700)  # `cashloop serve` refuses a data directory other users can read
    services = build_services(parse_config(toml, source=str(data_dir / "config.toml")))
    report = poll_psa.run(services)
    if report.error:
        raise SystemExit(f"import failed: {report.summary()}")
    client = services.store.one(
        "SELECT id, name FROM clients WHERE source = 'files' AND remote_id = ?", (str(owner["id"]),)
    )
    count = services.store.scalar(
        "SELECT COUNT(*) FROM invoices WHERE client_id = ? AND status = 'open' AND is_approved = 1",
        (client["id"],),
    )
    contact = services.store.one(
        "SELECT email FROM contacts WHERE client_id = ? AND is_active = 1 AND email IS NOT NULL "
        "ORDER BY role = 'billing' DESC, id LIMIT 1",
        (client["id"],),
    )
    with services.store.write() as db:
        set_password(db, services.clock, contact["email"], PASSWORD)
    services.store.close()
    return contact["email"], int(count), client["name"]


def _get(url: str, timeout: float = 10, **kw):
    import requests

    return requests.get(url, timeout=timeout, **kw)


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before answering")
        with contextlib.suppress(requests.RequestException):
            if _get(base + "/healthz").status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s")


def worker_pid(master: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.1)
    raise SystemExit("gunicorn started no worker")


def sign_in(base: str, email: str) -> str:
    """POST /login like a browser; returns the Cookie header of the signed-in session."""
    import requests

    s = requests.Session()
    form = s.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    if form.status_code != 200 or not token:
        raise SystemExit(f"GET /login: {form.status_code}, no CSRF token in the form")
    resp = s.post(
        base + "/login",
        data={"csrf_token": token.group(1), "email": email, "password": PASSWORD, "next": ""},
        allow_redirects=False,
        timeout=10,
    )
    if resp.status_code != 302:
        raise SystemExit(f"POST /login answered {resp.status_code}, not a redirect: sign-in failed")
    return "; ".join(f"{c.name}={c.value}" for c in s.cookies)


def check_list(base: str, cookie: str, expected: int) -> int:
    # A long timeout: right after a load run the worker may still be serving the requests queued by it.
    resp = _get(base + "/invoices?status=all", 120, headers={"Cookie": cookie}, allow_redirects=False)
    if resp.status_code != 200:
        raise SystemExit(f"/invoices?status=all with the session cookie answered {resp.status_code}")
    rows = resp.text.count('href="/invoices/')
    if f"{expected:,}" not in resp.text and str(expected) not in resp.text:
        _log(f"warning: the list page does not show the count {expected}")
    return rows


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    result: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M):
        result[f"p{pct}"] = _ms(value)
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = float(sum(map(int, m.groups()))) if m else 0.0
    if "p99" not in result:
        raise ValueError("no latency distribution in the wrk output:\n" + out)
    return result


def run_wrk(wrk: list[str], url: str, cookie: str, duration: float, *, threads: int, conns: int) -> str:
    cmd = [*wrk, f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
           "-H", f"Cookie: {cookie}", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True)
    return done.stdout


def _py_spy(pid: int, out: str, duration: float) -> subprocess.Popen:
    """py-spy sampling the worker (all threads) for `duration` seconds; the caller waits for it."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    fmt = {".txt": "raw", ".json": "speedscope"}.get(Path(out).suffix, "flamegraph")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", f"{duration:.0f}",
                             "--rate", "200", "--format", fmt, "-o", out, "--nonblocking"])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the gunicorn master (graceful), then SIGKILL to the group it leads if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            _log("the server ignored SIGTERM; killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group start_new_session gave it
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # a worker orphaned by a killed master
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--invoices", type=int, default=2000)
    p.add_argument("--other-invoices", type=int, default=0,
                   help="also import this many invoices of other clients (the list must not depend on them)")
    p.add_argument("--duration", type=float, default=10, help="seconds of load per route")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unrecorded load per route first")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, database)")
    p.add_argument("--profile", help="attach py-spy to the worker during the invoice-list load (.svg/.txt)")
    p.add_argument("--no-record", action="store_true", help="print only; do not touch results.md")
    p.add_argument("--results", type=Path, help="the results file (default bench/results.md here)")
    args = p.parse_args()

    wrk_bin = shutil.which("wrk")
    if not wrk_bin:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:  # the server gets one CPU (the targets are for 1 vCPU), wrk the others
        others = ",".join(map(str, cpus[1:]))
        pinned = f"server pinned to CPU {cpus[0]}, wrk to CPU {others}"
        server_prefix = ["taskset", "-c", str(cpus[0])]
        wrk = ["taskset", "-c", others, wrk_bin]
    else:
        pinned, server_prefix, wrk = "not pinned (1 CPU: server and wrk share it)", [], [wrk_bin]

    workdir = Path(tempfile.mkdtemp(prefix="cashloop-bench-portal-"))
    data_dir = workdir / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = None
    load_before = os.getloadavg()[0]
    try:
        _log(f"seeding one client with {args.invoices} invoices through poll_psa.run in {data_dir}")
        email, count, client_name = seed(data_dir, port, args.invoices, args.other_invoices)
        _log(f"{client_name}: {count} visible invoices; signing in as {email}")
        log_path = workdir / "server.log"
        with log_path.open("wb") as log_fh:
            proc = subprocess.Popen(
                [*server_prefix, sys.executable, "-m", "app.cli", "serve",
                 "--config", str(data_dir / "config.toml"), "--bind", f"127.0.0.1:{port}"],
                cwd=ROOT, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_healthy(base, proc)
        worker = worker_pid(proc.pid)
        _log(f"gunicorn master {proc.pid}, worker {worker} on {base}")
        cookie = sign_in(base, email)
        rows = check_list(base, cookie, count)
        _log(f"/invoices?status=all shows {rows} invoice links for the signed-in contact")
        time.sleep(3)  # let the scheduler's first poll and the start-up settle
        rss_idle = rss_kib(worker)

        results: dict[str, dict[str, float]] = {}
        raw_out: dict[str, str] = {}
        for name, path in (("healthz", "/healthz"), ("invoices", "/invoices?status=all")):
            load = {"threads": args.wrk_threads, "conns": args.connections}
            if args.warmup > 0:
                run_wrk(wrk, base + path, cookie, args.warmup, **load)
            _log(f"wrk {path} for {args.duration:g} s")
            profiled = args.profile and name == "invoices"
            spy = _py_spy(worker, args.profile, args.duration) if profiled else None
            cpu0 = cpu_seconds(worker)
            raw_out[name] = run_wrk(wrk, base + path, cookie, args.duration, **load)
            cpu = cpu_seconds(worker) - cpu0
            if spy is not None:
                spy.wait(timeout=60)
            results[name] = parse_wrk(raw_out[name])
            results[name]["cpu_ms_per_req"] = cpu * 1000 / max(1.0, results[name]["requests"])
            _log(f"{path}: p99 {results[name]['p99']:.1f} ms, {results[name]['rps']:.0f} req/s")
        check_list(base, cookie, count)  # the session held all along: nothing was a redirect to /login
        time.sleep(3)
        rss_after = rss_kib(worker)
        hwm = rss_kib(worker, "VmHWM")
        master_rss = rss_kib(proc.pid)
    finally:
        if proc is not None:
            stop(proc)
            _log("server stopped")
        if args.keep:
            _log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    for name, r in results.items():
        if r["non2xx"] or r["socket_errors"]:
            _log(f"warning: {name}: {r['non2xx']:.0f} non-2xx/3xx, {r['socket_errors']:.0f} socket errors\n"
                 + raw_out[name])
    h, i = results["healthz"], results["invoices"]
    ratio = i["p99"] / h["p99"]
    idle_mb = max(rss_idle, rss_after) * 1024 / 1e6

    def line(r: dict[str, float]) -> str:
        errors = f", {r['non2xx']:.0f} non-2xx, {r['socket_errors']:.0f} socket errors" if (
            r["non2xx"] or r["socket_errors"]) else ""
        return (f"p99 {r['p99']:.1f} ms (p50 {r['p50']:.1f}, p90 {r['p90']:.1f}), "
                f"{r['rps']:,.0f} req/s, worker cpu {r['cpu_ms_per_req']:.2f} ms/req{errors}")

    figures = [
        Figure("/healthz (trivial route)", line(h)),
        Figure("/invoices?status=all", line(i)),
        Figure("invoice list p99 / trivial p99",
               f"{ratio:.1f}x (worker cpu per request {i['cpu_ms_per_req'] / h['cpu_ms_per_req']:.1f}x)",
               f"<= {TARGET_P99_RATIO:g}x", ratio <= TARGET_P99_RATIO),
        Figure("worker VmRSS idle (before load / after load)",
               f"{mb(rss_idle)} / {mb(rss_after)} (VmHWM {mb(hwm)}, master {mb(master_rss)})",
               f"< {TARGET_IDLE_MB} MB", idle_mb < TARGET_IDLE_MB),
    ]
    params = (
        f"--invoices {args.invoices} --other-invoices {args.other_invoices} (one client, {count} visible, "
        f"50 per page), gunicorn gthread 1 worker "
        f"x 8 threads + scheduler, wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s "
        f"--latency after {args.warmup:g} s warm-up, load avg {load_before:.1f} at start"
        + (", invoice list under py-spy" if args.profile else "")
    )
    record("bench_portal.py", params, pinned, figures, args.results, write=not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
