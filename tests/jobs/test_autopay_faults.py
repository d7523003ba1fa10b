"""Crash the autopay run with SIGKILL at each step boundary, restart it, and count: every invoice
is charged once at the Stripe double, recorded once, and receipted once.

Real processes (tests/jobs/autopay_child.py), plain localstripe (which ignores Idempotency-Key,
so only Cashloop's own guard stands between a restart and a second charge), the SMTP sink and
a SQLite file per run. Twenty runs at random points, each point at least three times; the seed
is printed with any failure so a run can be repeated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from app.config import load_config
from app.core.clock import FrozenClock
from app.demo.runner import demo_config
from app.services import build_services
from tests.autopay_world import enable, intents, journal, psa_lines, saved_card
from tests.factories import balance, make_client, make_invoice

POINTS = ("before_claim", "before_stripe", "after_stripe", "before_commit", "during_outbox")
RUNS = 20
CLIENTS = 3
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 07:00 in Chicago


def _child(
    config: Path, now: datetime, fault: str | None = None, after: int = 0
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASHLOOP_FAULT")}
    env["PYTHONPATH"] = str(ROOT)
    if fault:
        env["CASHLOOP_FAULT"], env["CASHLOOP_FAULT_AFTER"] = fault, str(after)
    return subprocess.run(
        [sys.executable, "-m", "tests.jobs.autopay_child", "--config", str(config), "--now", now.isoformat()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _world(folder: Path, run: int, double, mail) -> tuple[Path, dict[str, tuple[int, str]]]:
    folder.mkdir(parents=True)
    (folder / "psa-export").mkdir()
    config = folder / "config.toml"
    config.write_text(
        demo_config(
            data_dir=folder,
            port=8080,
            stripe_base=double.api_base,
            smtp_port=mail.port,
            secret_key="fault-test-secret-key-0123456789",
        )
    )
    s = build_services(load_config(config), clock=FrozenClock(NOW))
    invoices = {}
    for k in range(CLIENTS):
        remote, email = f"f{run}c{k}", f"ap-{run}-{k}@fault.example"
        client_id = make_client(s, remote, f"Fault Client {run}-{k}", billing_email=email)
        enable(s, client_id, saved_card(s, double, client_id))
        number = f"INV-F{run:02d}{k}"
        inv = make_invoice(
            s, number, client_remote_id=remote, total_minor=10_000 + 101 * k, due_on=date(2026, 3, 9)
        )
        invoices[number] = (inv, email)
    return config, invoices


def test_a_killed_autopay_run_charges_records_and_receipts_each_invoice_once(tmp_path, stripe_double, mail):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    plan = [POINTS[i % len(POINTS)] for i in range(RUNS)]
    rng.shuffle(plan)
    killed = Counter()
    for run, point in enumerate(plan):
        context = f"seed {seed}, run {run}, point {point}"
        config, invoices = _world(tmp_path / f"run{run}", run, stripe_double, mail)
        after = rng.randrange(CLIENTS)
        crashed = _child(config, NOW, point, after)
        assert crashed.returncode == -signal.SIGKILL, (
            f"{context}: not killed ({crashed.returncode}): {crashed.stdout}{crashed.stderr}"
        )
        killed[point] += 1
        restarted = _child(config, NOW + timedelta(minutes=11))
        assert restarted.returncode == 0, f"{context}: {restarted.stdout}{restarted.stderr}"

        s = build_services(load_config(config), clock=FrozenClock(NOW))
        lines = psa_lines(s)
        for number, (inv, email) in invoices.items():
            at_stripe = intents(stripe_double, invoices=number)
            seen = [(pi["id"], pi["status"]) for pi in at_stripe]
            assert [st for _, st in seen] == ["succeeded"], f"{context}: {number} at Stripe: {seen}"
            paid = s.store.all(
                "SELECT p.status, p.processor_ref FROM payments p JOIN allocations a "
                "ON a.payment_id = p.id WHERE a.invoice_id = ?",
                (inv,),
            )
            assert [(p["status"], p["processor_ref"]) for p in paid] == [("succeeded", at_stripe[0]["id"])], (
                context
            )
            assert balance(s, inv) == 0, context
            receipts = [m for m in mail.messages if m["To"] == email and m["Subject"].startswith("Receipt")]
            assert len(receipts) == 1, f"{context}: {len(receipts)} receipts to {email}"
            assert len([r for r in journal(s) if r["invoice_number"] == number]) == 1, context
            assert len([ln for ln in lines if ln["invoice_remote_id"] == f"inv-{number}"]) == 1, context
        assert s.store.scalar("SELECT COUNT(*) FROM autopay_attempts") == CLIENTS, context
        assert s.store.scalar("SELECT COUNT(*) FROM outbox WHERE status != 'done'") == 0, context
    assert set(killed) == set(POINTS) and min(killed.values()) >= 3
