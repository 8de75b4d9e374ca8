"""The tests in this folder run against a real 3-master Redis Cluster: ``redis_url`` names
the cluster (``redis+cluster://``), so every fixture built on it (``make_server``,
``spawn_server``...) uses the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisClusterProcesses


@pytest.fixture
def redis_url(redis_cluster: RedisClusterProcesses) -> str:
    """The session's cluster, emptied for each test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def failover_cluster(tmp_path: Path) -> Iterator[RedisClusterProcesses]:
    """A cluster of its own for a test that kills a master: 3 masters with one replica each
    (6 redis-server processes) and a node timeout of 1 s, so that a replica is promoted a
    few seconds after its master dies."""
    cluster = RedisClusterProcesses(tmp_path / "failover", replicas=1, node_timeout=1000)
    cluster.start()
    yield cluster
    cluster.stop()


# Fixtures of the folders whose tests run here again.
from tests.durability.conftest import connect  # noqa: E402
from tests.engine.test_engine import make_engine  # noqa: E402
from tests.http.conftest import http  # noqa: E402

__all__ = ["connect", "http", "make_engine"]
