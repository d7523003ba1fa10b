"""The outbox handler for "psa_dispute_note": tell the PSA about a client's line dispute.

A connector without the capability (sync.base.DisputeNotes) is not an error: the dispute records
that the PSA could not be told, and why, so the finance team sees it in the exceptions queue.
"""

from __future__ import annotations

from typing import Any

from app.core import line_disputes
from app.core.outbox import PermanentError, RetryableError
from app.services import Services
from sync.base import ConnectorError, DisputeNote, supports_dispute_notes


def handler(services: Services):
    def handle(payload: dict[str, Any], key: str) -> str | None:
        dispute_id = int(payload["dispute_id"])
        source = services.psa
        if payload.get("source") != source.kind or not supports_dispute_notes(source):
            reason = (
                f"the {source.kind} connector cannot add notes (its API subset has no ticket-note endpoint)"
                if payload.get("source") == source.kind
                else f"the invoice came from {payload.get('source')}, not the configured {source.kind}"
            )
            with services.store.write() as db:
                line_disputes.record_psa_note(db, dispute_id, status="unsupported", error=reason)
            return None
        note = DisputeNote(
            invoice_remote_id=payload["invoice_remote_id"],
            invoice_number=payload["invoice_number"],
            line_description=payload["line_description"],
            amount_minor=int(payload["amount_minor"]),
            currency=payload["currency"],
            reason=payload["reason"],
            raised_by=payload["raised_by"],
            ticket=payload.get("ticket"),
        )
        try:
            remote = source.add_dispute_note(note, key=key)  # type: ignore[attr-defined]
        except ConnectorError as exc:
            if exc.retryable:
                raise RetryableError(str(exc), retry_after=exc.retry_after) from exc
            raise PermanentError(str(exc)) from exc
        with services.store.write() as db:
            line_disputes.record_psa_note(db, dispute_id, status="sent", ref=str(remote))
        return str(remote)

    return handle
