"""Rebalances and crashes on real processes (issue 11): a partition's next owner makes only
what its previous owner left unsettled, so copies do not multiply with membership changes.
The scenarios and their figures live in ``membership``; each test prints its figures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.membership import kill_scenario, rebalance_scenario

pytestmark = pytest.mark.integration


async def test_membership_changes_add_no_more_copies_than_sends_in_flight(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Side by side, not one after the other: each has its own topic, group, receiver and
    # processes, and most of a drain is waiting on the slow hook, so running both at once
    # halves the test's time, and the drain ratio compares two runs under the same load.
    async with asyncio.TaskGroup() as scenarios:
        running = scenarios.create_task(rebalance_scenario(kafka_bootstrap, tmp_path, churn=False))
        churning = scenarios.create_task(rebalance_scenario(kafka_bootstrap, tmp_path, churn=True))
    baseline, churn = running.result(), churning.result()
    print(f"\nbaseline: {baseline.summary()}\nchurn:    {churn.summary()}")
    assert baseline.extra == 0
    assert churn.max_copies <= 2
    assert len(churn.in_flight_at_revocations) >= 3  # B joined, left, joined, died
    assert churn.extra <= churn.bound
    assert churn.drain_s <= 1.5 * baseline.drain_s
    assert churn.webhook_ids_per_pair == 1  # a copy made by another owner keeps its id


async def test_kill_9_restarts_redo_only_what_was_in_flight(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    figures = await kill_scenario(kafka_bootstrap, tmp_path, count=2000, kills=3, rate=400)
    print(f"\nkill -9 x3: {figures.summary()}")
    assert len(figures.in_flight_at_kills) == 3
    assert figures.extra <= figures.bound
    assert figures.webhook_ids_per_pair == 1
