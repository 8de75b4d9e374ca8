"""Stream state: the ``StateStore`` interface and its Redis implementation."""

from .base import LeaseLost, StateStore, StateUnavailable, StoredResult, StreamRecord, StreamState
from .redis import RedisStateStore

__all__ = [
    "LeaseLost",
    "RedisStateStore",
    "StateStore",
    "StateUnavailable",
    "StoredResult",
    "StreamRecord",
    "StreamState",
]
