"""Build outgoing messages and hand them to the configured SMTP server.

`compose` is pure (apart from the Date header); `send` is the only code that talks SMTP and
turns every failure into a `MailError` whose `retryable` flag tells the outbox what to do.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from app.core.addresses import AddressError, single_recipient
from app.core.clock import SystemClock

if TYPE_CHECKING:
    from app.config import EmailSettings

log = logging.getLogger(__name__)


class MailError(Exception):
    """Sending failed. `retryable` is True when the same message may succeed later unchanged.

    `refused` maps each recipient the server refused to its SMTP reply code (empty when the
    failure was not about recipients).
    """

    def __init__(self, message: str, retryable: bool, *, refused: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.refused = dict(refused or {})


def _domain(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an email address: {address!r}")
    return domain


def message_id_for(key: str, from_address: str) -> str:
    """The Message-ID for an idempotency key: same key and sender, same id, in any process."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"<{digest}@{_domain(from_address)}>"


def compose(
    *,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str,
    from_address: str,
    from_name: str,
    reply_to: str | None = None,
    message_id_key: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    sent_at: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative (text, then HTML) UTF-8 message, wrapped in multipart/mixed
    when there are attachments.

    `to` holds addresses, optionally with display names ("Zoë Müller <zoe@example.com>").
    Non-ASCII display names and subjects are RFC 2047-encoded when the message is serialised.
    With `message_id_key` the Message-ID is derived from it, so a resend after a crash carries
    the same id and mail clients can fold duplicates; without it the id is random.
    Each attachment is `(filename, "maintype/subtype", data)`. `sent_at` (aware) sets the Date
    header; callers holding a Clock pass its `utc_now()`, otherwise the system clock is used.
    Raises ValueError for an empty `to`, a bad sender address or a header value containing a
    line break.
    """
    if not to:
        raise ValueError("a message needs at least one recipient")
    domain = _domain(from_address)
    msg = EmailMessage()
    msg["From"] = Address(display_name=from_name, addr_spec=from_address)
    try:
        recipients = [single_recipient(item) for item in to]
    except AddressError as exc:
        raise ValueError(f"bad recipient: {exc}") from exc
    msg["To"] = ", ".join(recipients)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    when = sent_at or SystemClock().utc_now()
    if when.tzinfo is None:
        raise ValueError("sent_at must be an aware datetime")
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = (
        message_id_for(message_id_key, from_address) if message_id_key else make_msgid(domain=domain)
    )
    # RFC 3834: stops out-of-office robots from answering receipts and reminders.
    msg["Auto-Submitted"] = "auto-generated"
    # Quoted-printable keeps the body 7-bit clean and under SMTP's 998-octet line limit, so it
    # survives relays that lack 8BITMIME and long single-line HTML.
    msg.set_content(text, charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        if not subtype:
            raise ValueError(f"attachment {filename!r}: content type must be maintype/subtype")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _is_transient(code: int) -> bool:
    # 4xx is "try again later"; smtplib uses -1 when the server hung up mid-reply.
    return not 500 <= code < 600


def _reply(code: int, resp: bytes | str) -> str:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    return f"{code} {text}".strip()


def _tls(settings: EmailSettings) -> ssl.SSLContext:
    # Certificates are always verified; a relay with a private CA names it in email.ca_file.
    return ssl.create_default_context(cafile=settings.ca_file or None)


def _open(settings: EmailSettings) -> smtplib.SMTP:
    timeout = settings.timeout_seconds
    if settings.security == "ssl":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout, context=_tls(settings))
    return smtplib.SMTP(settings.host, settings.port, timeout=timeout)


def send(message: EmailMessage, settings: EmailSettings) -> None:
    """Deliver `message` to the SMTP server in `settings`, to every To/Cc/Bcc recipient.

    Uses implicit TLS (`ssl`), STARTTLS (`starttls`, refused if the server does not offer it)
    or plain SMTP (`none`), logs in when a username is set, and applies `timeout_seconds` to
    each network operation. Returns once the server has accepted the message for every
    recipient.

    Raises MailError: retryable for connection failures, timeouts and 4xx replies; not
    retryable for 5xx replies (recipient refused, sender refused, message rejected, bad login),
    TLS certificate failures and missing server features. If the server accepts some
    recipients and refuses others, the message has gone out, so the error is not retryable
    (a retry would duplicate it); `refused` names the refused ones. Not idempotent: every call
    that returns transmits one copy. The password never appears in errors or logs.
    """
    where = f"{settings.host}:{settings.port}"
    try:
        with _open(settings) as smtp:
            if settings.security == "starttls":
                smtp.starttls(context=_tls(settings))
            if settings.username:
                smtp.login(settings.username, str(settings.password))
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: code for addr, (code, _resp) in exc.recipients.items()}
        detail = "; ".join(f"{addr}: {_reply(code, resp)}" for addr, (code, resp) in exc.recipients.items())
        retryable = any(_is_transient(code) for code in codes.values())
        raise MailError(f"{where} refused every recipient: {detail}", retryable, refused=codes) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(f"{where} does not support what is configured: {exc}", False) from exc
    except smtplib.SMTPAuthenticationError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        raise MailError(
            f"{where} rejected the login for user {settings.username!r}: {reply}",
            _is_transient(exc.smtp_code),
        ) from exc
    except smtplib.SMTPSenderRefused as exc:
        raise MailError(
            f"{where} refused the sender {exc.sender}: {_reply(exc.smtp_code, exc.smtp_error)}",
            _is_transient(exc.smtp_code),
        ) from exc
    except smtplib.SMTPResponseException as exc:
        # DATA, HELO and greeting rejections: the reply code decides.
        raise MailError(
            f"{where} rejected the message: {_reply(exc.smtp_code, exc.smtp_error)}",
            _is_transient(exc.smtp_code),
        ) from exc
    except smtplib.SMTPException as exc:
        # Disconnects and other protocol breakdowns with no reply code.
        raise MailError(f"{where}: {exc}", True) from exc
    except ssl.SSLCertVerificationError as exc:
        raise MailError(f"{where}: TLS certificate not trusted: {exc.verify_message}", False) from exc
    except OSError as exc:
        # Connection refused, DNS failure, timeout, TLS handshake cut short.
        raise MailError(f"{where}: cannot talk to the SMTP server: {exc!r}", True) from exc
    if refused:
        codes = {addr: code for addr, (code, _resp) in refused.items()}
        detail = "; ".join(f"{addr}: {_reply(code, resp)}" for addr, (code, resp) in refused.items())
        raise MailError(f"{where} delivered to some recipients but refused {detail}", False, refused=codes)
    log.info("sent %s via %s", message.get("Message-ID", "(no id)"), where)
