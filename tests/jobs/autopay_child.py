"""The autopay run as its own process, for the crash tests: `python -m tests.jobs.autopay_child
--config PATH --now ISO`. It runs what the service's scheduler runs (autopay, then the outbox)
under the job lock, with the clock frozen at `--now`. CASHLOOP_FAULT (app.core.faults) kills it."""

from __future__ import annotations

import argparse
from datetime import datetime

from app.config import load_config
from app.core.clock import FrozenClock
from app.jobs import drain_outbox, run_autopay
from app.jobs.scheduler import job_lock
from app.services import build_services


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--now", required=True)
    args = parser.parse_args()
    services = build_services(load_config(args.config), clock=FrozenClock(datetime.fromisoformat(args.now)))
    with job_lock(services):
        report = run_autopay.run(services)
        for _ in range(3):
            drain_outbox.run(services)
    print(report.summary(), flush=True)


if __name__ == "__main__":
    main()
