"""A stop request while `KafkaTransport.start` retries an unreachable broker ends it at once,
even when it lands as a connection attempt fails (`asyncio.wait_for` then raises the
failure, not the cancellation: the retry loop must not take it for one more failure)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from flowgraph.runtime.kafka import KafkaTransport


def test_a_cancel_that_lands_with_a_failed_attempt_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = [0]

    async def main() -> float:
        outer = asyncio.current_task()
        assert outer is not None

        async def failing_start(self: Any) -> None:
            attempts[0] += 1
            outer.cancel()  # the stop request arrives just as this attempt fails
            raise KafkaConnectionError("no broker here")

        monkeypatch.setattr(AIOKafkaProducer, "start", failing_start)
        transport = KafkaTransport("127.0.0.1:9")
        began = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await transport.start()
        return time.monotonic() - began

    took = asyncio.run(main())
    assert attempts[0] == 1  # not retried for the connect timeout (15 s)
    assert took < 5
