"""`TestDriver`: run a graph synchronously and deterministically in one process.

Like Kafka Streams' `TopologyTestDriver`: records go in with `send`, are processed before
`send` returns, and tables and output topics can be read right away. It uses the real
planner, the real worker and the `memory://` transport; the store is `memory://` unless
another is given, so the same code paths run as in `fg.run`.

By default every record is encoded as on Kafka (as `TopologyTestDriver` serialises every
record): internal topics hold bytes made by the topic's codecs, and written records carry
origin headers. A record that cannot be stored (a key a table's changelog cannot encode, a
value that does not fit a sink's type) then reaches the dead-letter topic in a test exactly
as in production. ``TestDriver(graph, encode=False)`` passes Python objects through internal
topics, as a `memory://` run does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import Any

import attrs

from flowgraph._graph import Graph
from flowgraph.app import App
from flowgraph.errors import ConfigurationError
from flowgraph.partitioner import partition_for
from flowgraph.runtime.agent import WORKER
from flowgraph.runtime.memory import MemoryTransport
from flowgraph.runtime.state import open_backend
from flowgraph.runtime.task import ORIGIN_HEADER
from flowgraph.runtime.worker import DEFAULT_MAX_SKEW, Worker
from planner import plan as make_plan

__all__ = ["DeadLetter", "TestDriver"]


def _pool_if_loop_running() -> concurrent.futures.ThreadPoolExecutor | None:
    """A one-thread pool to run the driver's loop in, if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flowgraph-driver")


@attrs.frozen
class DeadLetter:
    """A record in the dead-letter topic, with its error headers as a dict of str."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


class TestDriver:
    """Drive `graph` by hand: `send`, then read `table(name)` and `output(topic)`."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        graph: Graph | App,
        *,
        store: str = "memory://",
        max_batch: int = 1000,
        max_skew: float = DEFAULT_MAX_SKEW,
        encode: bool = True,
    ) -> None:
        """`encode=False` lets internal topics hold Python objects instead of bytes."""
        self.graph = graph
        self.plan = make_plan(graph)
        self._transport = MemoryTransport(encoded=encode)
        self._loop = asyncio.new_event_loop()
        self._pool = _pool_if_loop_running()
        self._worker = Worker(
            self.plan, self._transport, open_backend(store), max_batch=max_batch, max_skew=max_skew
        )
        self._time = 0.0
        self._worker.clock = lambda: self._time
        self._worker.services.manual = True  # timers run on this clock, in `advance_time`
        self._closed = False
        self._sources = {t.name: t for t in self.plan.topics if t.role == "source"}
        self._run(self._worker.start())
        self._run(self._worker.services.settle())  # the app's tasks, to their end
        self._drain()

    def _run(self, coro: Any) -> Any:
        coro = self._as_worker(coro)
        if self._pool is not None:  # a loop already runs in this thread (Jupyter)
            return self._pool.submit(self._loop.run_until_complete, coro).result()
        return self._loop.run_until_complete(coro)

    async def _as_worker(self, coro: Any) -> Any:
        """Run `coro` where step functions find the worker (each loop run is a new task,
        so what `Worker.start` set in its own task's context is not seen here)."""
        WORKER.set(self._worker)
        return await coro

    def _drain(self) -> None:
        self._run(self._settled())

    async def _settled(self, end_of_input: bool = False) -> None:
        """Process everything, then bring the global tables' copies to what was committed,
        so the next record (and `table`) sees every write so far."""
        worker = self._worker
        await worker.run(until_idle=True, idle_wait=0.0, end_of_input=end_of_input)
        if worker.global_tables:
            await worker.global_tables.catch_up()

    def send(
        self,
        topic: str,
        key: Any,
        value: Any,
        *,
        timestamp: float | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        """Write one record to source `topic` and process everything it leads to.

        Keys and values are encoded with the topic's declared types (bytes pass as they are),
        so a value that does not fit its type reaches the dead-letter topic, as on Kafka.
        """
        spec = self._sources.get(topic)
        if spec is None:
            known = ", ".join(map(repr, self._sources)) or "none"
            msg = f"graph {self.graph.id!r} reads no topic {topic!r}; its source topics: {known}"
            raise ConfigurationError(msg)
        kc, vc = self._worker.codecs[topic]
        kb = key if key is None or isinstance(key, bytes) or kc is None else kc.encode(key)
        vb = value if value is None or isinstance(value, bytes) or vc is None else vc.encode(value)
        partition = 0 if kb is None else partition_for(kb, spec.partitions)
        ts = self._time if timestamp is None else timestamp
        hdrs = tuple(headers.items()) if headers else None
        self._transport.broker.append(topic, [(partition, kb, vb, ts, hdrs)])
        self._drain()

    def send_many(self, topic: str, records: list[tuple[Any, Any]]) -> None:
        """`send` each ``(key, value)``; processes after each, like separate sends."""
        for key, value in records:
            self.send(topic, key, value)

    def run(self) -> None:
        """Process what bounded sources (`source_from`) still hold."""
        self._drain()

    def end_of_input(self) -> None:
        """End the input: close every open window, as at the end of a bounded source.

        Each window closes as if stream time had passed its end plus grace (an
        ``emit="close"`` window emits its final value now) and what that emits is processed
        downstream; records sent afterwards for those windows are late.
        """
        self._run(self._settled(end_of_input=True))

    def advance_time(self, t: float) -> None:
        """Set the driver's clock (seconds) and let idle windows follow it.

        Later `send`s without timestamp= use it; windowed tables read it as their wall
        clock (`now()`, and `idle_timeout`, whose windows close and emit here). The app's
        timers and crontabs due up to `t` run first, in time order (those due at the same
        time in the order the app declares them), with the clock at their time; what they
        send is processed before the next time comes.
        """
        services = self._worker.services
        while (due := services.next_due(t)) is not None:
            self._time = due
            self._run(services.fire(due))
            self._drain()
        self._time = t
        self._drain()

    def table(self, name: str) -> Any:
        """Current contents of the table made by step `name`: a dict, or for a windowed
        table a `WindowedTableView` (``view[key].current()``, ``view.range(...)``)."""
        return self._worker.table(name)

    def output(self, topic: str) -> list[tuple[Any, Any]]:
        """Every ``(key, value)`` written to `topic` so far, decoded, in partition order."""
        log = self._transport.broker.logs.get(topic)
        if log is None:
            msg = f"graph {self.graph.id!r} writes no topic {topic!r}"
            raise ConfigurationError(msg)
        kc, vc = self._worker.codecs[topic]
        return [
            (
                k if k is None or kc is None else kc.decode(k),
                v if v is None or vc is None else vc.decode(v),
            )
            for part in log
            for k, v, _ts, _o, _h in part
        ]

    def dead_letters(self) -> list[DeadLetter]:
        """Records sent to ``<graph>-dlq``, with their error headers."""
        log = self._transport.broker.logs[self.plan.dlq]
        return [
            DeadLetter(
                k, v, {name: value.decode() for name, value in (h or ()) if name != ORIGIN_HEADER}
            )
            for part in log
            for k, v, _ts, _o, h in part
        ]

    def close(self) -> None:
        """Close stores and the event loop."""
        if not self._closed:
            self._closed = True
            self._run(self._worker.stop())
            self._loop.close()
            if self._pool is not None:
                self._pool.shutdown()

    def __enter__(self) -> TestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):  # at interpreter exit, close what we can
                self.close()
