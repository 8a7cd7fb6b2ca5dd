"""TLS contexts built from PEM files: client contexts for the two kinds of peer hookrelay
connects to, Kafka brokers (:func:`kafka_ssl_context`) and webhook endpoints
(:func:`client_ssl_context`), and the server context of the ingest listener
(:func:`server_ssl_context`).

Verification is always on (there is no switch to turn it off): certificate chain and host
name. Both are built when the configuration loads, so a file that cannot be used is refused
then, naming the setting and the file (never its content), and not on every connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TlsFilesError", "client_ssl_context", "kafka_ssl_context", "server_ssl_context"]


class TlsFilesError(ValueError):
    """A TLS file cannot be used; ``key`` names the setting (an endpoint's ``ca_file``,
    ``cert_file`` or ``key_file``; Kafka's ``ssl_ca_file``, ``ssl_cert_file`` or
    ``ssl_key_file``), the message names the file and never quotes its content."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _no_passphrase() -> bytes:
    # An encrypted key fails to load instead of OpenSSL prompting on the terminal.
    return b""


def client_ssl_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """The TLS client context for webhook endpoints: certificate and host name verification
    always on, TLS 1.2 at least.

    ``ca_file`` (PEM) replaces the system's CA certificates for this context (a private CA,
    or pinning one); ``cert_file`` (PEM chain) and ``key_file`` (PEM, unencrypted; omit it
    when ``cert_file`` holds the key) make the client certificate sent to endpoints that ask
    for one (mutual TLS). Raises :class:`TlsFilesError` naming the file that cannot be used.
    """
    if ca_file is not None:
        _readable("ca_file", ca_file, "CA file")
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        except ssl.SSLError:
            message = f"CA file {ca_file} holds no usable PEM certificate"
            raise TlsFilesError("ca_file", message) from None
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        _load_own_certificate(context, cert_file, key_file, "client", "PEM certificate")
    return context


def server_ssl_context(cert_file: str, key_file: str | None) -> ssl.SSLContext:
    """The TLS server context of a listener: the PEM certificate chain ``cert_file`` with its
    unencrypted PEM private key ``key_file`` (omit it when ``cert_file`` holds the key), TLS
    1.2 at least, no client certificate asked for. Raises :class:`TlsFilesError` naming the
    file that cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_own_certificate(context, cert_file, key_file, "server", "PEM certificate chain")
    return context


def _load_own_certificate(
    context: ssl.SSLContext, cert_file: str, key_file: str | None, role: str, expected: str
) -> None:
    """Load the certificate this side presents (``role``: client or server) into
    ``context``; ``TlsFilesError`` names the file that cannot be used."""
    prefix = "client " if role == "client" else ""
    _readable("cert_file", cert_file, f"{prefix}certificate file")
    if key_file is not None:
        _readable("key_file", key_file, f"{prefix}key file")
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except ssl.SSLError:
        message = (
            f"cannot use {cert_file}{' with ' + key_file if key_file else ''} as the {role} "
            f"certificate: expected a {expected} and its unencrypted PEM private key"
        )
        raise TlsFilesError("cert_file", message) from None


def _readable(key: str, file: str, what: str) -> None:
    try:
        with open(file, "rb"):
            pass
    except OSError as e:
        raise TlsFilesError(key, f"cannot read {what} {file}: {e.strerror}") from None


def kafka_ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A client ``SSLContext`` that verifies the broker (``CERT_REQUIRED``, ``check_hostname``)
    against the PEM CA bundle ``ca_file`` (system CAs when ``None``), presenting the PEM
    certificate chain ``cert_file`` with its private key ``key_file`` (mutual TLS) when given.

    Raises :class:`TlsFilesError` when a file is missing, unreadable or holds no usable PEM
    data.
    """
    from aiokafka.helpers import create_ssl_context  # noqa: PLC0415  (aiokafka is slow to import)

    try:
        context: ssl.SSLContext = create_ssl_context(cafile=ca_file)
    except ssl.SSLError as e:
        raise TlsFilesError(
            "ssl_ca_file", f"CA file {ca_file} holds no PEM certificate ({e.reason})"
        ) from None
    except OSError as e:
        raise TlsFilesError("ssl_ca_file", f"cannot read CA file {ca_file}: {e.strerror}") from None
    if cert_file is not None:
        _load_client_certificate(context, cert_file, key_file)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    # OpenSSL's "no such file" does not say which of the two files it was: look first.
    for key, file in (("ssl_cert_file", cert_file), ("ssl_key_file", key_file)):
        if file is not None:
            try:
                Path(file).open("rb").close()
            except OSError as e:
                raise TlsFilesError(key, f"cannot read {file}: {e.strerror}") from None
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except ssl.SSLError as e:
        raise TlsFilesError(
            "ssl_cert_file",
            f"certificate {cert_file} and key {key_file or cert_file} do not load as a PEM "
            f"certificate chain with its unencrypted private key ({e.reason})",
        ) from None
