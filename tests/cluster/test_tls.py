"""TLS under the handshake: members with the cluster's certificate talk, others cannot."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from actorsource._errors import ClusterAuthError, PeerUnavailableError
from actorsource.cluster._protocol import Exists, Ok
from actorsource.cluster._transport import Peers, Server

from .support import credentials
from .test_transport import Recorder


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _contexts(cert: Path, key: Path, trusted: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=trusted)
    return server, client


async def test_members_talk_over_tls_with_the_handshake_inside(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "member")
    server_context, client_context = _contexts(cert, key, cert)
    handler = Recorder()
    async with (
        Server("127.0.0.1:0", credentials("s"), handler, tls=server_context) as server,
        Peers(credentials("c"), tls=client_context) as peers,
    ):
        reply = await peers.request(server.address, Exists(0, "Wallet-a"))
        assert isinstance(reply, Ok)
        assert [r.stream_id for r in handler.served] == ["Wallet-a"]


async def test_a_member_whose_certificate_is_not_trusted_is_refused(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "member")
    other, _ = _certificate(tmp_path, "other")
    server_context, client_context = _contexts(cert, key, other)
    handler = Recorder()
    async with (
        Server("127.0.0.1:0", credentials("s"), handler, tls=server_context) as server,
        Peers(credentials("c"), tls=client_context) as peers,
    ):
        with pytest.raises(ClusterAuthError, match="TLS handshake"):
            await peers.request(server.address, Exists(0, "Wallet-a"))
    assert handler.started == 0


async def test_a_plain_tcp_member_gets_nothing_done_on_a_tls_port(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "member")
    server_context, _ = _contexts(cert, key, cert)
    handler = Recorder()
    async with (
        Server("127.0.0.1:0", credentials("s"), handler, tls=server_context) as server,
        Peers(credentials("c"), handshake_timeout=1.0) as peers,
    ):
        with pytest.raises((ClusterAuthError, PeerUnavailableError)):
            await peers.request(server.address, Exists(0, "Wallet-a"))
    assert handler.started == 0
