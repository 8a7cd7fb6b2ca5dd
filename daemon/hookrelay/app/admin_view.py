"""What the admin API asks the daemon (``ops.admin.AdminBackend``): hooks with their state,
recent attempts, assigned partitions, and a test payload sent now. ``reload`` lives with the
daemon, which SIGHUP also drives.
"""

from __future__ import annotations

import time
from typing import Any

from hookrelay.config import Settings
from hookrelay.delivery.adaptive import rate_limit_view
from hookrelay.delivery.dispatcher import Dispatcher
from hookrelay.delivery.sender import Sender
from hookrelay.events.test_payload import DEFAULT_TEST_EVENT, test_request
from hookrelay.kafka.backlog import BacklogGauge
from hookrelay.kafka.control import ControlFollower, release, resume, set_paused, unblock
from hookrelay.kafka.source import Source
from hookrelay.ops.history import History
from hookrelay.ops.logs import get_logger, masked, redacted_url

log = get_logger("hookrelay.app")


class HookDecisions:
    """The operator's decisions on a hook (pause, resume, release, unblock): written to the
    control topic, which every member of the group follows, so any process of the
    deployment can take them (the daemon, or the supervisor of its worker processes)."""

    settings: Settings

    async def pause_hook(self, hook_id: str, paused: bool, reason: str) -> None:
        """Pause or resume a configured hook through the control topic (``kafka.control``):
        every replica, this one included, follows it within a second. Raises
        ``LookupError`` for an unknown hook id, aiokafka's ``KafkaError``."""
        self._configured(hook_id)
        await set_paused(self.settings, hook_id, paused, reason)

    async def release_hook(self, hook_id: str, *, dry_run: bool) -> dict[str, Any]:
        """Send a configured hook's parked deliveries now (``kafka.control.release``).
        Raises ``LookupError`` for an unknown hook id, aiokafka's ``KafkaError``,
        ``TimeoutError``."""
        self._configured(hook_id)
        result = await release(self.settings, hook_id, dry_run=dry_run)
        return {"hook_id": hook_id, "released": len(result.waiting), "dry_run": dry_run}

    async def resume_hook(self, hook_id: str, *, release: bool) -> dict[str, Any]:
        """Resume a configured hook and, with ``release``, release what it parked
        (``kafka.control.resume``). Raises ``LookupError`` for an unknown hook id,
        ``RunClaimedError``, aiokafka's ``KafkaError``, ``TimeoutError``."""
        self._configured(hook_id)
        result = await resume(self.settings, hook_id, release_parked=release)
        answer: dict[str, Any] = {"hook_id": hook_id, "paused": False}
        if result is not None:
            answer["released"] = len(result.waiting)
        return answer

    async def unblock_hook(self, hook_id: str, key: str | None) -> dict[str, Any]:
        """Unblock ``key`` (None: every key) of a configured hook (``kafka.control.unblock``).
        Raises ``LookupError`` for an unknown hook id, aiokafka's ``KafkaError``,
        ``TimeoutError``."""
        self._configured(hook_id)
        found = await unblock(self.settings, hook_id, None if key is None else [key.encode()])
        keys = [k.decode("utf-8", "replace") for k in found[:100]]
        return {"hook_id": hook_id, "unblocked": len(found), "keys": keys}

    def _configured(self, hook_id: str) -> None:
        if all(hook.id != hook_id for hook in self.settings.hooks):
            raise LookupError(hook_id)


class AdminView(HookDecisions):
    """The admin API's answers, mixed into ``Daemon`` (which provides the parts named below)."""

    dispatcher: Dispatcher
    history: History
    source: Source
    control: ControlFollower
    backlog: BacklogGauge
    _sender: Sender

    def hooks(self) -> list[dict[str, Any]]:
        """Every configured hook with its state, in configuration order."""
        now = time.time()
        found = []
        for hook in self.settings.hooks:
            state = self.dispatcher.lane_state(hook.id)
            if state is None:  # disabled: no lane
                limit = rate_limit_view(hook.rate_limit, None)
                state = {"paused": False, "paused_by": None, "circuit": "closed", "pending": 0,
                         "in_flight": 0, "rate_limit": limit, "ordering": None}  # fmt: skip
            pause = self.control.state.paused.get(hook.id)
            found.append({
                "id": hook.id, "name": hook.name, "url": redacted_url(hook.url),
                "events": list(hook.events), "enabled": hook.enabled,
                "filter": None if hook.filter is None else hook.filter.text, **state,
                "pause_reason": pause.reason if pause is not None else None,
                "retry_backlog": self.backlog.of_hook(hook.id),
                "retry_backlog_unscanned": self.backlog.unscanned(),
                "last_24h": self.history.last_24h(hook.id, now),
            })  # fmt: skip
        return found

    def deliveries(
        self, *, hook_id: str | None, outcome: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Recent attempts, newest first (``history.AttemptLog.recent``)."""
        return self.history.attempts.recent(hook_id=hook_id, outcome=outcome, limit=limit)

    def partitions(self) -> list[dict[str, Any]]:
        """The assigned partitions with offsets, lag and what holds them (``Source``)."""
        return self.source.partitions()

    async def test_hook(self, hook_id: str, event: str | None) -> dict[str, Any]:
        """POST a Logto-style test payload to one hook now, outside the retry machinery
        (nothing is retried, counted or logged as a delivery). Raises ``LookupError`` for an
        unknown hook id, ``ValueError`` for an empty event name."""
        hook = self.settings.hook(hook_id)
        if hook is None:
            raise LookupError(hook_id)
        name = DEFAULT_TEST_EVENT if event is None else event.strip()
        if not name:
            raise ValueError("event name must not be empty")
        did, body = test_request(hook.id, name, int(time.time() * 1000))
        result = await self._sender.attempt(hook, did, body)
        log.info("test_payload_sent", hook_id=hook.id, event_name=name, status=result.status,
                 error=result.error)  # fmt: skip
        return {
            "hook_id": hook.id, "event": name, "delivery_id": did, "status": result.status,
            "duration_ms": round(result.duration_s * 1000, 1), "error": result.error,
            "response_body": masked(result.response_head[:1024].decode("utf-8", "replace")),
        }  # fmt: skip
