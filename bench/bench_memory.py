"""Resident memory of the running service, as systemd counts it (gunicorn master + worker). By hand:

    .venv/bin/python bench/bench_memory.py [--settle 15] [--duration 20]

1. generates the demo dataset (app.demo.dataset.generate: 42 clients, 2,100 invoices) and imports it
   through the real intake (app.jobs.poll_psa.run), with a password on one client's billing contact;
2. starts `cashloop serve` (app.server.serve: one gthread worker, the scheduler, the start-up checks)
   pinned to CPU 0 when there are more, and waits for /healthz;
3. idle: after `--settle` seconds (the start-up poll, reminders and outbox have run) reads the PSS
   of the master and the worker from /proc/<pid>/smaps_rollup (pages the two share after the fork
   counted once, as the service's cgroup counts them; summing their VmRSS would count them twice),
   and, for information, each one's VmRSS;
4. under the portal load of bench_portal.py (wrk, 50 keep-alive connections, signed in): the
   client's invoice list, one of its invoice pages and /healthz for `--duration` seconds each,
   sampling the PSS every 0.1 s; the peak is the largest sample (and the worker's VmHWM is shown).

Targets (DESIGN.md "Targets", issue 9): idle under 120 MB, under load under 250 MB, for the whole
service on the 1 vCPU / 1 GB VM. Uses bench_portal's helpers (sign-in, wrk, stop); binds only
127.0.0.1; stops the server and removes the data at the end, whatever happens. Needs wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from _common import ROOT, Figure, free_port, mb, record, rss_kib, use_repo_root

use_repo_root()

import bench_portal  # noqa: E402 - after use_repo_root: it imports the app lazily

TARGET_IDLE_MB = 120
TARGET_LOAD_MB = 250


def _log(msg: str) -> None:
    print(f"[bench_memory] {msg}", file=sys.stderr, flush=True)


def seed_demo(data_dir: Path, port: int) -> tuple[str, list[str]]:
    """The demo dataset through the real intake; returns a billing login and its invoice pages."""
    from app.config import parse_config
    from app.core.logins import set_password
    from app.demo.dataset import generate
    from app.jobs import poll_psa
    from app.services import build_services

    generate(data_dir / "psa-export", today=date.today())
    (data_dir / "config.toml").write_text(bench_portal._config_text(data_dir, port), encoding="utf-8")
    data_dir.chmod(0o700)
    services = build_services(parse_config((data_dir / "config.toml").read_text(), source="bench"))
    report = poll_psa.run(services)
    if report.error:
        raise SystemExit(f"import failed: {report.error}")
    client = services.store.one(
        "SELECT c.id, COUNT(i.id) AS n FROM clients c JOIN invoices i ON i.client_id = c.id "
        "GROUP BY c.id ORDER BY n DESC LIMIT 1"
    )
    email = services.store.scalar(
        "SELECT email FROM contacts WHERE client_id = ? AND is_active = 1 AND email IS NOT NULL "
        "ORDER BY role = 'billing' DESC, id LIMIT 1", (client["id"],)
    )
    tokens = [r[0] for r in services.store.all(
        "SELECT token FROM invoices WHERE client_id = ? AND is_approved = 1 LIMIT 20", (client["id"],))]
    with services.store.write() as db:
        set_password(db, services.clock, email, bench_portal.PASSWORD)
    services.store.close()
    return email, [f"/invoices/{t}" for t in tokens]


def pss_kib(pid: int) -> int:
    """Proportional set size: each page shared by master and worker (copy-on-write after the fork)
    counted once between them, as the service's cgroup (systemd's MemoryCurrent) counts it."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise SystemExit(f"no Pss in /proc/{pid}/smaps_rollup")


def service_memory(master: int, worker: int) -> int:
    return pss_kib(master) + pss_kib(worker)


class Sampler(threading.Thread):
    """The service's memory (PSS) every 0.1 s while the load runs; `peak` in KiB."""

    def __init__(self, master: int, worker: int) -> None:
        super().__init__(daemon=True)
        self.master, self.worker, self.peak = master, worker, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, service_memory(self.master, self.worker))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settle", type=float, default=15, help="seconds after start-up before the idle reading")
    p.add_argument("--duration", type=float, default=20, help="seconds of load per route")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--results", type=Path)
    args = p.parse_args()
    wrk_bin = shutil.which("wrk")
    if not wrk_bin:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        others = ",".join(map(str, cpus[1:]))
        pinned = f"server pinned to CPU {cpus[0]}, wrk to CPU {others}"
        server_prefix, wrk = ["taskset", "-c", str(cpus[0])], ["taskset", "-c", others, wrk_bin]
    else:
        pinned, server_prefix, wrk = "not pinned (1 CPU)", [], [wrk_bin]
    workdir = Path(tempfile.mkdtemp(prefix="cashloop-bench-memory-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = None
    try:
        _log("demo dataset through poll_psa.run")
        email, pages = seed_demo(data_dir, port)
        with (workdir / "server.log").open("wb") as log_fh:
            proc = subprocess.Popen(
                [*server_prefix, sys.executable, "-m", "app.cli", "serve",
                 "--config", str(data_dir / "config.toml")],
                cwd=ROOT, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        bench_portal.wait_healthy(base, proc)
        worker = bench_portal.worker_pid(proc.pid)
        _log(f"master {proc.pid}, worker {worker}; settling {args.settle:g} s")
        time.sleep(args.settle)
        idle = service_memory(proc.pid, worker)
        idle_worker, idle_master = rss_kib(worker), rss_kib(proc.pid)
        cookie = bench_portal.sign_in(base, email)
        sampler = Sampler(proc.pid, worker)
        sampler.start()
        routes = ["/invoices?status=all", *pages[:1], "/healthz"]
        for route in routes:
            _log(f"wrk {route} for {args.duration:g} s")
            bench_portal.run_wrk(wrk, base + route, cookie, args.duration, threads=2, conns=args.connections)
        sampler.done.set()
        sampler.join()
        peak, worker_hwm = sampler.peak, rss_kib(worker, "VmHWM")
        health = json.loads(bench_portal._get(base + "/healthz").text)
    finally:
        if proc is not None:
            bench_portal.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    figures = [
        Figure("idle after start-up, demo dataset (PSS, master + worker)", mb(idle), f"< {TARGET_IDLE_MB} MB",
               idle * 1024 / 1e6 < TARGET_IDLE_MB),
        Figure("idle: VmRSS of the worker / of the master", f"{mb(idle_worker)} / {mb(idle_master)}"),
        Figure("peak under the portal load (PSS, master + worker)", mb(peak), f"< {TARGET_LOAD_MB} MB",
               peak * 1024 / 1e6 < TARGET_LOAD_MB),
        Figure("peak: VmHWM of the worker", mb(worker_hwm)),
        Figure("healthz after the load",
               health.get("status", "?") + " " + "; ".join(health.get("problems", []))),
    ]
    params = (f"demo dataset (42 clients, 2,100 invoices), settle {args.settle:g} s, "
              f"wrk -c{args.connections} {args.duration:g} s on {len(routes)} routes")
    print(record("bench_memory.py", params, pinned, figures, args.results, write=not args.no_record))
    return 0 if all(f.ok is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
