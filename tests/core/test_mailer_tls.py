"""Sending to a real SMTP server over STARTTLS and implicit TLS, with a login, certificates verified."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.config import EmailSettings, Secret
from app.core.mailer import MailError, compose, send
from tests.conftest import free_port


def _certs(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cashloop test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


class _Keep:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"


def _auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"relay",
        b"s3cret",
    )
    return AuthResult(success=ok)


@pytest.fixture
def certs(tmp_path):
    return _certs(tmp_path)


def _settings(port: int, security: str, ca: Path, **over) -> EmailSettings:
    base = EmailSettings(
        host="127.0.0.1",
        port=port,
        security=security,
        username="relay",
        password=Secret("s3cret"),
        from_address="billing@msp.example",
        ca_file=str(ca),
    )
    return replace(base, **over)


def _message():
    return compose(
        to=["ap@client.example"],
        subject="Receipt: €12.00 paid",
        text="Thank you, Zoë.",
        html="<p>Thank you, Zoë.</p>",
        from_address="billing@msp.example",
        from_name="MSP",
    )


def test_starttls_with_login_delivers_and_verifies_the_certificate(certs):
    ca, cert, key = certs
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    keep = _Keep()
    port = free_port()
    controller = Controller(
        keep,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=_auth,
        auth_required=True,
    )
    controller.start()
    try:
        send(_message(), _settings(port, "starttls", ca))
        assert len(keep.messages) == 1 and b"Zo" in keep.messages[0]
        # Without the private CA the certificate is not trusted: refused, never sent in clear.
        with pytest.raises(MailError, match=r"certificate|TLS|SSL") as untrusted:
            send(_message(), _settings(port, "starttls", ca, ca_file=""))
        assert not untrusted.value.retryable
        assert len(keep.messages) == 1
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the socket itself is TLS
def test_implicit_tls_with_login_delivers(certs):
    ca, cert, key = certs
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    keep = _Keep()
    port = free_port()

    class Implicit(Controller):
        def factory(self):
            return SMTPServer(
                self.handler,
                authenticator=_auth,
                auth_required=True,
                auth_require_tls=False,
                hostname="127.0.0.1",
            )

    controller = Implicit(keep, hostname="127.0.0.1", port=port, ssl_context=tls)
    controller.start()
    try:
        send(_message(), _settings(port, "ssl", ca))
        assert len(keep.messages) == 1
    finally:
        controller.stop()
