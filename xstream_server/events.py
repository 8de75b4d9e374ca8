"""Stream lifecycle events, for backend code: created, progress (at checkpoints), completed,
failed, expired, terminated.

Each event goes to the App's ``on_event`` hooks in this process and, when the server has a
Redis, to the Redis Stream ``xs:events`` that other services read with consumer groups
(schema and an example consumer: docs/EVENTS.md, examples/event_consumer.py).

Emitting never waits: an event is put on a bounded queue and delivered by a background task,
in order. The raw path emits nothing per buffer, only at checkpoints. A hook that raises is
logged with its traceback and the next event is delivered all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from . import metrics

if TYPE_CHECKING:
    from .state import StreamRecord

__all__ = [
    "EVENT_STREAM",
    "EventHook",
    "EventKind",
    "EventPublisher",
    "StreamEvent",
    "StreamEvents",
]

log = logging.getLogger("xstream.events")

EVENT_STREAM: Final = "xs:events"
_QUEUE_LIMIT: Final = 10_000
_BATCH: Final = 256


class EventKind(StrEnum):
    CREATED = "created"
    PROGRESS = "progress"  # a checkpoint recorded a new durable offset
    COMPLETED = "completed"  # the handler succeeded; ``result`` is its answer
    FAILED = "failed"  # a run of the handler failed, or the stream's final status is not 0
    EXPIRED = "expired"  # deleted by the sweeper
    TERMINATED = "terminated"  # deleted by its client (tus DELETE)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    kind: EventKind
    key: str
    route: str = ""
    offset: int | None = None  # durable bytes
    total: int | None = None
    status: int | None = None  # completed / failed: the stream's status (0: OK)
    final: bool = True  # failed: False when a resume runs the handler again
    message: str | None = None
    result: bytes | None = None  # completed: the handler's reply payload
    result_format: str | None = None
    sha256: str | None = None
    principal: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    instance: str = ""
    at: float = field(default_factory=time.time)

    def fields(self) -> dict[str, str]:
        """The Redis Stream entry (docs/EVENTS.md): only the fields that have a value."""
        entry = {
            "kind": self.kind.value,
            "key": self.key,
            "route": self.route,
            "at": f"{self.at:.3f}",
            "instance": self.instance,
        }
        optional: dict[str, object] = {
            "offset": self.offset,
            "total": self.total,
            "status": self.status,
            "message": self.message,
            "result_format": self.result_format,
            "sha256": self.sha256,
            "principal": self.principal,
        }
        entry.update({name: str(value) for name, value in optional.items() if value is not None})
        if self.kind is EventKind.FAILED:
            entry["final"] = "1" if self.final else "0"
        if self.result is not None:
            entry["result"] = self.result.decode("utf-8", errors="replace")
        if self.metadata:
            entry["metadata"] = json.dumps(dict(self.metadata), separators=(",", ":"))
        return entry


EventHook = Callable[[StreamEvent], Awaitable[None]]
# Appends entries to the event stream (``RedisStateStore.append_events``).
EventPublisher = Callable[[Sequence[Mapping[str, str]]], Awaitable[None]]


class StreamEvents:
    """The engine's event outlet: ``emit`` from anywhere, ``deliver`` runs in the background."""

    def __init__(self, hooks: Sequence[EventHook], instance: str) -> None:
        self.hooks = list(hooks)
        self.instance = instance
        self.publisher: EventPublisher | None = None
        self._queue: asyncio.Queue[StreamEvent] | None = None
        self.dropped = 0

    @property
    def wanted(self) -> bool:
        return bool(self.hooks) or self.publisher is not None

    def emit(self, event: StreamEvent) -> None:
        metrics.stream_event(event)
        if not self.wanted:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(_QUEUE_LIMIT)
        if not event.instance:
            event = _with_instance(event, self.instance)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event queue full: %d events dropped so far", self.dropped)

    def progress(self, record: StreamRecord, offset: int) -> None:
        """A checkpoint recorded ``offset`` bytes of ``record`` as durable."""
        if self.wanted:
            self.emit(
                StreamEvent(
                    EventKind.PROGRESS,
                    record.key,
                    route=record.route,
                    offset=offset,
                    total=record.total,
                    principal=record.principal,
                )
            )

    async def deliver(self) -> None:
        """Forever: publish queued events in batches, then hand them to the hooks in order."""
        if self._queue is None:
            self._queue = asyncio.Queue(_QUEUE_LIMIT)
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < _BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            if self.publisher is not None:
                try:
                    await self.publisher([event.fields() for event in batch])
                except Exception as exc:
                    log.warning("%d events not appended to %s: %s", len(batch), EVENT_STREAM, exc)
            for event in batch:
                for hook in self.hooks:
                    try:
                        await hook(event)
                    except Exception:
                        log.exception(
                            "event hook %r failed on %s of %s", hook, event.kind, event.key
                        )
                queue.task_done()

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until queued events are delivered: at shutdown."""
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)


def _with_instance(event: StreamEvent, instance: str) -> StreamEvent:
    return replace(event, instance=instance)
