"""poll_psa: bring companies, contacts and invoices in from the PSA, page by page.

Objects go in dependency order (companies before the contacts and invoices that point at them).
Each page and its cursor are committed together; a sweep's cursor between pages is its position
(sync/sweep.py), so a killed poll or backfill resumes after the last committed page. A finished
sweep leaves the change cursor, and the next poll starts `overlap_minutes` before it, so a record
updated while a page was being read is never missed.

After the invoices, invoices the PSA no longer has are closed (`mark_deleted`): after every full
sweep, and otherwise every `deletion_check_hours`. A 401/403 stops the connector (sync_status).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app.core import stop_flag, sync_status
from app.core.clock import from_db, to_db
from app.core.logins import issue_invitation
from app.jobs import waiting
from app.jobs.intake import apply_page, mark_deleted
from app.services import Services
from sync import sweep
from sync.base import ConnectorError, Page, RemoteContact

log = logging.getLogger(__name__)
OBJECTS = ("companies", "contacts", "invoices")
DELETION_CHECK = "invoice_ids"
_SINGULAR = {"companies": "company", "contacts": "contact", "invoices": "invoice"}
# Outcomes that changed nothing: left out of the one-line summary ("nothing new").
_QUIET = frozenset({"unchanged"})
# The deletion check refuses to close more than this share of a source's open invoices at once:
# an empty or truncated listing (a permission change at the PSA) must not empty the portal.
MAX_DELETED_SHARE = 0.5
CACHE_KIB = 64 * 1024
# How long one write transaction may hold consecutive pages (see PageBatch): a portal write waits
# about this long (and one page) behind a backfill at most.
BATCH_SECONDS = 1.0


@dataclass
class PollReport:
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    error: str | None = None
    stopped: bool = False

    def summary(self) -> str:
        parts = [
            f"{obj}: "
            + (", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in _QUIET and v) or "nothing new")
            for obj, c in self.counts.items()
        ]
        return "; ".join(parts) + (f"; error: {self.error}" if self.error else "")


def _stored_cursor(services: Services, connector: str, obj: str) -> str | None:
    row = services.store.one(
        "SELECT cursor FROM sync_state WHERE connector = ? AND object = ?", (connector, obj)
    )
    return str(row["cursor"]) if row and row["cursor"] else None


def _start_cursor(services: Services, stored: str | None, *, full: bool) -> str | None:
    """Where this poll's sweep starts: a sweep in progress resumes (a full one even under --full);
    otherwise --full reads everything and a change cursor is moved back by the overlap."""
    in_progress = sweep.decode(stored)
    if in_progress is not None:
        return stored if (in_progress.is_full or not full) else None
    if full or not stored:
        return None
    try:
        back = from_db(stored) - timedelta(minutes=services.config.psa.overlap_minutes)
    except ValueError:
        return stored  # an opaque cursor (a file signature): no overlap to apply
    return sweep.format_time(back)


def _forward(stored: str | None, new: str | None) -> str | None:
    """The cursor to keep: a change time never moves back (the overlap re-read must not pull it
    back); a sweep position or an opaque cursor (the files connector's signature) is the connector's."""
    if not new:
        return stored
    if not stored or sweep.decode(stored) is not None or sweep.decode(new) is not None:
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


def run(
    services: Services, *, full: bool = False, progress: Any = None, retry_stopped: bool = False
) -> PollReport:
    """Poll every object once. Safe to run twice; a killed run resumes from the last committed page.

    `progress(obj, n)` is called after each page with the records handled so far; a callback with an
    `expect(obj, total)` method is also told how many to expect when the PSA can count them. A
    connector stopped by an authentication failure is skipped unless `retry_stopped` (the CLI).
    """
    source = services.psa
    connector = source.kind
    report = PollReport()
    fingerprint = sync_status.settings_fingerprint(getattr(services.config.psa, connector, None))
    reason = sync_status.stopped_by(services.store, connector, fingerprint)
    if reason and not retry_stopped:
        report.error, report.stopped = f"stopped: {reason}", True
        log.warning("PSA poll %s skipped: %s", connector, reason)
        return report
    entity_id = services.entity_id
    on_billing = _invite(services)
    # A backfill writes into half a dozen indexes of a growing table: a 64 MB page cache for this
    # connection keeps their pages in memory (SQLite's default is 2 MB).
    services.store.db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    read_all = deletions_due = False
    swept: set[str] = set()  # invoices an incremental sweep read (a refresh need not read them again)
    seen_again: set[str] = set()  # contacts read by the sweep that looked for those waiting
    for obj in OBJECTS:
        counts: Counter[str] = Counter()
        report.counts[obj] = counts
        stored_cursor = _stored_cursor(services, connector, obj)
        # Contacts that waited for a company now here: a sweep of all contacts reads them (fixing
        # the company did not change them, so an incremental one would not).
        again = waiting.for_company(services, connector, "contact", set()) if obj == "contacts" else []
        start = _start_cursor(services, stored_cursor, full=full or bool(again))
        if obj == "invoices":
            # A sweep of everything has just read each open invoice; one asked for (--full), or the
            # rest of one, is also when the invoices the PSA deleted are looked for.
            read_all = start is None or sweep.begin(start).is_full
            deletions_due = full or bool(start and sweep.begin(start).is_full)
        batch = PageBatch(services.store, BATCH_SECONDS, cursor=stored_cursor, counts=counts)
        pages = ReadAhead(getattr(source, obj)(start))
        try:
            _expect(progress, source, obj, start)
            for page in pages:
                db = batch.db()
                try:
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
                    new_cursor = _forward(batch.cursor, page.cursor)
                    if _writes(page, counts) or new_cursor != batch.cursor:
                        batch.cursor = new_cursor
                        _save_state(db, services, connector, obj, new_cursor, counts, error=None)
                except BaseException as exc:
                    batch.rollback(exc)
                    raise
                stopping = stop_flag.requested()
                batch.applied(next_ready=pages.ready() and not stopping)
                if obj == "invoices" and not read_all:
                    swept.update(getattr(item, "remote_id", "") for item in page.items)
                elif obj == "contacts" and again:
                    seen_again.update(getattr(item, "remote_id", "") for item in page.items)
                if progress:
                    progress(obj, sum(counts.values()))
                if stopping:  # SIGTERM: this page and its cursor are committed; stop here
                    report.error = f"{obj}: stopped on request; the next poll goes on after the last page"
                    log.info("PSA poll %s stopped on request after a committed page of %s", connector, obj)
                    return report
            batch.commit()
        except ConnectorError as exc:
            batch.commit()  # the pages applied before the error are whole, each with its cursor
            _failed(services, report, connector, obj, batch.cursor, counts, exc, fingerprint)
            break
        except sqlite3.Error:
            raise  # the store failed (a full disk), not the PSA: the job fails loudly, as it should
        except Exception as exc:
            batch.commit()  # the committed pages and the cursor stay as they are
            if isinstance(exc, UnicodeDecodeError | ValueError | OSError):
                # A source the connector could not read (an export in a Windows code page, a cell
                # the CSV reader refuses, a file gone mid-read).
                what = f"cannot read the {obj} from the source: {type(exc).__name__}: {exc}"
            else:
                # A defect met on an answer nobody foresaw.
                what = (
                    f"the {obj} sweep stopped on an unexpected error ({type(exc).__name__}: {exc}); "
                    "the log has the details"
                )
            # One clear error for the admin on the Sync page, the traceback in the log; no crash.
            log.exception("PSA poll %s/%s: %s", connector, obj, what)
            reason = ConnectorError(what, retryable=True)
            _failed(services, report, connector, obj, batch.cursor, counts, reason, fingerprint)
            break
        finally:
            batch.commit()  # whatever else stops the sweep: the whole pages before it are kept
            pages.close()
        stored_cursor = batch.cursor
        # A sweep that yielded nothing at all leaves no final cursor: it ends where it began.
        unfinished = sweep.decode(stored_cursor)
        if unfinished is not None:
            stored_cursor = unfinished.since
        with services.store.write() as db:
            _save_state(db, services, connector, obj, stored_cursor, counts, error=None, success=True)
        if again:
            gone = [rid for rid in again if rid not in seen_again]
            waiting.not_listed_any_more(services, connector, "contact", gone, once=waiting.COMPANY_ARRIVED)
    if report.error is None and not read_all and getattr(source, "refreshes_open_invoices", False):
        _refresh_open(services, report, connector, fingerprint, entity_id, skip=swept)
    if report.error is None and not read_all and hasattr(source, "refresh"):
        ids = waiting.for_company(services, connector, "invoice", swept)
        seen = _reread(services, report, connector, fingerprint, entity_id, ids)
        if report.error is None:
            gone = [rid for rid in ids if rid not in seen]
            waiting.not_listed_any_more(services, connector, "invoice", gone, once=waiting.COMPANY_ARRIVED)
    if report.error is None:
        _check_deletions(services, report, connector, fingerprint, due=deletions_due)
    if report.error is None and hasattr(source, "refresh"):
        # After the deletion check: an invoice number reissued once its first invoice was deleted.
        ids, rings = waiting.for_number(services, connector)
        seen = _reread(services, report, connector, fingerprint, entity_id, ids)
        if report.error is None:
            gone = [rid for rid in ids if rid not in seen]
            waiting.not_listed_any_more(services, connector, "invoice", gone, once=waiting.NUMBER_FREE)
            waiting.still_waiting(services, connector, {rid: r for rid, r in rings.items() if rid in seen})
    if report.error is None and reason:
        with services.store.write() as db:
            sync_status.clear_stop(db, services.clock, connector=connector)
    log.info("PSA poll %s: %s", connector, report.summary())
    return report


def _refresh_open(
    services: Services,
    report: PollReport,
    connector: str,
    fingerprint: str,
    entity_id: int,
    *,
    skip: set[str],
) -> None:
    """Re-read the invoices still unpaid at the source, for a PSA whose sweep cannot see every change
    (Autotask: "mark as paid" may carry a paid date before the cursor)."""
    ids = [
        r[0]
        for r in services.store.all(
            "SELECT remote_id FROM invoices WHERE source = ? AND status = 'open' "
            "AND total_minor - paid_elsewhere_minor > 0",
            (connector,),
        )
        if r[0] not in skip
    ]
    _reread(services, report, connector, fingerprint, entity_id, ids)


def _reread(
    services: Services, report: PollReport, connector: str, fingerprint: str, entity_id: int, ids: list[str]
) -> set[str]:
    """The invoices `ids` read again (the connector's `refresh`) and applied like any page; returns
    the ids the PSA answered for."""
    seen: set[str] = set()
    if not ids:
        return seen
    counts = report.counts.setdefault("invoices", Counter())
    try:
        for page in services.psa.refresh(ids):  # type: ignore[attr-defined]
            seen.update(getattr(item, "remote_id", "") for item in page.items)
            with services.store.write() as db:
                counts.update(
                    apply_page(
                        db, services.clock, source=connector, obj="invoice", entity_id=entity_id, page=page
                    )
                )
    except ConnectorError as exc:
        _failed(
            services,
            report,
            connector,
            "invoices",
            _stored_cursor(services, connector, "invoices"),
            counts,
            exc,
            fingerprint,
        )
    return seen


class ReadAhead:
    """`pages`, with the next one fetched by a helper thread while the current one is applied.

    The PSA's response time and our writes then overlap instead of adding up. Only the helper
    drives the connector's iterator (connectors need not be thread-safe); an error it meets is
    raised here, in order, after the pages before it. Pages stay in their order, so a cursor
    is still stored only with its own page.
    """

    def __init__(self, pages: Iterator[Page]) -> None:
        self._pages = pages
        self._box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._done = False
        threading.Thread(target=self._fetch, name="psa-read-ahead", daemon=True).start()

    def _fetch(self) -> None:
        try:
            for page in self._pages:
                while not self._stop.is_set():
                    with contextlib.suppress(queue.Full):
                        self._box.put(("page", page), timeout=0.2)
                        break
                if self._stop.is_set():
                    return
            self._box.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            self._box.put(("error", exc))

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Page:
        if self._done:
            raise StopIteration
        kind, value = self._box.get()
        if kind == "page":
            return value
        self.close()
        if kind == "error":
            raise value
        raise StopIteration

    def ready(self) -> bool:
        """Whether the next page (or the end, or an error) is here already: no wait for the PSA."""
        return self._done or not self._box.empty()

    def close(self) -> None:
        self._done = True
        self._stop.set()


class PageBatch:
    """Consecutive pages applied in one write transaction, each page whole and with its cursor.

    A transaction per page makes a backfill rewrite the same index pages (a random token, a
    client id) once per page; holding several pages saves a tenth of its CPU. The batch is
    committed once it is `seconds` old, whenever the next page is not here yet (the write lock
    is never held while waiting for the PSA) and before anything else is written or returned.
    A killed poll loses at most the batch, and resumes from the cursor committed before it;
    a failed write rolls the batch back and `cursor` and `counts` with it.
    """

    def __init__(self, store: Any, seconds: float, *, cursor: str | None, counts: Counter[str]) -> None:
        self._store = store
        self._seconds = seconds
        self._open: contextlib.ExitStack | None = None
        self._since = 0.0
        self._db: Any = None
        self.cursor = self._committed_cursor = cursor
        self._counts = counts
        self._committed_counts = Counter(counts)

    def db(self) -> Any:
        """The batch's transaction, begun by the first page."""
        if self._open is None:
            stack = contextlib.ExitStack()
            self._db = stack.enter_context(self._store.write())
            self._open, self._since = stack, time.monotonic()
        return self._db

    def applied(self, *, next_ready: bool) -> None:
        """A page is written; commit now unless the next page is here and time is left."""
        if not next_ready or time.monotonic() - self._since >= self._seconds:
            self.commit()

    def commit(self) -> None:
        if self._open is not None:
            stack, self._open = self._open, None
            stack.close()
            self._committed_cursor, self._committed_counts = self.cursor, Counter(self._counts)

    def rollback(self, exc: BaseException) -> None:
        if self._open is not None:
            stack, self._open = self._open, None
            stack.__exit__(type(exc), exc, exc.__traceback__)
        self.cursor = self._committed_cursor
        self._counts.clear()
        self._counts.update(self._committed_counts)


def _writes(page: Any, counts: Counter[str]) -> bool:
    return bool(page.items) and any(k not in _QUIET for k in counts)


def _expect(progress: Any, source: Any, obj: str, start: str | None) -> None:
    expect = getattr(progress, "expect", None)
    estimate = getattr(source, "estimate", None)
    if expect is None or estimate is None:
        return
    try:
        total = estimate(obj, start)
    except ConnectorError:
        total = None  # only the progress bar needs it
    if total is not None:
        expect(obj, total)


def _failed(
    services: Services,
    report: PollReport,
    connector: str,
    obj: str,
    cursor: str | None,
    counts: Counter[str],
    exc: ConnectorError,
    fingerprint: str,
) -> None:
    report.error = f"{obj}: {exc}"
    log.error("PSA poll %s/%s failed: %s", connector, obj, exc)
    with services.store.write() as db:
        _save_state(db, services, connector, obj, cursor, counts, error=str(exc))
        if exc.status in (401, 403):
            report.stopped = True
            sync_status.stop_connector(
                db, services.clock, connector=connector, fingerprint=fingerprint, error=str(exc)
            )


def _check_deletions(
    services: Services, report: PollReport, connector: str, fingerprint: str, *, due: bool
) -> None:
    """Close invoices the PSA no longer lists. Runs after a full sweep, else every deletion_check_hours."""
    source = services.psa
    if not getattr(source, "supports_deletion_check", False):
        return
    row = services.store.one(
        "SELECT last_success_at FROM sync_state WHERE connector = ? AND object = ?",
        (connector, DELETION_CHECK),
    )
    hours = services.config.psa.deletion_check_hours
    now = services.clock.utc_now()
    counts: Counter[str] = Counter()
    if not due:
        if row is None:  # the first poll read everything there is: the clock starts now
            with services.store.write() as db:
                _save_state(db, services, connector, DELETION_CHECK, None, counts, error=None, success=True)
            return
        if row["last_success_at"] and now - from_db(row["last_success_at"]) < timedelta(hours=hours):
            return
    report.counts["deleted"] = counts
    try:
        present = set(source.invoice_ids())
    except ConnectorError as exc:
        _failed(services, report, connector, DELETION_CHECK, None, counts, exc, fingerprint)
        return
    known = [
        r[0]
        for r in services.store.all(
            "SELECT remote_id FROM invoices WHERE source = ? AND status != 'deleted'", (connector,)
        )
    ]
    gone = [remote_id for remote_id in known if remote_id not in present]
    with services.store.write() as db:
        if gone and len(gone) > 10 and len(gone) > MAX_DELETED_SHARE * len(known):
            error = (
                f"the PSA no longer lists {len(gone)} of {len(known)} invoices; not closing them "
                f"(check the API user's permissions, then run `cashloop sync --full`)"
            )
            report.error = f"{DELETION_CHECK}: {error}"
            _save_state(db, services, connector, DELETION_CHECK, None, counts, error=error)
            return
        counts.update(mark_deleted(db, services.clock, source=connector, remote_ids=gone))
        _save_state(db, services, connector, DELETION_CHECK, None, counts, error=None, success=True)


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
        "(connector, object, cursor, last_run_at, last_success_at, last_error, last_error_at, counts_json) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (connector, object) DO UPDATE SET cursor = excluded.cursor, "
        "last_run_at = excluded.last_run_at, last_error = excluded.last_error, "
        "last_error_at = COALESCE(excluded.last_error_at, sync_state.last_error_at), "
        "counts_json = excluded.counts_json, "
        "last_success_at = COALESCE(excluded.last_success_at, sync_state.last_success_at)",
        (
            connector,
            obj,
            cursor,
            now,
            now if success else None,
            error,
            now if error else None,
            json.dumps(dict(counts), sort_keys=True),
        ),
    )
