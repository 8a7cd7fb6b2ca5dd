"""TLS to webhook endpoints on real https servers (aiohttp on 127.0.0.1) with certificates from
a CA made for each test by ``trustme``: verification, per-hook and global CA bundles, client
certificates (mutual TLS), and the TLS 1.2 floor."""

from __future__ import annotations

import ipaddress
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from hookrelay.config import DeliverySettings, Hook, HookTls, HttpSettings
from hookrelay.delivery.sender import HttpSender
from hookrelay.events.model import AttemptResult
from hookrelay.net.tls import client_ssl_context

pytestmark = pytest.mark.integration

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


class TlsReceiver:
    """An https server answering 204 to every POST; ``peers`` lists the subject of each
    client certificate it saw (``None`` for a request without one)."""

    def __init__(self) -> None:
        self.peers: list[object] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        self.peers.append(ssl_object.getpeercert() if ssl_object else None)
        return web.Response(status=204)


@asynccontextmanager
async def https_server(context: ssl.SSLContext) -> AsyncIterator[TlsReceiver]:
    receiver = TlsReceiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    receiver.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield receiver
    finally:
        await runner.cleanup()


def server_context(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def hook(port: int, tls: HookTls | None = None) -> Hook:
    return Hook(id="tls", events=("*",), url=f"https://127.0.0.1:{port}/in", tls=tls)


async def post(hook: Hook, http: HttpSettings | None = None) -> AttemptResult:
    sender = HttpSender(http or HttpSettings(allow_networks=LOOPBACK), DeliverySettings())
    await sender.start()
    try:
        return await sender.attempt(hook, "delivery-1", b"{}")
    finally:
        await sender.close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_an_endpoint_signed_by_an_unknown_ca_is_not_trusted(ca: trustme.CA) -> None:
    async with https_server(server_context(ca)) as receiver:
        result = await post(hook(receiver.port))
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith("tls error: ClientConnectorCertificateError")
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert result.retryable  # a certificate can be renewed; the retries give it time
    assert receiver.peers == []


async def test_the_hooks_ca_file_makes_its_endpoint_trusted(ca: trustme.CA, ca_file: str) -> None:
    async with https_server(server_context(ca)) as receiver:
        result = await post(hook(receiver.port, HookTls(ca_file=ca_file)))
    assert (result.status, result.error) == (204, None)
    assert receiver.peers == [None]


async def test_the_global_ca_file_serves_every_hook(ca: trustme.CA, ca_file: str) -> None:
    http = HttpSettings(allow_networks=LOOPBACK, ca_file=ca_file)
    async with https_server(server_context(ca)) as receiver:
        result = await post(hook(receiver.port), http)
    assert (result.status, result.error) == (204, None)


async def test_a_hooks_ca_file_replaces_the_global_one(
    ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    """Both ways round, so that a swapped precedence fails: the global CA trusts the
    endpoint and the hook's does not, then the reverse."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    trusting = HttpSettings(allow_networks=LOOPBACK, ca_file=ca_file)
    distrusting = HttpSettings(allow_networks=LOOPBACK, ca_file=str(other))
    async with https_server(server_context(ca)) as receiver:
        refused = await post(hook(receiver.port, HookTls(ca_file=str(other))), trusting)
        trusted = await post(hook(receiver.port, HookTls(ca_file=ca_file)), distrusting)
    assert refused.error is not None and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert (trusted.status, trusted.error) == (204, None)


async def test_an_endpoint_requiring_a_client_certificate_gets_the_hooks(
    ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("hookrelay@example.com")
    both = tmp_path / "client.pem"  # key and chain in one file: key_file omitted
    client.private_key_and_cert_chain_pem.write_to_path(str(both))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    for blob in client.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    client.private_key_pem.write_to_path(str(key))
    async with https_server(server_context(ca, client_ca)) as receiver:
        without = await post(hook(receiver.port, HookTls(ca_file=ca_file)))
        with_both = await post(hook(receiver.port, HookTls(ca_file=ca_file, cert_file=str(both))))
        tls = HookTls(ca_file=ca_file, cert_file=str(cert), key_file=str(key))
        with_pair = await post(hook(receiver.port, tls))
    assert without.status is None and without.error is not None
    assert (with_both.status, with_pair.status) == (204, 204)
    names = [peer["subjectAltName"] for peer in receiver.peers]  # type: ignore[index]
    assert names == [(("email", "hookrelay@example.com"),)] * 2


def tls_1_1_only(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` limited to TLS 1.1, which OpenSSL 3 only speaks at security level 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 is, rightly
        try:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ssl.SSLError, ValueError) as e:  # an OpenSSL built without TLS 1.1 at all
            pytest.fail(f"this OpenSSL cannot speak TLS 1.1 for the test: {e}")
    return context


async def test_an_endpoint_speaking_only_tls_1_1_is_refused(ca: trustme.CA, ca_file: str) -> None:
    async with https_server(tls_1_1_only(server_context(ca))) as receiver:
        result = await post(hook(receiver.port, HookTls(ca_file=ca_file)))
        # the control: a client that does speak TLS 1.1 gets through, so the server works
        old_client = tls_1_1_only(ssl.create_default_context(cafile=ca_file))
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"https://127.0.0.1:{receiver.port}/", ssl=old_client) as answer,
        ):
            assert answer.status == 204
    # The server answers a TLS 1.2+ ClientHello with a protocol_version alert and a reset, so
    # aiohttp reports a reset connection rather than an SSL error.
    assert result.status is None
    assert result.error is not None
    assert result.error.startswith(("tls error: ", "connection error: "))
    assert len(receiver.peers) == 1  # the control's request only


def test_every_client_context_verifies_and_speaks_tls_1_2_at_least(ca_file: str) -> None:
    for context in (client_ssl_context(), client_ssl_context(ca_file)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
