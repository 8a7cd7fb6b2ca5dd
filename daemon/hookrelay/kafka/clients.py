"""The options every aiokafka client of hookrelay is built with: where the brokers are, who is
asking, and how the connection is secured.

::

    KafkaSettings ─▶ client_options(kafka, role) ─▶ AIOKafkaConsumer / AIOKafkaProducer /
                                                    AIOKafkaAdminClient(**options, ...)

``security_protocol`` is Kafka's own setting of the same name: ``PLAINTEXT``, ``SSL`` (TLS),
``SASL_PLAINTEXT`` (SASL authentication, no TLS) or ``SASL_SSL`` (both). SASL mechanisms are
``PLAIN`` and ``SCRAM-SHA-256``/``SCRAM-SHA-512`` (RFC 7677 / RFC 5802), which aiokafka speaks
natively. TLS always verifies the broker's certificate chain and host name: the context comes
from aiokafka's ``create_ssl_context`` (``ssl.create_default_context``, which turns
``check_hostname`` and ``CERT_REQUIRED`` on); the system's CAs are used when no
``ssl_ca_file`` is given.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    from hookrelay.config import KafkaSettings

__all__ = ["SslFilesError", "build_ssl_context", "client_options", "committed_with_metadata"]


class SslFilesError(ValueError):
    """A CA, certificate or key file cannot be used; ``key`` is the setting it came from
    (``ssl_ca_file``, ``ssl_cert_file`` or ``ssl_key_file``) and the message names the file,
    never its content."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def build_ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A client ``SSLContext`` that verifies the broker (``CERT_REQUIRED``, ``check_hostname``)
    against the PEM CA bundle ``ca_file`` (system CAs when ``None``), presenting the PEM
    certificate chain ``cert_file`` with its private key ``key_file`` (mutual TLS) when given.

    Raises :class:`SslFilesError` when a file is missing, unreadable or holds no usable PEM
    data.
    """
    from aiokafka.helpers import create_ssl_context  # noqa: PLC0415  (aiokafka is slow to import)

    try:
        context: ssl.SSLContext = create_ssl_context(cafile=ca_file)
    except ssl.SSLError as e:
        raise SslFilesError(
            "ssl_ca_file", f"CA file {ca_file} holds no PEM certificate ({e.reason})"
        ) from None
    except OSError as e:
        raise SslFilesError("ssl_ca_file", f"cannot read CA file {ca_file}: {e.strerror}") from None
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
                raise SslFilesError(key, f"cannot read {file}: {e.strerror}") from None
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except ssl.SSLError as e:
        raise SslFilesError(
            "ssl_cert_file",
            f"certificate {cert_file} and key {key_file or cert_file} do not load as a PEM "
            f"certificate chain with its unencrypted private key ({e.reason})",
        ) from None


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's
    # passphrase; an empty one makes it fail instead.
    return ""


def client_options(kafka: KafkaSettings, role: str | None = None) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client: ``bootstrap_servers`` (list of
    host:port), ``client_id`` (``kafka.client_id``, suffixed ``-<role>`` when a role such as
    ``producer`` is given), ``security_protocol``, and, as the protocol needs them,
    ``ssl_context`` and ``sasl_mechanism``/``sasl_plain_username``/``sasl_plain_password``.

    Raises :class:`SslFilesError` when the TLS files cannot be loaded (the configuration
    loader checked them already, so only a file changed since then fails here).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": f"{kafka.client_id}-{role}" if role else kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = build_ssl_context(
            kafka.ssl_ca_file, kafka.ssl_cert_file, kafka.ssl_key_file
        )
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert kafka.sasl_password is not None, "validated with the settings"
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


async def committed_with_metadata(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets of ``partitions`` with their metadata, in one request
    (partitions without a commit are absent or have offset -1). ``AIOKafkaConsumer.committed``
    returns the offset only, one partition per request; this is the coordinator call it
    makes (aiokafka 0.14), which retries retriable errors. Raises aiokafka's ``KafkaError``."""
    if not partitions:
        return {}
    fetched: dict[
        TopicPartition, OffsetAndMetadata
    ] = await consumer._coordinator.fetch_committed_offsets(partitions)
    return fetched
