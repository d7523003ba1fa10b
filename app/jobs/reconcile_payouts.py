"""reconcile_payouts: book every recent Stripe payout, whether or not its webhook arrived.

Stripe retries webhooks but gives up after days, and a box that was down misses them: a payout
that was never booked would leave the bank line unexplained forever. This job lists the payouts
created in the last `stripe.payout_lookback_days` and brings each one we have not settled to
Stripe's state (app.core.payouts.sync_payout), so it is booked exactly once either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from app.core import payouts, stop_flag
from app.services import Services

log = logging.getLogger(__name__)
SETTLED = ("paid", "failed")


@dataclass
class ReconcileReport:
    seen: int = 0
    booked: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None


def run(services: Services) -> ReconcileReport:
    """Settle each recent paid or failed payout not settled here yet, in every entity's Stripe
    account. Safe to run any time."""
    report = ReconcileReport()
    directory = services.entities
    for view in [directory.view(key) for key in directory.ids()] if directory.multi else [services]:
        _reconcile(view, report)
    if report.booked or report.failed:
        log.info("payouts: %d booked, %d failed (of %d settled at Stripe)", report.booked, report.failed,
                 report.seen)
    return report


def _reconcile(services: Services, report: ReconcileReport) -> None:
    since = services.clock.utc_now() - timedelta(days=services.config.stripe.payout_lookback_days)
    found = services.gateway.list_payouts(created_since=int(since.timestamp()))
    for payout in found:
        if payout.status not in SETTLED:
            continue
        if stop_flag.requested():
            break
        report.seen += 1
        row = services.store.one(
            "SELECT status, deposit_key FROM payouts WHERE processor_ref = ?", (payout.payout_id,)
        )
        settled = row is not None and (row["status"] == "failed" or bool(row["deposit_key"]))
        if settled and not (payout.status == "failed" and row["status"] != "failed"):
            continue
        try:
            result = payouts.sync_payout(services, payout.payout_id)
        except Exception as exc:  # one payout Stripe cannot list now must not hold up the others
            log.warning("payout %s: not reconciled this time: %s", payout.payout_id, exc)
            report.errors.append(f"{payout.payout_id}: {exc}")
            continue
        if result == "booked":
            report.booked += 1
        elif result == "failed":
            report.failed += 1
