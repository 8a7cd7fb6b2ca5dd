"""hookrelay's one error tree.

::

    HookrelayError
    ├── ConfigError            configuration refused at load time (file, line, key path)
    ├── InvalidEventError      a record is not a valid identity event (dead-lettered)
    ├── TopicsMissingError     topics hookrelay writes to are missing and may not be created
    ├── LogtoImportError       Logto hook JSON that import-logto cannot convert
    ├── FilterError            a hook's payload filter does not compile (refused at load)
    └── RunClaimedError        another run of replay or release holds this deployment's claim

``net.guard.AddressRefusedError`` (an endpoint address the SSRF guard refuses) stays outside
this tree on purpose: it is an ``OSError``, because aiohttp passes resolver errors through
as connection errors, and the sender turns it into a permanent ``AttemptResult``.

A failed delivery attempt is deliberately *not* an exception: endpoints failing is the normal
business of a webhook relay, so the sender returns an ``AttemptResult`` value that says
whether the failure is retryable (``model.AttemptResult.retryable``), with the HTTP status
and ``Retry-After`` when there were any. Kafka client failures stay aiokafka's ``KafkaError``
and are handled where they occur (start-up retries, commit retries, dead-letter write
retries). Raise with ``from e`` to keep a cause.
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
    """Configuration refused; ``issues`` lists every problem found, in file order, and
    ``warnings`` what ``hookrelay check`` would also warn about in the parts that are valid
    (``file:line: key.path: message`` lines)."""

    def __init__(self, issues: list[ConfigIssue], warnings: list[str] | None = None) -> None:
        self.issues = issues
        self.warnings = warnings or []
        super().__init__("\n".join(str(issue) for issue in issues))


class InvalidEventError(HookrelayError):
    """A Kafka record is not a valid identity event (DESIGN §1.2); it goes to the dead-letter
    topic. ``reason`` is a bounded code (``not_json``, ``not_object``, ``missing_event``,
    ``bad_created_at``, ``oversized``, ``empty``); ``detail`` explains it for humans and
    never quotes the record's content."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TopicsMissingError(HookrelayError):
    """Topics hookrelay must write to (dead-letter, retry tiers) do not exist, and
    ``kafka.create_topics`` is false. ``topics`` names them all."""

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        super().__init__(
            "missing Kafka topics (kafka.create_topics is false; create them first): "
            + ", ".join(topics)
        )


class LogtoImportError(HookrelayError):
    """``hookrelay import-logto`` cannot convert its input (not Logto's hook JSON, or a hook
    hookrelay would refuse); the message names the hook and the field, never a signing
    key."""


class FilterError(HookrelayError):
    """A hook's ``filter`` cannot be used (``events.filter.PayloadFilter.compile``): the
    message says what is wrong and at which character, without quoting the expression. The
    configuration loader turns it into a ``ConfigIssue`` on the hook's ``filter`` key."""


class RunClaimedError(HookrelayError):
    """Another run of the same operator command (``replay``, ``release`` of one hook) holds
    this deployment's claim in the control topic (``kafka.control.exclusive``); ``expires``
    is when an abandoned claim lapses (epoch seconds)."""

    def __init__(self, name: str, expires: float) -> None:
        self.name = name
        self.expires = expires
        super().__init__(
            f"another {name} of this deployment is running (its claim lapses by "
            f"{_iso(expires)} if it died); try again when it has ended"
        )


def _iso(epoch_s: float) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415 - the message's one use

    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
