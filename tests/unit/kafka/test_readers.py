"""Every consumer hookrelay makes besides its group consumer is bounded like it."""

from __future__ import annotations

import ast
from pathlib import Path

from hookrelay.config import KafkaSettings
from hookrelay.kafka.clients import reader

PACKAGE = Path(__file__).resolve().parents[3] / "daemon" / "hookrelay"


async def test_a_reader_fetches_no_more_than_the_group_consumer_and_joins_no_group() -> None:
    kafka = KafkaSettings(max_partition_fetch_bytes=65_536, fetch_max_bytes=1_048_576)
    consumer = reader(kafka, "backlog")
    # aiokafka's defaults are 1 MiB a partition and 50 MiB a response: the retry-backlog
    # count, every 30 s over two dozen retry partitions, took the RSS from 129 to 150 MB.
    assert consumer._max_partition_fetch_bytes == 65_536
    assert consumer._fetch_max_bytes == 1_048_576
    assert consumer._group_id is None
    assert not consumer._enable_auto_commit
    assert consumer._client._client_id == "hookrelay-backlog"


def test_no_module_makes_a_consumer_of_its_own_but_the_source_and_reader() -> None:
    makers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "AIOKafkaConsumer"
    }
    assert makers == {"kafka/source.py", "kafka/clients.py"}
