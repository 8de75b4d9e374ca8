"""Prometheus metrics: counted here, served as text at ``/metrics`` on the HTTP port.

The rest of the server counts through the few functions below; each is a counter increment
or a histogram observation, made per connection, window, checkpoint, Redis call or
lifecycle event, never per read. Bytes received are counted at checkpoints.

One process keeps its metrics in memory. Under ``--workers N`` every worker writes its own
into files of a directory the supervisor made for the run (prometheus-client's
multiprocess mode, switched on by ``PROMETHEUS_MULTIPROC_DIR`` in the worker's environment
before anything is counted), and a scrape on any worker reads them all: counts of every
worker, those of workers that died included; gauges of live workers only (the supervisor
marks a dead one with ``mark_process_dead``). The free space of the data directory is
measured at scrape time.

Labels are bounded sets (transports, status numbers, state-store operations); no stream
key, principal, token or address ever goes into a metric. The names and what they count:
docs/OPERATING.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from .engine import StreamEngine
    from .events import StreamEvent

__all__ = [
    "HTTP",
    "METRICS_PATH",
    "MULTIPROCESS_ENV",
    "TCP",
    "TRANSPORTS",
    "UTP",
    "WEBSOCKET",
    "MultiprocessDirectory",
    "checkpointed",
    "connection_closed",
    "connection_opened",
    "fsynced",
    "metrics_routes",
    "received",
    "redis_timer",
    "refused",
    "render",
    "resumed",
    "stream_closed",
    "stream_event",
    "stream_opened",
    "swept",
    "taken_over",
]

METRICS_PATH: Final = "/metrics"
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
TCP: Final = "tcp"
WEBSOCKET: Final = "websocket"
UTP: Final = "utp"
HTTP: Final = "http"
TRANSPORTS: Final = (TCP, WEBSOCKET, UTP, HTTP)
# The text format every Prometheus server reads.
_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Set in a worker's environment by its supervisor (before this module is imported).
_SHARED_DIRECTORY: Final = os.environ.get(MULTIPROCESS_ENV) or None

# Metrics of this process: read directly when it serves alone, through the files of every
# worker otherwise.
_REGISTRY: Final = CollectorRegistry(auto_describe=True)

# Fast disks fsync in well under a millisecond, network storage in tens or hundreds.
_DISK_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_REDIS_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

_CONNECTIONS: Final = Gauge(
    "xstream_active_connections",
    "Open client connections, by transport.",
    ["transport"],
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)
_STREAMS: Final = Gauge(
    "xstream_active_streams",
    "Streams receiving bytes now (a window open), by transport.",
    ["transport"],
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)
_RECEIVED: Final = Counter(
    "xstream_received_bytes",
    "Stream bytes received and written to storage, by transport (counted at checkpoints).",
    ["transport"],
    registry=_REGISTRY,
)
_CREATED: Final = Counter("xstream_uploads_created", "Streams created.", registry=_REGISTRY)
_COMPLETED: Final = Counter(
    "xstream_uploads_completed",
    "Streams complete with their completion handler's success (status 0).",
    registry=_REGISTRY,
)
_FAILED: Final = Counter(
    "xstream_uploads_failed",
    "Streams whose final result is an error, by its status: the handler refused (its "
    "status), failed its last run (500), or the checksum did not match (460).",
    ["status"],
    registry=_REGISTRY,
)
_RETRIED: Final = Counter(
    "xstream_completion_retries",
    "Completion handler runs that failed and run again on the stream's next resume.",
    registry=_REGISTRY,
)
_TERMINATED: Final = Counter(
    "xstream_uploads_terminated", "Streams deleted by their client.", registry=_REGISTRY
)
_REFUSED: Final = Counter(
    "xstream_stream_requests_refused",
    "Stream requests (new streams, resumes, tus creations) refused, by status.",
    ["status"],
    registry=_REGISTRY,
)
_RESUMES: Final = Counter(
    "xstream_resumes",
    "Windows granted on a stream that already held bytes.",
    registry=_REGISTRY,
)
_TAKEOVERS: Final = Counter(
    "xstream_takeovers",
    "Resumes that took a stream from another owner (a live window here or elsewhere, or "
    "a dead instance's lease).",
    registry=_REGISTRY,
)
_CHECKPOINT: Final = Histogram(
    "xstream_checkpoint_duration_seconds",
    "Checkpoints: the part file's fsync, then the offset recorded in Redis.",
    registry=_REGISTRY,
    buckets=_DISK_BUCKETS,
)
_FSYNC: Final = Histogram(
    "xstream_fsync_duration_seconds",
    "fsync calls on part files (none with --no-fsync).",
    registry=_REGISTRY,
    buckets=_DISK_BUCKETS,
)
_REDIS: Final = Histogram(
    "xstream_redis_duration_seconds",
    "State store calls to Redis (one round trip, a few for some operations), by operation.",
    ["operation"],
    registry=_REGISTRY,
    buckets=_REDIS_BUCKETS,
)
_SWEPT: Final = Counter(
    "xstream_sweeper_removals",
    "What the sweeper deleted: expired streams, part files without a record, records "
    "without a part.",
    ["kind"],
    registry=_REGISTRY,
)
_SWEPT_KINDS: Final = {
    "expired": "expired",
    "orphan_parts": "orphan_part",
    "orphan_records": "orphan_record",
}

# Children made now: every series is there (at 0) from the start, and counting is an
# attribute access, not a label lookup.
_CONNECTIONS_BY: Final = {name: _CONNECTIONS.labels(name) for name in TRANSPORTS}
_STREAMS_BY: Final = {name: _STREAMS.labels(name) for name in TRANSPORTS}
_RECEIVED_BY: Final = {name: _RECEIVED.labels(name) for name in TRANSPORTS}
_SWEPT_BY: Final = {kind: _SWEPT.labels(label) for kind, label in _SWEPT_KINDS.items()}


# ---- counting --------------------------------------------------------------------------
def connection_opened(transport: str) -> None:
    _CONNECTIONS_BY[transport].inc()


def connection_closed(transport: str) -> None:
    _CONNECTIONS_BY[transport].dec()


def stream_opened(transport: str) -> None:
    _STREAMS_BY[transport].inc()


def stream_closed(transport: str) -> None:
    _STREAMS_BY[transport].dec()


def received(transport: str, nbytes: int) -> None:
    _RECEIVED_BY[transport].inc(nbytes)


def checkpointed(seconds: float) -> None:
    _CHECKPOINT.observe(seconds)


def fsynced(seconds: float) -> None:
    _FSYNC.observe(seconds)


def redis_timer(operation: str) -> Callable[[float], None]:
    """The observation of one state-store operation's duration (bound once, at import)."""
    return _REDIS.labels(operation).observe


def refused(status: int) -> None:
    _REFUSED.labels(str(int(status))).inc()


def resumed() -> None:
    _RESUMES.inc()


def taken_over() -> None:
    _TAKEOVERS.inc()


def swept(counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        if count and kind in _SWEPT_BY:
            _SWEPT_BY[kind].inc(count)


def stream_event(event: StreamEvent) -> None:
    """Count a lifecycle event (``events.StreamEvents.emit``); progress is not counted."""
    kind = event.kind
    if kind == "created":
        _CREATED.inc()
    elif kind == "completed":
        _COMPLETED.inc()
    elif kind == "failed":
        if event.final:
            _FAILED.labels(str(int(event.status or 0))).inc()
        else:
            _RETRIED.inc()
    elif kind == "terminated":
        _TERMINATED.inc()


# ---- serving ---------------------------------------------------------------------------
class _FreeSpace(Collector):
    """The data directory's free space, measured when scraped."""

    def __init__(self, free_space: Callable[[], int]) -> None:
        self._free_space = free_space

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "xstream_data_dir_free_bytes",
            "Free space of the data directory, as windows are granted against it.",
            value=self._free_space(),
        )


def render(free_space: Callable[[], int] | None) -> bytes:
    """The metrics in the text format: this process's, or every worker's."""
    registry = CollectorRegistry(auto_describe=False)
    if _SHARED_DIRECTORY is not None:
        MultiProcessCollector(registry, _SHARED_DIRECTORY)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Mirror())
    if free_space is not None:
        registry.register(_FreeSpace(free_space))
    return generate_latest(registry)


class _Mirror(Collector):
    """This process's metrics, inside the registry of one scrape, without the ``_created``
    timestamps that only a single process has (the same series with workers or without)."""

    def collect(self) -> Iterator[Metric]:
        for metric in _REGISTRY.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


def metrics_routes(engine: Callable[[], StreamEngine | None]) -> list[BaseRoute]:
    """``/metrics``; ``engine()`` is the server's engine (None until it has started)."""

    async def serve(request: Request) -> Response:
        running = engine()
        free_space = running.storage.free_space if running is not None else None
        # Off the event loop: reading every worker's files and statvfs take their time.
        body = await asyncio.to_thread(render, free_space)
        return Response(body, media_type=_CONTENT_TYPE)

    return [Route(METRICS_PATH, serve, methods=["GET", "HEAD"])]


# ---- the supervisor's side -------------------------------------------------------------
class MultiprocessDirectory:
    """Where a supervisor's workers keep their metrics: ``PROMETHEUS_MULTIPROC_DIR`` if the
    supervisor was given one (emptied at start), else a fresh private directory made for
    the run and removed at its end."""

    def __init__(self) -> None:
        given = os.environ.get(MULTIPROCESS_ENV)
        if given:
            self.path = Path(given)
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in self.path.glob("*.db"):
                stale.unlink(missing_ok=True)
            self._made = False
        else:
            self.path = Path(tempfile.mkdtemp(prefix="xstream-metrics-"))
            self._made = True

    def environment(self) -> dict[str, str]:
        """What a worker's environment needs to count into this directory."""
        return {MULTIPROCESS_ENV: str(self.path)}

    def worker_died(self, pid: int) -> None:
        """Drop the gauges of a dead worker (its counts stay)."""
        with contextlib.suppress(OSError):
            mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        if self._made:
            shutil.rmtree(self.path, ignore_errors=True)
