"""`cashloop autopay [--dry-run]` from the shell, against localstripe."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

from app.config import load_config
from app.core.clock import FrozenClock
from app.demo.runner import demo_config
from app.jobs.scheduler import job_lock
from app.services import build_services
from tests.autopay_world import enable, intents, saved_card
from tests.factories import make_client, make_invoice


def _cashloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def _setup(tmp_path, double, number: str):
    (tmp_path / "psa-export").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        demo_config(
            data_dir=tmp_path,
            port=8080,
            stripe_base=double.api_base,
            smtp_port=9,
            secret_key="cli-test-secret-key-0123456789ab",
        )
    )
    today = datetime.now(UTC).date()  # the CLI runs on the real clock
    s = build_services(load_config(path), clock=FrozenClock(datetime.now(UTC)))
    client_id = make_client(s, "cli", "Command Line Co")
    enable(s, client_id, saved_card(s, double, client_id))
    make_invoice(s, number, client_remote_id="cli", total_minor=4_321, due_on=date(today.year - 1, 1, 1))
    return s, str(path)


def test_autopay_dry_run_lists_the_charge_and_charges_nothing_then_the_run_charges_it(
    tmp_path, stripe_double
):
    s, path = _setup(tmp_path, stripe_double, "INV-CLI-1")

    dry = _cashloop("autopay", "--dry-run", "--config", path)

    assert dry.returncode == 0, dry.stderr
    assert "1 charges would be made; nothing was charged" in dry.stdout
    assert "Command Line Co: charge $43.21 (INV-CLI-1 $43.21) to Visa •••• 4242" in dry.stdout
    assert intents(stripe_double, invoices="INV-CLI-1") == []
    assert s.store.scalar("SELECT COUNT(*) FROM payments") == 0

    real = _cashloop("autopay", "--config", path)
    assert real.returncode == 0, real.stderr
    assert "1 charges started (1 succeeded" in real.stdout
    assert [pi["status"] for pi in intents(stripe_double, invoices="INV-CLI-1")] == ["succeeded"]


def test_autopay_waits_for_the_service_that_holds_the_job_lock(tmp_path, stripe_double):
    s, path = _setup(tmp_path, stripe_double, "INV-CLI-2")
    with job_lock(s):
        busy = _cashloop("autopay", "--config", path)
    assert busy.returncode == 3 and "holds" in busy.stderr
    assert intents(stripe_double, invoices="INV-CLI-2") == []
