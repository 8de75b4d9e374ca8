"""Opening a window on a stream: a new stream or a resume, the lease taken over from an older
connection (here or in another instance), the grant and the route's accept hook.

Every granted window holds the stream's lease in its ``StreamSession``. A grant never
promises space twice: a window is granted no more than the free space, less the reserve
kept for the server's own files, less what windows granted before have yet to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING, Final

from .. import metrics
from ..app import App, CreateOffer, RouteError, StreamOffer, StreamRoute
from ..events import EventKind, StreamEvent
from ..protocol import DataFormat, Status, StreamRequest
from ..settings import ServerSettings
from ..state import LeaseLost, StateStore, StateUnavailable, StreamRecord, StreamState
from ..storage import PartWriter, Storage, StorageError
from .access import may_access
from .errors import new_key, status_of_error
from .outcomes import Accepted, Refused
from .registry import LiveStreams
from .session import NoWriter, SessionHost, StreamSession

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["Negotiator"]

log = logging.getLogger("xstream.engine")

_POLL: Final = 0.005  # seconds between attempts to take a lease that is being released


_SUPERSEDED: Final = (Status.CONFLICT, "superseded by a newer request for this stream")


class Negotiator:
    def __init__(
        self,
        host: SessionHost,
        app: App,
        store: StateStore,
        storage: Storage,
        settings: ServerSettings,
        live: LiveStreams,
        instance: str,
    ) -> None:
        self._host = host
        self.app = app
        self.store = store
        self.storage = storage
        self.settings = settings
        self.live = live
        self.instance = instance
        self._serial = itertools.count(1)

    def new_owner(self) -> str:
        return f"{self.instance}:{next(self._serial)}"

    async def open(
        self,
        request: StreamRequest,
        client: str,
        *,
        offset: int | None = None,
        at_most: int | None = None,
        trusted: bool = False,
    ) -> Accepted | Refused:
        """Grant a window of ``request``'s stream. ``offset``: where the client says its bytes
        start (tus); anything but the durable offset is refused with 409. ``at_most``: the
        client has no more bytes than this to send now (the window is no larger).
        ``trusted``: the engine itself pours bytes into an existing stream (a final
        concatenation), as the stream's own principal, without asking the auth policy."""
        route = self.app.routes.get(request.route)
        if route is None:
            return Refused(Status.NOT_FOUND, f"no route {request.route}")
        if not isinstance(route, StreamRoute):
            return Refused(Status.METHOD_NOT_ALLOWED, "this route does not take streams")
        try:
            return await self._open(route, request, client, offset, at_most, trusted)
        except RouteError as exc:
            return Refused(exc.status, exc.message)
        except (StateUnavailable, LeaseLost, StorageError) as exc:
            status, message = status_of_error(exc)
            log.warning("stream request on %s refused: %s", request.route, exc)
            return Refused(status, message)
        except Exception:
            # An accept hook or an auth policy that fails: the client is answered at once.
            log.exception("stream request on %s failed", request.route)
            return Refused(Status.SERVER_ERROR, "internal error")

    async def create(
        self,
        request: StreamRequest,
        client: str,
        *,
        length_deferred: bool = False,
        partial: bool = False,
        concat: tuple[str, ...] | None = None,
    ) -> StreamRecord | Refused:
        """Create a stream without granting a window yet (tus creation); with
        ``length_deferred`` its length is said later (``set_total``) and ``request.total`` is
        the most it may be."""
        route = self.app.routes.get(request.route)
        if not isinstance(route, StreamRoute):
            return Refused(Status.NOT_FOUND, f"no stream route {request.route}")
        owner = self.new_owner()
        try:
            principal = await route.auth(request.authorization) if route.auth else None
            record = await self._create(
                route, request, principal, owner, length_deferred, partial, concat
            )
            await self.store.release_lease(record.key, owner)
        except RouteError as exc:
            return Refused(exc.status, exc.message)
        except (StateUnavailable, StorageError) as exc:
            return Refused(*status_of_error(exc))
        except Exception:
            log.exception("stream creation on %s failed", request.route)
            return Refused(Status.SERVER_ERROR, "internal error")
        return record

    async def terminate(
        self, key: str, stop: tuple[Status, str] | None = None, *, finished: bool = False
    ) -> Refused | None:
        """Delete ``key``'s record and part (tus termination). A window still open on it,
        here or in another instance, is stopped first, as a takeover does (answered with
        ``stop`` when given, by a window in this process); the finished file of a complete
        stream is left to the app, whose handler has run, unless ``finished``."""
        owner = self.new_owner()
        try:
            refused = await self._take_lease(key, owner, stop)
            if refused is not None:
                return refused
            record = await self.store.get(key)
            await self.storage.discard(key)
            if finished:
                await self.storage.remove_finished(key)
            await self.store.delete(key)  # the lease goes with the record
        except (StateUnavailable, StorageError) as exc:
            return Refused(*status_of_error(exc))
        self.live.forget(key)
        log.info("stream %s terminated", key)
        self._host.events.emit(
            StreamEvent(
                EventKind.TERMINATED,
                key,
                route=record.route if record else "",
                offset=record.offset if record else None,
                total=record.total if record else None,
                principal=record.principal if record else None,
            )
        )
        return None

    async def set_total(self, key: str, total: int) -> Refused | None:
        """Say the length of a stream created with a deferred one."""
        record = await self.store.get(key)
        route = self.app.routes.get(record.route) if record is not None else None
        if record is None or not isinstance(route, StreamRoute):
            return Refused(Status.GONE, "stream key unknown or expired")
        if total > route.max_size:
            return Refused(Status.TOO_LARGE, f"stream of {total} bytes, at most {route.max_size}")
        answer = await self.store.set_total(key, total)
        if answer == "ok" or (answer == "known" and record.total == total):
            return None
        if answer == "gone":
            return Refused(Status.GONE, "stream key unknown or expired")
        if answer == "short":
            return Refused(Status.CONFLICT, f"the stream holds {record.offset} bytes already")
        return Refused(Status.CONFLICT, f"the stream's length is {record.total} already")

    async def _open(
        self,
        route: StreamRoute,
        request: StreamRequest,
        client: str,
        offset: int | None,
        at_most: int | None,
        trusted: bool = False,
    ) -> Accepted | Refused:
        if trusted and request.key is not None:
            stored = await self.store.get(request.key)
            principal = stored.principal if stored is not None else None
        else:
            principal = await route.auth(request.authorization) if route.auth else None
        # Streams are counted per principal, else per address; taking over a stream open
        # here replaces it, so it does not count against the limit.
        client = f"principal {principal}" if principal is not None else client
        takeover = request.key is not None and request.key in self.live.sessions
        if (
            not takeover
            and self.live.client_streams(client) >= self.settings.max_streams_per_client
        ):
            return Refused(Status.TOO_MANY_STREAMS, "too many concurrent streams for this client")
        owner = self.new_owner()
        if request.key is None:
            record = await self._create(route, request, principal, owner)
        else:
            found = await self._resumable(route, request, principal)
            if isinstance(found, Refused):
                return found
            record = found
            refused = await self._take_lease(record.key, owner, resume=True)
            if refused is not None:
                return refused
        try:
            accepted = await self._grant(route, request, record, owner, principal, client, at_most)
        except BaseException:
            with contextlib.suppress(StateUnavailable):
                await self.store.release_lease(record.key, owner)
            raise
        if offset is not None and offset != accepted.offset:
            await accepted.session.release()
            return Refused(Status.CONFLICT, f"the stream's durable offset is {accepted.offset}")
        return accepted

    async def _create(
        self,
        route: StreamRoute,
        request: StreamRequest,
        principal: str | None,
        owner: str,
        length_deferred: bool = False,
        partial: bool = False,
        concat: tuple[str, ...] | None = None,
    ) -> StreamRecord:
        if request.total > route.max_size:
            raise RouteError(
                Status.TOO_LARGE, f"stream of {request.total} bytes, at most {route.max_size}"
            )
        if request.data_format is not DataFormat.BYTES and request.total > route.max_decoded_size:
            raise RouteError(
                Status.TOO_LARGE,
                f"{request.data_format} stream of {request.total} bytes, "
                f"at most {route.max_decoded_size} are decoded",
            )
        expiry = route.expiry or self.settings.stream_expiry
        metadata = dict(request.metadata)
        for hook in self.app.before_create_hooks:  # may refuse (RouteError) or shorten
            decision = await hook(
                CreateOffer(
                    route.path,
                    request.total,
                    dict(metadata),
                    principal,
                    request.data_format,
                    length_deferred,
                )
            )
            if decision is not None:
                if decision.expiry is not None:
                    expiry = min(expiry, max(decision.expiry, 0.001))
                if decision.metadata is not None:
                    metadata = dict(decision.metadata)
        now = time.time()
        record = StreamRecord(
            key=new_key(),
            route=route.path,
            total=request.total,
            offset=0,
            buffer_size=route.clamp_buffer(request.buffer_size),
            data_format=request.data_format.value,
            created=now,
            updated=now,
            expiry=expiry,
            metadata=metadata,
            principal=principal,
            checksum=request.checksum,
            length_deferred=length_deferred,
            partial=partial,
            concat=concat,
        )
        await self.store.create(record, owner)
        log.debug("stream %s created on %s: %d bytes", record.key, route.path, record.total)
        self._host.events.emit(
            StreamEvent(
                EventKind.CREATED,
                record.key,
                route=route.path,
                offset=0,
                total=record.total,
                principal=principal,
                metadata=metadata,
            )
        )
        return record

    async def _resumable(
        self, route: StreamRoute, request: StreamRequest, principal: str | None
    ) -> StreamRecord | Refused:
        assert request.key is not None
        record = await self.store.get(request.key)
        if record is None:
            return Refused(Status.GONE, "stream key unknown or expired")
        if record.route != route.path:
            return Refused(Status.CONFLICT, f"stream belongs to route {record.route}")
        if record.total != request.total:
            return Refused(Status.CONFLICT, f"stream total is {record.total}, not {request.total}")
        if not may_access(record.principal, principal):
            return Refused(Status.FORBIDDEN, "stream belongs to someone else")
        return record

    async def _take_lease(
        self, key: str, owner: str, stop: tuple[Status, str] | None = None, *, resume: bool = False
    ) -> Refused | None:
        """Own ``key``; a connection streaming on it (here or in another instance) is told to
        stop first, and its durable offset is settled before we go on (PROTOCOL §3.4). A
        ``resume`` that took the stream from another owner counts as a takeover."""
        deadline = time.monotonic() + max(
            self.settings.takeover_timeout, self.settings.lease_seconds
        )
        asked: set[str] = set()
        took_over = False
        while True:
            holder = await self.store.acquire_lease(key, owner, self.settings.lease_seconds)
            if holder is None:
                if took_over and resume:
                    metrics.taken_over()
                return None
            instance = holder.partition(":")[0]
            if instance == self.instance:
                older = self.live.sessions.get(key)
                if older is not None:
                    took_over = True
                    log.info("stream %s: taking over from %s", key, older.owner)
                    await older.stop(
                        *(
                            stop
                            or (Status.CONFLICT, "superseded by a newer request for this stream")
                        )
                    )
            elif holder and holder not in asked:
                log.info("stream %s: asking instance %s to let go", key, instance)
                # A connection's lease (``<instance>:<n>``), not a sweeper's passing one.
                took_over = took_over or holder.rpartition(":")[2].isdigit()
                asked.add(holder)
                await self.store.request_takeover(instance, key)
            if time.monotonic() > deadline:
                return Refused(Status.UNAVAILABLE, "stream is busy on another connection")
            await asyncio.sleep(_POLL)

    async def _grant(
        self,
        route: StreamRoute,
        request: StreamRequest,
        record: StreamRecord,
        owner: str,
        principal: str | None,
        client: str,
        at_most: int | None = None,
    ) -> Accepted:
        if request.key is not None:
            # Reread under the lease: the previous owner may have checkpointed after we looked.
            record = await self.store.get(record.key) or record
        buffer_size = route.clamp_buffer(request.buffer_size)
        if record.state is not StreamState.ACTIVE:
            # Complete (the result is repeated), or finalized (the handler runs again).
            session = self._session(record, route, NoWriter(record.total), owner, 0, client, None)
            return Accepted(session, record.total, 0, buffer_size)
        writer: PartWriter
        if request.key is not None and await self.storage.is_finished(record.key):
            # Finalized (every byte fsynced, then renamed) before a crash that came before
            # the record said so: only the completion (handler, result) is left to do.
            writer = NoWriter(record.total)
        else:
            writer = await self.storage.open_part(record.key, record.offset)
        try:
            if writer.offset != record.offset:
                if writer.offset < record.offset:
                    log.warning(
                        "stream %s: part holds %d bytes, record said %d; resuming from the part",
                        record.key,
                        writer.offset,
                        record.offset,
                    )
                await self.store.checkpoint(record.key, owner, writer.offset, force=True)
            offset = writer.offset
            window = await self._window(
                route, record, offset, principal, request.key is not None, at_most
            )
        except BaseException:
            await writer.close()
            raise
        # No await from the end of _window to here: the space it reserved passes to the
        # session (see LiveStreams.promised).
        hasher = self.live.take_hasher(record.key, offset)
        session = self._session(record, route, writer, owner, window, client, hasher)
        log.debug(
            "stream %s: window of %d bytes from offset %d granted (B=%d)",
            record.key,
            window,
            offset,
            buffer_size,
        )
        return Accepted(session, offset, window, buffer_size)

    async def _window(
        self,
        route: StreamRoute,
        record: StreamRecord,
        offset: int,
        principal: str | None,
        resume: bool,
        at_most: int | None = None,
    ) -> int:
        """How many bytes to grant from ``offset``: what remains, within the route's limit
        and what the client has now, the room not promised to other windows, and the
        accept hook's answer."""
        remaining = record.total - offset
        window = remaining
        if route.max_window is not None:
            window = min(window, route.max_window)
        if at_most is not None:
            window = min(window, at_most)
        if not remaining:
            return 0
        # Reserved from here until the session holds it: no await may run between
        # measuring the room and reserving it, or two streams get the same space.
        room = self.storage.free_space() - self.settings.storage_reserve - self.live.promised()
        window = min(window, room)
        if window < 1:
            raise RouteError(Status.INSUFFICIENT_STORAGE, "no free space for this stream now")
        if route.accept is None:
            return window
        reserved = window
        self.live.pending_grants += reserved
        try:
            offer = StreamOffer(
                route.path,
                record.key,
                record.total,
                offset,
                record.metadata,
                principal,
                resume,
                room,
            )
            granted = await route.accept(offer)
        finally:
            self.live.pending_grants -= reserved
        if granted is not None:
            window = min(window, granted)
        if window < 1:
            raise RouteError(Status.INSUFFICIENT_STORAGE, "no capacity for this stream now")
        return window

    def _session(
        self,
        record: StreamRecord,
        route: StreamRoute,
        writer: PartWriter,
        owner: str,
        window: int,
        client: str,
        hasher: _Hash | None,
    ) -> StreamSession:
        session = StreamSession(self._host, record, route, writer, owner, window, hasher, client)
        self.live.add(session)
        return session
