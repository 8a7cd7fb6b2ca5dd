"""hookrelay's one error tree.

::

    HookrelayError
    ├── ConfigError            configuration refused at load time (file, line, key path)
    ├── InvalidEventError      a record is not a valid identity event (dead-lettered)
    ├── KafkaUnavailableError  the broker could not be reached or refused a request
    └── DeliveryError          one attempt to POST a webhook failed
        ├── RetryableDeliveryError   408/425/429/5xx, connection errors, timeouts
        └── PermanentDeliveryError   other 4xx, 3xx (never followed), refused by policy

Every ``DeliveryError`` says whether it is retryable (``retryable``) and carries the HTTP
status when there was one. Raise with ``from e`` to keep the transport's cause.
"""

from __future__ import annotations

from dataclasses import dataclass


class HookrelayError(Exception):
    """Base of every error hookrelay raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file.

    ``line`` and ``column`` are 1-based; 0 when the problem has no position (a missing file).
    ``key_path`` is dotted with list indexes, e.g. ``hooks[2].rate_limit.per_second``.
    ``message`` never contains a secret value.
    """

    file: str
    line: int
    column: int
    key_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(HookrelayError):
    """Configuration refused; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class KafkaUnavailableError(HookrelayError):
    """The Kafka cluster could not be reached, or refused a request hookrelay needs."""


class DeliveryError(HookrelayError):
    """One delivery attempt failed.

    ``status`` is the HTTP status when the endpoint answered, else ``None``.
    ``retry_after_s`` is the endpoint's ``Retry-After`` in seconds when it sent a usable one.
    """

    retryable: bool = False

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s


class RetryableDeliveryError(DeliveryError):
    """The attempt may succeed later: 408, 425, 429, 5xx, connection error or timeout."""

    retryable = True


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help: other 4xx, a redirect (never followed), or refused by policy."""

    retryable = False


class InvalidEventError(HookrelayError):
    """A Kafka record is not a valid identity event (DESIGN §1.2); it goes to the dead-letter
    topic. ``reason`` is a bounded code (``not_json``, ``not_object``, ``missing_event``,
    ``bad_created_at``, ``oversized``, ``empty``); ``detail`` explains it for humans and
    never quotes the record's content."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
