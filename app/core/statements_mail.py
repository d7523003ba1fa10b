"""Statements by email: the client's monthly opt-in, the statement email, and its PDF attachment.

The outbox payload names the attachment (`{"kind": "statement", "client_id": .., "month": ..}`)
instead of carrying its bytes: the PDF is rendered when the email is delivered (see
app/jobs/deliver_email.py), so the outbox stays small and a retry renders the same document.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.entities import email_tag
from app.core.outbox import PermanentError, enqueue

if TYPE_CHECKING:
    from app.services import Services

TEMPLATE = "statement"


def month_key(month: date) -> str:
    return month.strftime("%Y-%m")


def month_label(month: date) -> str:
    return month.strftime("%B %Y")


def is_subscribed(db: Database, client_id: int) -> bool:
    row = db.execute(
        "SELECT is_enabled FROM statement_subscriptions WHERE client_id = ?", (client_id,)
    ).fetchone()
    return bool(row and row[0])


def set_subscription(db: Database, clock: Clock, client_id: int, *, enabled: bool, actor: str) -> bool:
    """Opt the client in or out of the monthly statement email; audited. False if unchanged."""
    if is_subscribed(db, client_id) == enabled:
        return False
    db.execute(
        "INSERT INTO statement_subscriptions (client_id, is_enabled, updated_at, updated_by) "
        "VALUES (?, ?, ?, ?) "
        "ON CONFLICT (client_id) DO UPDATE SET is_enabled = excluded.is_enabled, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        (client_id, int(enabled), to_db(clock.utc_now()), actor),
    )
    audit(
        db,
        clock,
        actor=actor,
        action="client.statement_email_on" if enabled else "client.statement_email_off",
        target=f"client:{client_id}",
        detail={"enabled": enabled},
    )
    return True


def subscribed_clients(db: Database, *, since: str) -> list[int]:
    """Clients opted in at the instant `since` (UTC text) and still now."""
    return [
        r[0]
        for r in db.execute(
            "SELECT client_id FROM statement_subscriptions WHERE is_enabled = 1 AND updated_at <= ? "
            "ORDER BY client_id",
            (since,),
        )
    ]


def attachment_name(month: date) -> str:
    return f"statement-{month_key(month)}.pdf"


def enqueue_statement(
    db: Database,
    clock: Clock,
    *,
    client_id: int,
    client_name: str,
    month: date,
    to: str,
    first_name: str,
    key: str,
    link: str,
    is_monthly: bool,
) -> bool:
    """Queue the statement email for `month` to one address once per `key`; True if queued now."""
    return enqueue(
        db,
        clock,
        kind="email",
        key=key,
        payload={
            **email_tag(db, client_id),  # sent in the client's entity's name
            "template": TEMPLATE,
            "to": [to],
            "kind": "statement",
            "context": {
                "contact_first_name": first_name,
                "client_name": client_name,
                "month_label": month_label(month),
                "attachment_name": attachment_name(month),
                "link": link,
                "is_monthly": is_monthly,
            },
            "attachments": [{"kind": "statement", "client_id": client_id, "month": month_key(month)}],
        },
    )


def render_attachments(services: Services, specs: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """The (filename, content type, bytes) of each attachment a payload names."""
    out = []
    for spec in specs:
        if spec.get("kind") != "statement":
            raise PermanentError(f"unknown attachment kind {spec.get('kind')!r}")
        month = date.fromisoformat(f"{spec['month']}-01")
        data = statement_pdf(services, spec["client_id"], month)
        out.append((attachment_name(month), "application/pdf", data))
    return out


def statement_pdf(services: Services, client_id: int, month: date) -> bytes:
    """The statement PDF exactly as the portal serves it, rendered outside any request."""
    from app.web import create_app
    from app.web.documents import statement_pdf_bytes

    # The portal's templates and context processors expect a request (signed in or not); an
    # anonymous one at the portal's address stands in for it.
    app = create_app(services)
    with app.test_request_context("/", base_url=services.config.cashloop.base_url):
        return statement_pdf_bytes(client_id, month)

