"""The SMTP sink: real messages over real SMTP (smtplib) to aiosmtpd on loopback."""

from __future__ import annotations

import mailbox
import smtplib
import socket
import threading
from email.message import EmailMessage

import pytest

from app.demo.mail_sink import MailSink


def make_message(
    subject: str, *, to: str = "zoe.ortiz@zoeortiz.example", body: str = "Hello"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Northwind IT Billing <billing@northwind-it.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def send(sink: MailSink, msg: EmailMessage, **kwargs) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
        smtp.send_message(msg, **kwargs)


def test_a_message_arrives_parsed_with_its_envelope_and_attachment():
    msg = make_message("Invoice INV-1042 for $1,250.00 — Café Lumière", body="Bonjour Renée,\nPay now.\n")
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="INV-1042.pdf")
    with MailSink() as sink:
        send(sink, msg, to_addrs=["zoe.ortiz@zoeortiz.example", "audit@northwind-it.example"])
        [got] = sink.wait_for(1)
        [received] = sink.received
    assert isinstance(got, EmailMessage)
    assert got["Subject"] == "Invoice INV-1042 for $1,250.00 — Café Lumière"
    assert got.get_body(("plain",)).get_content() == "Bonjour Renée,\nPay now.\n"
    [attachment] = list(got.iter_attachments())
    assert attachment.get_filename() == "INV-1042.pdf" and attachment.get_content() == pdf
    assert received.mail_from == "billing@northwind-it.example"
    assert received.rcpt_tos == ("zoe.ortiz@zoeortiz.example", "audit@northwind-it.example")
    assert got["X-RcptTo"] == "zoe.ortiz@zoeortiz.example, audit@northwind-it.example"


def test_the_maildir_keeps_a_copy_a_person_can_read(tmp_path):
    folder = tmp_path / "mail"
    with MailSink(maildir=folder) as sink:
        send(sink, make_message("First reminder", body="Line one\nLine two\n"))
        send(sink, make_message("Receipt for payment", to="ap@cafelumiere.example"))
        sink.wait_for(2)
    box = mailbox.Maildir(folder, create=False)
    stored = sorted(box, key=lambda m: m["Subject"])
    assert [m["Subject"] for m in stored] == ["First reminder", "Receipt for payment"]
    assert stored[0].get_payload(decode=True) == b"Line one\nLine two\n"
    assert stored[1]["X-MailFrom"] == "billing@northwind-it.example"
    assert len(list((folder / "new").iterdir())) == 2


def test_free_ports_are_picked_so_two_sinks_run_side_by_side():
    with MailSink() as a, MailSink() as b:
        assert a.port != b.port and a.port > 0 and a.host == "127.0.0.1"
        send(a, make_message("to a"))
        send(b, make_message("to b"))
        assert [m["Subject"] for m in a.wait_for(1)] == ["to a"]
        assert [m["Subject"] for m in b.wait_for(1)] == ["to b"]


def test_a_requested_port_is_used():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with MailSink(port=port) as sink:
        assert sink.port == port
        send(sink, make_message("fixed port"))
        assert sink.wait_for(1)[0]["Subject"] == "fixed port"


def test_wait_for_times_out_saying_how_many_arrived():
    with MailSink() as sink:
        send(sink, make_message("only one"))
        with pytest.raises(TimeoutError, match=r"expected 2 message.*got 1"):
            sink.wait_for(2, timeout=0.3)


def test_clear_forgets_messages_in_memory_but_not_in_the_maildir(tmp_path):
    with MailSink(maildir=tmp_path / "mail") as sink:
        send(sink, make_message("before"))
        sink.wait_for(1)
        sink.clear()
        assert sink.messages == []
        send(sink, make_message("after"))
        assert [m["Subject"] for m in sink.wait_for(1)] == ["after"]
    assert len(mailbox.Maildir(tmp_path / "mail")) == 2


def test_concurrent_senders_are_all_kept():
    with MailSink() as sink:

        def worker(n: int) -> None:
            for i in range(5):
                send(sink, make_message(f"worker {n} message {i}"))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = sink.wait_for(40)
    assert sorted(m["Subject"] for m in got) == sorted(
        f"worker {n} message {i}" for n in range(8) for i in range(5)
    )


def test_stop_releases_the_port_and_keeps_what_arrived():
    sink = MailSink().start()
    port = sink.port
    send(sink, make_message("kept"))
    sink.wait_for(1)
    sink.stop()
    sink.stop()  # twice is fine
    assert [m["Subject"] for m in sink.messages] == ["kept"]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises(RuntimeError, match="not started"):
        _ = sink.port
