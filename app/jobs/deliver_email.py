"""The outbox handler for email: render the template, send over SMTP, log the outcome."""

from __future__ import annotations

from typing import Any

from app.core import emails, mailer
from app.core.audit import raise_exception
from app.core.clock import to_db
from app.core.outbox import PermanentError, RetryableError
from app.services import Services


def _log(services: Services, *, kind: str, to: list[str], subject: str, status: str) -> None:
    with services.store.write() as db:
        db.execute(
            "INSERT INTO email_log (at, kind, to_addr, subject, status) VALUES (?, ?, ?, ?, ?)",
            (to_db(services.clock.utc_now()), kind, ", ".join(to), subject, status),
        )


def send_email(services: Services, payload: dict[str, Any], key: str) -> None:
    """Render and send one message; the Message-ID is derived from `key`, so a resend is foldable."""
    cfg = services.config
    try:
        rendered = emails.render(
            payload["template"],
            payload["context"],
            branding=cfg.branding,
            base_url=cfg.cashloop.base_url,
            override_dir=cfg.email.templates_dir or None,
        )
    except Exception as exc:  # a broken override template must not retry forever
        raise PermanentError(f"template {payload['template']!r} failed to render: {exc}") from exc
    to = list(payload["to"])
    attachments = []
    if payload.get("attachments"):
        from app.core.statements_mail import render_attachments

        attachments = render_attachments(services, payload["attachments"])
    try:
        message = mailer.compose(
            to=to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            from_address=cfg.email.from_address,
            from_name=cfg.email.from_name or cfg.branding.name,
            reply_to=cfg.email.reply_to or cfg.branding.support_email or None,
            message_id_key=key,
            attachments=attachments,
            sent_at=services.clock.utc_now(),
        )
    except ValueError as exc:  # a recipient that is not one address: no retry will fix it
        raise PermanentError(f"cannot address the message: {exc}") from exc
    kind = payload.get("kind") or payload["template"]
    try:
        mailer.send(message, cfg.email)
    except mailer.MailError as exc:
        if exc.refused:
            with services.store.write() as db:
                for addr, code in exc.refused.items():
                    if not 500 <= code < 600:
                        continue  # "try later" is not a verdict on the address
                    # Marked on the contact: reminders skip it until the PSA brings another address.
                    db.execute(
                        "UPDATE contacts SET email_refused_at = ?, email_refused_reason = ? WHERE email = ?",
                        (to_db(services.clock.utc_now()), str(exc)[:300], addr),
                    )
                    # Also for addresses that are no contact (a client's extra recipients).
                    db.execute(
                        "INSERT INTO email_refusals (address, refused_at, reason) VALUES (?, ?, ?) "
                        "ON CONFLICT (address) DO UPDATE SET refused_at = excluded.refused_at, "
                        "reason = excluded.reason",
                        (addr, to_db(services.clock.utc_now()), str(exc)[:300]),
                    )
                    raise_exception(
                        db,
                        services.clock,
                        kind="email_refused",
                        ref=f"{addr}:{key}",
                        summary=f"the mail server refused {addr} for a {kind} email: {exc}",
                    )
        _log(
            services,
            kind=kind,
            to=to,
            subject=rendered.subject,
            status="retrying" if exc.retryable else "failed",
        )
        if exc.retryable:
            raise RetryableError(str(exc)) from exc
        raise PermanentError(str(exc)) from exc
    _log(services, kind=kind, to=to, subject=rendered.subject, status="sent")
