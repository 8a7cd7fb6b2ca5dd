"""The bench's own Kafka broker (deploy/kafka/kafkactl.py) and its producers.

- ``Broker``: a single-node broker on a free port with a temporary data dir.
- ``produce_backlog``: fills a topic with numbered events as fast as aiokafka allows
  (whole record batches per partition), before the daemon starts.
- ``PacedProducer``: an offered load of N events per second, each record's timestamp being
  the instant it was handed to the producer; ``sent_at[seq]`` keeps that instant precisely
  (the record's own timestamp is the same instant truncated to milliseconds). Events are
  handed over every ``TICK_S`` (all those due by then): one produce request per tick rather
  than per event, so the broker, which shares the machine's cores with the daemon, is not
  kept busy by tiny requests no real producer fleet would send at that rate.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tests.bench.events import event_key, event_value
from tests.kafka_broker import create_topics, free_port, run_kafkactl

EXIT_PORT_IN_USE = 5
START_TIMEOUT_S = 90.0
BATCH_BYTES = 1 << 20
TICK_S = 0.005

__all__ = ["Broker", "PacedProducer", "create_topics", "produce_backlog"]


class Broker:
    """A throw-away broker started by kafkactl in ``data_dir``; ``stop()`` removes nothing."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.bootstrap = ""

    def start(self, attempts: int = 3) -> None:
        """Start on a free port (a new one if the port got taken meanwhile); raise on failure."""
        result = None
        for _ in range(attempts):
            port = str(free_port())
            result = run_kafkactl(
                "start", "--port", port, "--data-dir", str(self.data_dir),
                "--timeout", str(START_TIMEOUT_S), timeout_s=START_TIMEOUT_S + 120,
            )  # fmt: skip
            if result.returncode == 0:
                self.bootstrap = result.stdout.strip().rpartition("bootstrap=")[2]
                return
            if result.returncode != EXIT_PORT_IN_USE:
                break
        detail = result.stderr if result else ""
        raise RuntimeError(f"could not start the bench broker: {detail}")

    @property
    def pid(self) -> int:
        """The broker JVM's process id."""
        return int((self.data_dir / "kafka.pid").read_text().strip())

    def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after 20 s)."""
        run_kafkactl("stop", "--data-dir", str(self.data_dir), "--timeout", "20", timeout_s=60)


def _fill_batch(producer: AIOKafkaProducer, seq: int, end: int) -> tuple[object, int]:
    """A record batch of events ``seq`` onwards (up to ``end``, or until full); next seq."""
    batch = producer.create_batch()
    while seq < end and batch.append(key=event_key(seq), value=event_value(seq), timestamp=None):
        seq += 1
    batch.close()
    return batch, seq


async def produce_backlog(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    """Write events 0..count-1 to ``topic``, spread over ``partitions``; return seconds taken."""
    started = time.monotonic()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, max_batch_size=BATCH_BYTES,
        max_request_size=BATCH_BYTES * 2,
    )  # fmt: skip
    await producer.start()
    try:
        futures = []
        seq, partition = 0, 0
        while seq < count:
            batch, seq = _fill_batch(producer, seq, count)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            partition = (partition + 1) % partitions
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


class PacedProducer:
    """Offers ``rate_per_s`` events per second to ``topic`` for ``duration_s`` seconds."""

    def __init__(self, bootstrap: str, topic: str, rate_per_s: float, duration_s: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.sent_at = array("d")
        """Wall-clock second each event was handed to the producer, indexed by benchSeq."""

    async def run(self) -> None:
        """Send until the duration is over, then wait for every acknowledgement."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0)
        await producer.start()
        try:
            futures = await self._pace(producer)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def _pace(self, producer: AIOKafkaProducer) -> list[asyncio.Future[object]]:
        futures = []
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < self.duration_s:
            due = int(elapsed * self.rate_per_s)
            while len(self.sent_at) < due:
                now = time.time()
                value = event_value(len(self.sent_at))
                self.sent_at.append(now)
                futures.append(await producer.send(self.topic, value, timestamp_ms=int(now * 1000)))
            await asyncio.sleep(TICK_S)
        return futures
