"""An SMTP sink on loopback (aiosmtpd) that keeps every message, for the demo and the tests.

Each message is kept in memory, parsed with `email.policy.default`, and, when a `maildir` is
given, also written to that Maildir so a person can read what the demo "sent" with any mail
client (`mutt -f demo-data/mail`) or `mailbox.Maildir`. The envelope sender and recipients are
added as `X-MailFrom` / `X-RcptTo` headers (aiosmtpd's own Message-handler convention), since
Bcc recipients appear nowhere else.

    with MailSink() as sink:
        ... send to 127.0.0.1:sink.port ...
        [msg] = sink.wait_for(1)

Run standalone: `python -m app.demo.mail_sink --maildir DIR [--port N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import email.policy
import mailbox
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"
_PARSER = BytesParser(policy=email.policy.default)


@dataclass(frozen=True)
class Received:
    """One message as it arrived: the parsed message and its SMTP envelope."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: tuple[str, ...]


class _Controller(Controller):
    """aiosmtpd's Controller, able to listen on port 0 (a free port chosen by the kernel).

    NOTE: upstream's start() connects to `self.port` to check the server is up, which fails for
    port 0; we read the bound port off the listening socket first. Binding port 0 directly
    avoids the race of probing for a free port and binding it later.
    """

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # the name aiosmtpd calls
        self._sink._deliver(
            envelope.mail_from or "", tuple(envelope.rcpt_tos), envelope.original_content or b""
        )
        return "250 Message accepted for delivery"


class MailSink:
    """A started sink accepts any message from anyone to anyone on 127.0.0.1:`port`.

    Thread-safe: messages arrive on aiosmtpd's event-loop thread while tests read them.
    """

    def __init__(self, maildir: Path | None = None, port: int | None = None) -> None:
        self.maildir = Path(maildir) if maildir is not None else None
        self.host = HOST
        self._requested_port = port or 0
        self._controller: _Controller | None = None
        self._received: list[Received] = []
        self._arrived = threading.Condition()
        self._mailbox = mailbox.Maildir(self.maildir, create=True) if self.maildir is not None else None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> MailSink:
        """Listen; raises OSError when a requested port is taken. Returns self."""
        if self._controller is not None:
            raise RuntimeError("MailSink already started")
        # server_hostname skips socket.getfqdn(), which can stall for seconds on a box with bad DNS.
        controller = _Controller(
            _Handler(self), hostname=HOST, port=self._requested_port, server_hostname="cashloop-mail-sink"
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening; kept messages stay readable. Safe to call twice."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("MailSink is not started")
        return int(self._controller.port)

    # ------------------------------------------------------------------ reading
    @property
    def messages(self) -> list[EmailMessage]:
        """A copy of every message received since start (or the last clear()), oldest first."""
        with self._arrived:
            return [r.message for r in self._received]

    @property
    def received(self) -> list[Received]:
        """Like `messages`, with each message's envelope sender and recipients."""
        with self._arrived:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 10) -> list[EmailMessage]:
        """Block until at least `count` messages are kept; returns all of them.

        Raises TimeoutError (saying how many did arrive) after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"expected {count} message(s) within {timeout}s, got {len(self._received)}"
                    )
                self._arrived.wait(left)
            return [r.message for r in self._received]

    def clear(self) -> None:
        """Forget the messages held in memory. The Maildir is left alone: it is the demo's record."""
        with self._arrived:
            self._received.clear()

    # ------------------------------------------------------------------ delivery (event-loop thread)
    def _deliver(self, mail_from: str, rcpt_tos: tuple[str, ...], content: bytes) -> None:
        headers = f"X-MailFrom: {mail_from}\nX-RcptTo: {', '.join(rcpt_tos)}\n".encode()
        # SMTP lines end in \r\n; Python's email package and Maildir files both want bare \n.
        raw = headers + content.replace(b"\r\n", b"\n")
        message = _PARSER.parsebytes(raw)
        assert isinstance(message, EmailMessage)
        with self._arrived:
            if self._mailbox is not None:
                self._mailbox.add(raw)
            self._received.append(Received(message, mail_from, rcpt_tos))
            self._arrived.notify_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SMTP sink on 127.0.0.1 writing to a Maildir")
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    args = parser.parse_args(argv)
    with MailSink(maildir=args.maildir, port=args.port) as sink:
        print(f"SMTP sink on {sink.host}:{sink.port}, writing to {args.maildir}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
