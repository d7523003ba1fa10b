"""poll_psa: bring companies, contacts and invoices in from the PSA, page by page.

Objects go in dependency order (companies before the contacts and invoices that point at them).
Each page and its cursor are committed together; the next poll starts `overlap_minutes` before
the stored cursor, so a record updated while a page was being read is never missed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from app.core.clock import from_db, to_db
from app.core.logins import issue_invitation
from app.jobs.intake import apply_page
from app.services import Services
from sync.base import ConnectorError, RemoteContact

log = logging.getLogger(__name__)
OBJECTS = ("companies", "contacts", "invoices")
_SINGULAR = {"companies": "company", "contacts": "contact", "invoices": "invoice"}


@dataclass
class PollReport:
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    error: str | None = None

    def summary(self) -> str:
        parts = [
            f"{obj}: " + (", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "nothing new")
            for obj, c in self.counts.items()
        ]
        return "; ".join(parts) + (f"; error: {self.error}" if self.error else "")


def _start_cursor(services: Services, connector: str, obj: str, *, full: bool) -> str | None:
    if full:
        return None
    row = services.store.one(
        "SELECT cursor FROM sync_state WHERE connector = ? AND object = ?", (connector, obj)
    )
    if row is None or not row["cursor"]:
        return None
    try:
        back = from_db(row["cursor"]) - timedelta(minutes=services.config.psa.overlap_minutes)
    except ValueError:
        return str(row["cursor"])  # an opaque cursor (a file signature): no overlap to apply
    return to_db(back).replace(".000000Z", "Z")


def _forward(stored: str | None, new: str | None) -> str | None:
    """The cursor to keep: a timestamp never moves back (the overlap re-read must not pull it
    back); an opaque cursor (the files connector's signature) is the connector's to decide."""
    if not new:
        return stored
    if not stored:
        return new
    try:
        return new if from_db(new) > from_db(stored) else stored
    except ValueError:
        return new


def _invite(services: Services):
    cfg = services.config
    if not cfg.portal.invite_billing_contacts:
        return None

    def invite(db, contact: RemoteContact) -> None:
        client = db.execute(
            "SELECT c.name FROM clients c WHERE c.source = ? AND c.remote_id = ?",
            (services.psa.kind, contact.company_remote_id),
        ).fetchone()
        issue_invitation(
            db,
            services.clock,
            email=contact.email or "",
            first_name=contact.first_name,
            client_name=client["name"] if client else "",
            base_url=cfg.cashloop.base_url,
            days=cfg.portal.invitation_days,
        )

    return invite


def run(services: Services, *, full: bool = False, progress=None) -> PollReport:
    """Poll every object once. Safe to run twice; a killed run resumes from the last committed page."""
    source = services.psa
    connector = source.kind
    report = PollReport()
    entity_id = services.entity_id
    on_billing = _invite(services)
    for obj in OBJECTS:
        counts: Counter[str] = Counter()
        report.counts[obj] = counts
        stored = services.store.one(
            "SELECT cursor FROM sync_state WHERE connector = ? AND object = ?", (connector, obj)
        )
        stored_cursor = stored["cursor"] if stored else None
        try:
            for page in getattr(source, obj)(_start_cursor(services, connector, obj, full=full)):
                with services.store.write() as db:
                    counts.update(
                        apply_page(
                            db,
                            services.clock,
                            source=connector,
                            obj=_SINGULAR[obj],
                            entity_id=entity_id,
                            page=page,
                            on_new_billing_contact=on_billing,
                        )
                    )
                    # The cursor only ever moves forward: an overlap re-read must not pull it back.
                    stored_cursor = _forward(stored_cursor, page.cursor)
                    _save_state(db, services, connector, obj, stored_cursor, counts, error=None)
                if progress:
                    progress(obj, sum(counts.values()))
        except ConnectorError as exc:
            report.error = f"{obj}: {exc}"
            log.error("PSA poll %s/%s failed: %s", connector, obj, exc)
            with services.store.write() as db:
                _save_state(db, services, connector, obj, stored_cursor, counts, error=str(exc))
            break
        with services.store.write() as db:
            _save_state(db, services, connector, obj, stored_cursor, counts, error=None, success=True)
    log.info("PSA poll %s: %s", connector, report.summary())
    return report


def _save_state(
    db,
    services: Services,
    connector: str,
    obj: str,
    cursor: str | None,
    counts: Counter[str],
    *,
    error: str | None,
    success: bool = False,
) -> None:
    now = to_db(services.clock.utc_now())
    db.execute(
        "INSERT INTO sync_state "
        "(connector, object, cursor, last_run_at, last_success_at, last_error, counts_json) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (connector, object) DO UPDATE SET cursor = excluded.cursor, "
        "last_run_at = excluded.last_run_at, last_error = excluded.last_error, "
        "counts_json = excluded.counts_json, "
        "last_success_at = COALESCE(excluded.last_success_at, sync_state.last_success_at)",
        (connector, obj, cursor, now, now if success else None, error, json.dumps(dict(counts))),
    )
