"""The admin API of a deployment of worker processes (``ops.admin.AdminBackend``), mixed into
the supervisor: the same routes and answers as one daemon's, for the whole deployment.

- views (hooks, deliveries, partitions) ask every worker's private listener and merge: a
  hook's queues, in-flight requests, retry backlog, last 24 h and rate limit are summed
  (each worker runs a share of the limit, so the sum is the deployment's), its circuit is
  the worst of the workers' (a per-worker view is ``hookrelay_circuit_state{worker}``);
  deliveries are merged newest first; partitions are listed together, each naming the
  ``worker`` that holds it;
- decisions (pause, resume, release, unblock) go to the control topic from the supervisor
  itself (``admin_view.HookDecisions``): every worker follows it;
- a test payload is sent by one worker (the first that answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from hookrelay.app.admin_view import HookDecisions
from hookrelay.app.worker_slot import WorkerGoneError, WorkerSlot
from hookrelay.delivery.ordering import BLOCKED_SHOWN
from hookrelay.ops.logs import get_logger

log = get_logger("hookrelay.supervisor")

CIRCUITS: Final = ("closed", "half_open", "open")
"""Circuit states from best to worst."""


class DeploymentView(HookDecisions):
    """The admin API's answers for a deployment of ``slots`` (the supervisor provides the
    parts named below)."""

    slots: Sequence[WorkerSlot]

    def _client(self) -> aiohttp.ClientSession:
        raise NotImplementedError

    async def _from_workers(self, path: str) -> list[Any]:
        """The answers of every worker that answers ``GET path`` with 200."""
        return list((await self._by_worker(path)).values())

    async def _by_worker(self, path: str) -> dict[int, Any]:
        """Worker index → its answer to ``GET path``, for every worker that answers 200."""

        async def one(slot: WorkerSlot) -> Any:
            try:
                status, body = await slot.ask(self._client(), "GET", path)
            except (WorkerGoneError, aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                return None
            return body if status == 200 else None

        found = await asyncio.gather(*(one(slot) for slot in self.slots))
        return {
            s.index: body for s, body in zip(self.slots, found, strict=True) if body is not None
        }

    async def hooks(self) -> list[dict[str, Any]]:
        """Every configured hook, merged over the workers (see the module docstring)."""
        answers = await self._from_workers("/v1/hooks")
        return merge_hooks([answer["hooks"] for answer in answers])

    async def deliveries(
        self, *, hook_id: str | None, outcome: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Every worker's recent attempts, newest first, at most ``limit``."""
        query = {"limit": str(limit)}
        query |= {"hook_id": hook_id} if hook_id is not None else {}
        query |= {"outcome": outcome} if outcome is not None else {}
        answers = await self._from_workers(f"/v1/deliveries?{urlencode(query)}")
        found = [attempt for answer in answers for attempt in answer["deliveries"]]
        found.sort(key=lambda attempt: str(attempt["time"]), reverse=True)
        return found[:limit]

    async def partitions(self) -> list[dict[str, Any]]:
        """The partitions every worker is assigned, by topic and partition, each with the
        ``worker`` (index) that holds it."""
        answers = await self._by_worker("/v1/partitions")
        found = [p | {"worker": w} for w, answer in answers.items() for p in answer["partitions"]]
        return sorted(found, key=lambda p: (str(p["topic"]), int(p["partition"])))

    async def test_hook(self, hook_id: str, event: str | None) -> dict[str, Any]:
        """Have the first worker that answers send the test payload. Raises
        ``LookupError`` for an unknown hook id, ``ValueError`` for a refused event name,
        ``RuntimeError`` when no worker could send it."""
        self._configured(hook_id)
        body = None if event is None else {"event": event}
        path = f"/v1/hooks/{quote(hook_id, safe='')}/test"
        for slot in self.slots:
            try:
                status, answer = await slot.ask(self._client(), "POST", path, body)
            except (WorkerGoneError, aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                continue
            if status == 404:
                raise LookupError(hook_id)
            if status == 400:
                raise ValueError(str(answer.get("detail", "refused")).removeprefix("event: "))
            if status == 200:
                return dict(answer)
        raise RuntimeError("no worker process answered")


def merge_hooks(views: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One ``/v1/hooks`` answer from each worker's: hooks in the first worker's order (the
    configuration's), each merged by :func:`merge_hook`."""
    if not views:
        return []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        for hook in view:
            by_id.setdefault(hook["id"], []).append(hook)
    return [merge_hook(states) for states in by_id.values()]


def merge_hook(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One hook's state over the workers (see the module docstring)."""
    merged = dict(states[0])
    merged["paused"] = any(s["paused"] for s in states)
    merged["paused_by"] = _first(s["paused_by"] for s in states)
    merged["pause_reason"] = _first(s.get("pause_reason") for s in states)
    merged["circuit"] = max((s["circuit"] for s in states), key=_circuit_rank)
    merged["pending"] = sum(s["pending"] for s in states)
    merged["in_flight"] = sum(s["in_flight"] for s in states)
    backlog: dict[str, int] = {}
    for state in states:
        for tier, n in state["retry_backlog"].items():
            backlog[tier] = backlog.get(tier, 0) + n
    merged["retry_backlog"] = backlog
    merged["retry_backlog_unscanned"] = sum(s["retry_backlog_unscanned"] for s in states)
    requests = sum(s["last_24h"]["requests"] for s in states)
    succeeded = sum(s["last_24h"]["succeeded"] for s in states)
    rate = round(succeeded / requests, 4) if requests else None
    merged["last_24h"] = {"requests": requests, "succeeded": succeeded, "success_rate": rate}
    merged["rate_limit"] = _merge_rate_limits([s["rate_limit"] for s in states])
    merged["ordering"] = _merge_ordering([s["ordering"] for s in states])
    return merged


def _merge_rate_limits(limits: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Each worker's share summed: the deployment's rate, burst and adaptive floor."""
    found = [limit for limit in limits if limit is not None]
    if not found:
        return None
    merged = dict(found[0])
    merged["per_second"] = round(sum(x["per_second"] for x in found), 6)
    merged["burst"] = sum(x["burst"] for x in found)
    merged["current_per_second"] = round(sum(x["current_per_second"] for x in found), 2)
    adaptive = [x["adaptive"] for x in found if x["adaptive"] is not None]
    if adaptive:
        merged["adaptive"] = {
            **adaptive[0],
            "floor": round(sum(a["floor"] for a in adaptive), 6),
            "decreases": sum(a["decreases"] for a in adaptive),
            "last_decrease": _first(a["last_decrease"] for a in adaptive),
        }
    return merged


def _merge_ordering(orderings: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    found = [ordering for ordering in orderings if ordering is not None]
    if not found:
        return None
    merged = dict(found[0])
    for name in ("keys", "blocked_keys", "held"):
        merged[name] = sum(o[name] for o in found)
    merged["blocked"] = [head for o in found for head in o["blocked"]][:BLOCKED_SHOWN]
    # The control topic decides these keys: every worker reports the same count.
    merged["keys_blocked_by_dead_letter"] = max(o["keys_blocked_by_dead_letter"] for o in found)
    return merged


def _first(values: Iterable[Any]) -> Any:
    return next((value for value in values if value is not None), None)


def _circuit_rank(circuit: str) -> int:
    return CIRCUITS.index(circuit) if circuit in CIRCUITS else len(CIRCUITS)
