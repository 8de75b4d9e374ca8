"""The engine's background work: letting go of streams another instance wants, renewing
the leases of live sessions, cutting parts back to their durable offsets at start-up, and
sweeping expired streams and orphaned files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from ..events import EventKind, StreamEvent, StreamEvents
from ..protocol import Status
from ..settings import ServerSettings
from ..state import StateStore, StateUnavailable, StreamRecord, StreamState
from ..storage import Storage
from .registry import LiveStreams

__all__ = ["Maintenance"]

log = logging.getLogger("xstream.engine")


class Maintenance:
    def __init__(
        self,
        store: StateStore,
        storage: Storage,
        settings: ServerSettings,
        live: LiveStreams,
        instance: str,
        events: StreamEvents | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.settings = settings
        self.live = live
        self.instance = instance
        self.events = events

    async def reconcile(self) -> None:
        """At start-up, cut every part back to its recorded durable offset (PROTOCOL §3.5).

        Each part is cut under the stream's lease. A stream whose lease is held is being
        written by another instance sharing the data directory: its part rightly holds bytes
        past the last checkpoint, and it is left alone (a resume cuts it back anyway)."""
        storage = self.storage
        owner = f"{self.instance}:reconcile"
        count = 0
        for key in await self.store.active_keys():
            if await self.store.acquire_lease(key, owner, self.settings.lease_seconds):
                continue
            try:
                record = await self.store.get(key)
                if record is None or record.state is not StreamState.ACTIVE:
                    continue
                size = await storage.part_size(key)
                if size is not None and size > record.offset:
                    writer = await storage.open_part(key, record.offset)
                    await writer.close()
                    count += 1
            finally:
                await self.store.release_lease(key, owner)
        if count:
            log.info("start-up: %d part files cut back to their durable offsets", count)

    async def serve_takeovers(self) -> None:
        """Let go of streams that another instance's newer request wants."""
        async for key in self.store.takeover_requests(self.instance):
            session = self.live.sessions.get(key)
            if session is not None:
                log.info("stream %s: released for another instance", key)
                asyncio.get_running_loop().create_task(
                    session.stop(Status.CONFLICT, "superseded by a newer request for this stream")
                )

    async def renew_leases(self) -> None:
        """Keep the leases of live sessions, so only a dead process loses its streams by time."""
        interval = self.settings.lease_seconds / 4
        while True:
            await asyncio.sleep(interval)
            sessions = list(self.live.sessions.values())
            try:
                # One pipelined trip for all: one await per session would stretch a round
                # past the lease itself when the loop is busy with hundreds of streams.
                renewed = await self.store.renew_leases(
                    [(session.key, session.owner) for session in sessions],
                    self.settings.lease_seconds,
                )
            except StateUnavailable:
                continue
            for session, ok in zip(sessions, renewed, strict=True):
                if not ok:
                    session.stop_soon(Status.CONFLICT, "stream taken over by a newer request")

    def _expired(self, key: str, record: StreamRecord | None) -> None:
        if self.events is not None:
            self.events.emit(
                StreamEvent(
                    EventKind.EXPIRED,
                    key,
                    route=record.route if record else "",
                    offset=record.offset if record else None,
                    total=record.total if record else None,
                    principal=record.principal if record else None,
                )
            )

    @contextlib.asynccontextmanager
    async def _claimed(self, key: str) -> AsyncIterator[bool]:
        """Hold ``key``'s lease while deleting it: a stream streaming on any instance, or
        claimed by another instance's sweeper, is left alone (yields False). A deletion
        removes the lease with the record; otherwise it is released on leaving."""
        owner = f"{self.instance}:sweeper"
        if await self.store.acquire_lease(key, owner, self.settings.lease_seconds) is not None:
            yield False
            return
        try:
            yield True
        finally:
            await self.store.release_lease(key, owner)

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """Delete expired streams, part files without a record, records without a part.

        A complete stream whose handler succeeded leaves the expiry index, its file kept
        (the app's). One whose handler never succeeded (finalized, or complete with a
        failure) stays in the index until it expires, then its finished file is deleted."""
        now = time.time() if now is None else now
        counts = {"expired": 0, "orphan_parts": 0, "orphan_records": 0}
        for key in await self.store.expired(now):
            if key in self.live.sessions:
                continue
            record = await self.store.get(key)
            if record is not None and _handled(record):
                await self.store.forget(key)  # its record expires by itself; files stay
                continue
            if record is not None and record.updated + record.expiry > now:
                await self.store.reschedule(key, record.updated + record.expiry)
                continue  # renewed since it was indexed
            async with self._claimed(key) as claimed:
                if not claimed:
                    continue  # streaming on another instance, or another sweeper has it
                record = await self.store.get(key)  # as it is now, under the lease
                if record is not None and (
                    _handled(record) or record.updated + record.expiry > now
                ):
                    continue  # completed or renewed a moment ago: the next sweep sees it
                if record is not None:
                    # Not handled: a finished file here (finalized, perhaps cut short by a
                    # crash before the record said so) has no owner. A part goes too.
                    await self.storage.remove_finished(key)
                await self.storage.discard(key)
                if await self.store.delete(key):
                    counts["expired"] += 1
                    self._expired(key, record)
                self.live.forget(key)
        for part in await self.storage.list_parts():
            if part.key in self.live.sessions or now - part.modified < self.settings.orphan_grace:
                continue
            if not await self.store.exists(part.key):
                await self.storage.discard(part.key)
                counts["orphan_parts"] += 1
        for key in await self.store.active_keys():
            if key in self.live.sessions:
                continue
            record = await self.store.get(key)
            if record is None:
                # Expired by its TTL a moment before its place in the index came due.
                async with self._claimed(key) as claimed:
                    if claimed and await self.store.get(key) is None:
                        await self.storage.discard(key)
                        if await self.store.delete(key):
                            counts["expired"] += 1
                            self._expired(key, None)
            elif _handled(record):
                await self.store.forget(key)
            elif (
                record.state is StreamState.ACTIVE
                and now - record.updated >= self.settings.orphan_grace
                and await self.storage.part_size(key) is None
                # A part already turned into the finished file by a completion that a
                # crash cut short is no orphan: a resume completes it.
                and not await self.storage.is_finished(key)
            ):
                async with self._claimed(key) as claimed:
                    if claimed and await self.store.delete(key):
                        counts["orphan_records"] += 1
                        self._expired(key, record)
        if any(counts.values()):
            log.info("sweeper: %s", counts)
        return counts


def _handled(record: StreamRecord) -> bool:
    """Complete with a successful result: its finished file belongs to the app."""
    return (
        record.state is StreamState.COMPLETE
        and record.result is not None
        and record.result.status == Status.OK
    )
