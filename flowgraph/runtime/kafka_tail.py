"""`TailReader` on Kafka: one group-less aiokafka consumer following changelog partitions."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from flowgraph.runtime.transport import TP, Message

__all__ = ["KafkaTailReader"]


class KafkaTailReader:
    """Reads its partitions from given offsets on; made by `KafkaTransport.tail_reader`."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    def assign(self, positions: Mapping[TP, int]) -> None:
        """Read exactly `positions`' partitions, each from its offset."""
        parts = {TopicPartition(*tp): offset for tp, offset in positions.items()}
        self._consumer.assign(list(parts))
        for part, offset in parts.items():
            self._consumer.seek(part, offset)

    async def getmany(self, timeout: float) -> dict[TP, list[Message]]:
        """Records read since the last call (nothing assigned: waits `timeout`, returns {})."""
        if not self._consumer.assignment():
            import asyncio

            await asyncio.sleep(timeout)
            return {}
        data = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=50_000)
        return {
            (tp.topic, tp.partition): [
                (r.key, r.value, r.timestamp / 1000, r.offset, r.headers or None) for r in records
            ]
            for tp, records in data.items()
            if records
        }

    def highwater(self, tp: TP) -> int | None:
        """The partition's end as the last fetch saw it."""
        high = self._consumer.highwater(TopicPartition(*tp))
        return None if high is None else int(high)

    async def stop(self) -> None:
        """Close the consumer."""
        await self._consumer.stop()
