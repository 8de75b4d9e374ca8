"""The tests in this folder run against a real 3-master Redis Cluster: ``redis_url`` names
the cluster (``redis+cluster://``), so every fixture built on it (``make_server``,
``spawn_server``...) uses the cluster."""

from __future__ import annotations

import pytest

from tests.conftest import RedisClusterProcesses


@pytest.fixture
def redis_url(redis_cluster: RedisClusterProcesses) -> str:
    """The session's cluster, emptied for each test."""
    redis_cluster.flush()
    return redis_cluster.url


# Fixtures of the folders whose tests run here again.
from tests.durability.conftest import connect  # noqa: E402
from tests.engine.test_engine import make_engine  # noqa: E402
from tests.http.conftest import http  # noqa: E402

__all__ = ["connect", "http", "make_engine"]
