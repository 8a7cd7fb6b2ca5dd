"""What an ack tracker would commit, as offsets only (its offset maps left out)."""

from __future__ import annotations

from hookrelay.kafka.offsets import AckTracker, TopicPartition


def commit_offsets(tracker: AckTracker) -> dict[TopicPartition, int]:
    """``tracker.to_commit()`` without the offset maps: ``{tp: next offset to read}``."""
    return {tp: offset for tp, (offset, _) in tracker.to_commit().items()}
