"""What the server does with requests and streams, independent of any transport.

A transport (TCP today; WebSocket and HTTP later) turns bytes into protocol events with the
sans-IO core and hands them here: ``handle_request`` answers an ordinary request;
``open_stream`` negotiates a stream (new or resumed, taking it over from an older connection
if need be) and returns a ``StreamSession`` for one granted window. The session writes the
raw bytes to storage, checkpoints them (write → fsync → record → report, PROTOCOL §3.5) and
produces the completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .app import (
    App,
    CompletedUpload,
    RequestContext,
    RequestRoute,
    RouteError,
    StreamOffer,
    StreamRoute,
    encode_reply,
)
from .protocol import DataFormat, Request, Status, StreamRequest
from .settings import ServerSettings
from .state import LeaseLost, StateStore, StateUnavailable, StoredResult, StreamRecord, StreamState
from .storage import Digest, PartWriter, Storage, StorageError, StorageFull

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "STATUS_ROUTE",
    "Accepted",
    "Completion",
    "Refused",
    "Response",
    "StreamService",
    "StreamSession",
    "status_of_error",
]

log = logging.getLogger("xstream.service")

_HASHER_CACHE: Final = 4096
STATUS_ROUTE: Final = "/stream-status"
_POLL: Final = 0.005  # seconds between attempts to take a lease that is being released


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    payload: bytes = b""
    data_format: DataFormat | None = None
    headers: Mapping[str, str | int] = field(default_factory=dict)
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    status: Status
    message: str


@dataclass(frozen=True, slots=True)
class Accepted:
    session: StreamSession
    offset: int
    window: int
    buffer_size: int


@dataclass(frozen=True, slots=True)
class Completion:
    """The completion packet: status, bytes still missing, and the result when complete."""

    key: str
    missing: int
    status: Status = Status.OK
    message: str | None = None
    payload: bytes = b""
    data_format: DataFormat | None = None
    headers: Mapping[str, str | int] = field(default_factory=dict)


StopCallback = Callable[[Status, str], None]


class StreamSession:
    """One granted window of one stream on one connection; it owns the stream's lease."""

    def __init__(
        self,
        service: StreamService,
        record: StreamRecord,
        route: StreamRoute,
        writer: PartWriter,
        owner: str,
        window: int,
        hasher: _Hash | None,
        client: str,
    ) -> None:
        self.service = service
        self.record = record
        self.route = route
        self.key = record.key
        self.owner = owner
        self.window = window
        self.client = client
        self._writer = writer
        self.durable = writer.offset
        self._window_end = writer.offset + window
        # Covers bytes [0, written) when the stream was hashed from its start in this process;
        # None when the prefix must be hashed from the part file at completion.
        self._hasher = hasher
        self._settings = service.settings
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_error: Exception | None = None
        self._released = asyncio.Event()
        self._on_stop: StopCallback | None = None

    @property
    def written(self) -> int:
        return self._writer.offset

    @property
    def unwritten(self) -> int:
        """Bytes granted to this window that have not reached storage yet."""
        return max(0, self._window_end - self._writer.offset)

    def on_stop(self, callback: StopCallback) -> None:
        """The transport's way to be told to end this window early (takeover, shutdown)."""
        self._on_stop = callback

    @property
    def inline(self) -> bool:
        """True when the transport may store bytes with ``write_now`` (no await)."""
        return self._writer.inline

    def write_now(self, data: memoryview) -> None:
        """Store raw bytes from the event loop (see ``inline``)."""
        if self._checkpoint_error is not None:
            raise self._checkpoint_error
        try:
            self._writer.write_now(data, self._hasher)
        except StorageError:
            self._hasher = None  # a partial write: the part is hashed at completion
            raise
        self._after_write()

    async def write(self, data: memoryview) -> None:
        """Store raw bytes through the storage's thread pool."""
        if self._checkpoint_error is not None:
            raise self._checkpoint_error
        try:
            await self._writer.write(data, self._hasher)
        except StorageError:
            self._hasher = None  # a partial write: the part is hashed at completion
            raise
        self._after_write()

    def _after_write(self) -> None:
        """Start a checkpoint when the byte or time cadence says so."""
        if (
            self.written - self.durable >= self._settings.checkpoint_bytes
            or time.monotonic() - self._last_checkpoint >= self._settings.checkpoint_seconds
        ) and (self._checkpointing is None or self._checkpointing.done()):
            # In the background: writing goes on while the fsync runs.
            self._last_checkpoint = time.monotonic()
            self._checkpointing = asyncio.get_running_loop().create_task(
                self._checkpoint_to(self.written)
            )

    async def _checkpoint_to(self, offset: int) -> None:
        """write → fsync → record, for the bytes written before ``offset``."""
        try:
            await self._writer.sync()
            await self.service.store.checkpoint(self.key, self.owner, offset)
        except Exception as exc:
            self._checkpoint_error = exc
            return
        self.durable = max(self.durable, offset)

    async def _settle_background_checkpoint(self) -> None:
        if self._checkpointing is not None:
            await self._checkpointing
            self._checkpointing = None
        if self._checkpoint_error is not None:
            raise self._checkpoint_error

    async def checkpoint(self) -> None:
        """Settle: on return every byte written so far is durable (or an error is raised)."""
        await self._settle_background_checkpoint()
        self._last_checkpoint = time.monotonic()
        if self.written != self.durable:
            await self._checkpoint_to(self.written)
            if self._checkpoint_error is not None:
                raise self._checkpoint_error

    async def finish(self) -> Completion:
        """The window is in: make it durable, complete the stream if it was the last one."""
        if self.record.result is not None:
            await self.release()
            return completion_of(self.key, self.record.result)
        try:
            if self.written < self.record.total:
                await self.checkpoint()
                return Completion(self.key, self.record.total - self.durable)
            # The last window: the completion record (offset = total) is the checkpoint.
            await self._settle_background_checkpoint()
            await self._writer.sync()
            return await self.service._complete(self)
        except Exception as exc:
            return self._failure(exc)
        finally:
            await self.release()

    async def abandon(self, status: Status, message: str) -> Completion:
        """End the window early (client gone, timeout, takeover, shutdown): keep every byte
        that can be made durable and say how many are still missing."""
        try:
            await self.checkpoint()
        except Exception as exc:
            return self._failure(exc)
        finally:
            await self.release()
        return Completion(self.key, self.record.total - self.durable, status, message)

    def _failure(self, exc: BaseException) -> Completion:
        status, message = status_of_error(exc)
        if status == Status.SERVER_ERROR:
            log.error("stream %s failed", self.key, exc_info=exc)
        else:
            log.warning("stream %s: %s %s (%s)", self.key, int(status), message, exc)
        return Completion(self.key, self.record.total - self.durable, status, message)

    async def release(self) -> None:
        if self._released.is_set():
            return
        try:
            with contextlib.suppress(StorageError):
                await self._writer.close()
            with contextlib.suppress(StateUnavailable):
                await self.service.store.release_lease(self.key, self.owner)
        finally:
            self.service._session_ended(self)
            self._released.set()

    @property
    def hasher(self) -> _Hash | None:
        """The running sha256 of bytes [0, written), or None when the part has to be hashed
        from storage (the stream was resumed in another process, or a write failed)."""
        return self._hasher

    def stop_soon(self, status: Status, message: str) -> None:
        """Ask the owning transport to end this window (it answers ``status``)."""
        if self._on_stop is not None and not self._released.is_set():
            self._on_stop(status, message)

    async def stop(self, status: Status, message: str) -> None:
        """End this window, and wait until its bytes are settled and the lease is free."""
        self.stop_soon(status, message)
        try:
            await asyncio.wait_for(self._released.wait(), self._settings.takeover_timeout)
        except TimeoutError:
            log.warning("stream %s: owner did not let go in time; its lease is revoked", self.key)
            await self.release()


def status_of_error(exc: BaseException) -> tuple[Status, str]:
    if isinstance(exc, StorageFull):
        return Status.INSUFFICIENT_STORAGE, str(exc)
    if isinstance(exc, StateUnavailable):
        return Status.UNAVAILABLE, "state store unreachable"
    if isinstance(exc, LeaseLost):
        return Status.CONFLICT, "stream taken over by a newer request"
    if isinstance(exc, RouteError):
        return exc.status, exc.message
    if isinstance(exc, StorageError):
        return Status.SERVER_ERROR, str(exc)
    return Status.SERVER_ERROR, "internal error"


def _new_key() -> str:
    """144 random bits, URL-safe; never starting with '-', which a shell command line would
    take for an option (``xstream status KEY``)."""
    while (key := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return key


def _decode(fmt: DataFormat, payload: bytes) -> Any:
    if fmt is DataFormat.JSON:
        return json.loads(payload)
    if fmt is DataFormat.TEXT:
        return payload.decode("utf-8")
    return payload


class StreamService:
    def __init__(
        self, app: App, store: StateStore, storage: Storage, settings: ServerSettings
    ) -> None:
        self.app = app
        self.store = store
        self.storage = storage
        self.settings = settings
        self.instance = secrets.token_hex(8)
        self.sessions: dict[str, StreamSession] = {}
        self.shutting_down = False  # no new windows are granted once set
        self._per_client: Counter[str] = Counter()
        self._hashers: OrderedDict[str, tuple[int, _Hash]] = OrderedDict()
        self._serial = itertools.count(1)
        self._pending_grants = 0  # bytes of windows being granted (see _room)

    # ---- ordinary requests -------------------------------------------------------------
    async def handle_request(self, request: Request) -> Response:
        route = self.app.routes.get(request.route)
        if route is None and request.route == STATUS_ROUTE:
            return await self._stream_status(request)
        if route is None:
            return Response(Status.NOT_FOUND, message=f"no route {request.route}")
        if not isinstance(route, RequestRoute):
            return Response(Status.METHOD_NOT_ALLOWED, message="this route takes only streams")
        try:
            principal = await route.auth(request.authorization) if route.auth else None
            try:
                content = _decode(request.data_format, request.payload)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                return Response(
                    Status.BAD_REQUEST, message=f"payload is not valid {request.data_format}: {exc}"
                )
            context = RequestContext(
                request.route,
                request.id,
                request.data_format,
                request.payload,
                content,
                request.metadata,
                principal,
            )
            payload, fmt, headers = encode_reply(await route.handler(context))
        except RouteError as exc:
            return Response(exc.status, message=exc.message)
        except Exception:
            log.exception("handler of %s failed", request.route)
            return Response(Status.SERVER_ERROR, message="handler error")
        return Response(Status.OK, payload, fmt, headers)

    async def _stream_status(self, request: Request) -> Response:
        """The built-in ``/stream-status`` route: JSON ``{"key": K}`` in, the stream's
        route, total, durable offset and state out. An app may register its own instead."""
        try:
            key = json.loads(request.payload)["key"]
            if not isinstance(key, str):
                raise TypeError(key)
        except (ValueError, KeyError, TypeError, RecursionError):
            return Response(Status.BAD_REQUEST, message='payload must be JSON {"key": "<key>"}')
        try:
            record = await self.store.get(key)
            if record is None:
                return Response(Status.GONE, message="stream key unknown or expired")
            route = self.app.routes.get(record.route)
            if (
                isinstance(route, StreamRoute)
                and route.auth is not None
                and await route.auth(request.authorization) != record.principal
            ):
                return Response(Status.FORBIDDEN, message="stream belongs to someone else")
        except RouteError as exc:
            return Response(exc.status, message=exc.message)
        except StateUnavailable:
            return Response(Status.UNAVAILABLE, message="state store unreachable")
        info = {
            "key": key,
            "route": record.route,
            "total": record.total,
            "offset": record.offset,
            "state": record.state.value,
            "expires": round(record.updated + record.expiry, 3)
            if record.state is StreamState.ACTIVE
            else None,
        }
        return Response(Status.OK, json.dumps(info).encode(), DataFormat.JSON)

    # ---- streams -----------------------------------------------------------------------
    async def open_stream(self, request: StreamRequest, client: str) -> Accepted | Refused:
        if self.shutting_down:
            return Refused(Status.UNAVAILABLE, "server shutting down")
        route = self.app.routes.get(request.route)
        if route is None:
            return Refused(Status.NOT_FOUND, f"no route {request.route}")
        if not isinstance(route, StreamRoute):
            return Refused(Status.METHOD_NOT_ALLOWED, "this route does not take streams")
        try:
            return await self._open(route, request, client)
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

    async def _open(
        self, route: StreamRoute, request: StreamRequest, client: str
    ) -> Accepted | Refused:
        principal = await route.auth(request.authorization) if route.auth else None
        if self._per_client[client] >= self.settings.max_streams_per_client:
            return Refused(Status.TOO_MANY_STREAMS, "too many concurrent streams for this client")
        owner = f"{self.instance}:{next(self._serial)}"
        if request.key is None:
            record = await self._create(route, request, principal, owner)
        else:
            found = await self._resumable(route, request, principal)
            if isinstance(found, Refused):
                return found
            record = found
            refused = await self._take_lease(record.key, owner)
            if refused is not None:
                return refused
        try:
            return await self._grant(route, request, record, owner, principal, client)
        except BaseException:
            with contextlib.suppress(StateUnavailable):
                await self.store.release_lease(record.key, owner)
            raise

    async def _create(
        self, route: StreamRoute, request: StreamRequest, principal: str | None, owner: str
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
        now = time.time()
        record = StreamRecord(
            key=_new_key(),
            route=route.path,
            total=request.total,
            offset=0,
            buffer_size=route.clamp_buffer(request.buffer_size),
            data_format=request.data_format.value,
            created=now,
            updated=now,
            expiry=route.expiry or self.settings.stream_expiry,
            metadata=dict(request.metadata),
            principal=principal,
            checksum=request.checksum,
        )
        await self.store.create(record, owner)
        log.debug("stream %s created on %s: %d bytes", record.key, route.path, record.total)
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
        if record.principal != principal:
            return Refused(Status.FORBIDDEN, "stream belongs to someone else")
        return record

    async def _take_lease(self, key: str, owner: str) -> Refused | None:
        """Own ``key``; a connection streaming on it (here or in another instance) is told to
        stop first, and its durable offset is settled before we go on (PROTOCOL §3.4)."""
        deadline = time.monotonic() + max(
            self.settings.takeover_timeout, self.settings.lease_seconds
        )
        asked: set[str] = set()
        while True:
            holder = await self.store.acquire_lease(key, owner, self.settings.lease_seconds)
            if holder is None:
                return None
            instance = holder.partition(":")[0]
            if instance == self.instance:
                older = self.sessions.get(key)
                if older is not None:
                    log.info("stream %s: taking over from %s", key, older.owner)
                    await older.stop(
                        Status.CONFLICT, "superseded by a newer request for this stream"
                    )
            elif holder and holder not in asked:
                log.info("stream %s: asking instance %s to let go", key, instance)
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
    ) -> Accepted:
        if request.key is not None:
            # Reread under the lease: the previous owner may have checkpointed after we looked.
            record = await self.store.get(record.key) or record
        buffer_size = route.clamp_buffer(request.buffer_size)
        if record.state is StreamState.COMPLETE:
            session = self._session(record, route, _NoWriter(record.total), owner, 0, None, client)
            return Accepted(session, record.total, 0, buffer_size)
        writer: PartWriter
        if request.key is not None and await self.storage.is_finished(record.key):
            # Finalized (every byte fsynced, then renamed) before a crash that came before
            # the record said so: only the completion (handler, result) is left to do.
            writer = _NoWriter(record.total)
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
            remaining = record.total - offset
            window = remaining
            if route.max_window is not None:
                window = min(window, route.max_window)
            if remaining:
                # Reserved from here until the session holds it: no await may run between
                # measuring the room and reserving it, or two streams get the same space.
                room = self._room()
                window = min(window, room)
                if window < 1:
                    raise RouteError(
                        Status.INSUFFICIENT_STORAGE, "no free space for this stream now"
                    )
                reserved = window
                self._pending_grants += reserved
                try:
                    if route.accept is not None:
                        offer = StreamOffer(
                            route.path,
                            record.key,
                            record.total,
                            offset,
                            record.metadata,
                            principal,
                            request.key is not None,
                            room,
                        )
                        granted = await route.accept(offer)
                        if granted is not None:
                            window = min(window, granted)
                        if window < 1:
                            raise RouteError(
                                Status.INSUFFICIENT_STORAGE, "no capacity for this stream now"
                            )
                finally:
                    self._pending_grants -= reserved
        except BaseException:
            await writer.close()
            raise
        hasher = self._take_hasher(record.key, offset)
        session = self._session(record, route, writer, owner, window, hasher, client)
        log.debug(
            "stream %s: window of %d bytes from offset %d granted (B=%d)",
            record.key,
            window,
            offset,
            buffer_size,
        )
        return Accepted(session, offset, window, buffer_size)

    def _room(self) -> int:
        """Bytes a new window may take: the free space, less the reserve kept for the
        server's own files (the state store's among them), less what windows granted
        before have yet to write."""
        promised = self._pending_grants + sum(s.unwritten for s in self.sessions.values())
        return self.storage.free_space() - self.settings.storage_reserve - promised

    def _session(
        self,
        record: StreamRecord,
        route: StreamRoute,
        writer: PartWriter,
        owner: str,
        window: int,
        hasher: _Hash | None,
        client: str,
    ) -> StreamSession:
        session = StreamSession(self, record, route, writer, owner, window, hasher, client)
        self.sessions[record.key] = session
        self._per_client[client] += 1
        return session

    def _session_ended(self, session: StreamSession) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        self._per_client[session.client] -= 1
        if self._per_client[session.client] <= 0:
            del self._per_client[session.client]
        hasher = session.hasher
        # The next window starts at the durable offset; the hash must end there too.
        if hasher is not None and session.durable == session.written < session.record.total:
            self._hashers[session.key] = (session.durable, hasher)
            self._hashers.move_to_end(session.key)
            while len(self._hashers) > _HASHER_CACHE:
                self._hashers.popitem(last=False)

    def _take_hasher(self, key: str, offset: int) -> _Hash | None:
        if offset == 0:
            return hashlib.sha256()
        cached = self._hashers.pop(key, None)
        if cached is not None and cached[0] == offset:
            return cached[1]
        return None

    async def _complete(self, session: StreamSession) -> Completion:
        """All bytes are durable: verify, finalize, run the route's handler, record the result."""
        record, route = session.record, session.route
        hasher = session.hasher
        sha256 = (
            hasher.hexdigest() if hasher else await self.storage.hash_part(record.key, record.total)
        )
        if record.checksum is not None and record.checksum != sha256:
            await self.storage.discard(record.key)
            await self.store.delete(record.key)
            log.warning("stream %s: checksum mismatch, discarded", record.key)
            return Completion(
                record.key,
                record.total,
                Status.CHECKSUM_MISMATCH,
                f"sha256 of the stored bytes is {sha256}, not the announced one",
            )
        path = await self.storage.finalize(record.key)
        fmt = DataFormat(record.data_format)
        status, message = Status.OK, None
        payload: bytes = b""
        reply_format: DataFormat | None = None
        extra: Mapping[str, str | int] = {}
        try:
            content = None
            if fmt is not DataFormat.BYTES:
                raw = await asyncio.to_thread(path.read_bytes)
                try:
                    content = _decode(fmt, raw)
                except (ValueError, RecursionError) as exc:
                    raise RouteError(
                        Status.BAD_REQUEST, f"stream is not valid {fmt}: {exc}"
                    ) from exc
            upload = CompletedUpload(
                record.key,
                record.route,
                record.total,
                path,
                record.metadata,
                sha256,
                fmt,
                record.principal,
                content,
            )
            payload, reply_format, extra = encode_reply(await route.on_complete(upload))
        except RouteError as exc:
            status, message = exc.status, exc.message
        except Exception:
            log.exception("completion handler of %s failed for %s", route.path, record.key)
            status, message = Status.SERVER_ERROR, "completion handler error"
        headers: dict[str, str | int] = dict(extra)
        if fmt is DataFormat.BYTES:
            headers["x-stream-checksum"] = f"sha256:{sha256}"
        if message is not None:
            headers["message"] = message
        result = StoredResult(
            int(status), headers, payload, (reply_format or DataFormat.BYTES).value
        )
        await self.store.complete(record.key, session.owner, result)
        log.info("stream %s complete: %d bytes, status %d", record.key, record.total, int(status))
        return completion_of(record.key, result)

    # ---- background work ----------------------------------------------------------------
    async def serve_takeovers(self) -> None:
        """Let go of streams that another instance's newer request wants."""
        async for key in self.store.takeover_requests(self.instance):
            session = self.sessions.get(key)
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
            sessions = list(self.sessions.values())
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

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """Delete expired streams, part files without a record, records without a part."""
        now = time.time() if now is None else now
        counts = {"expired": 0, "orphan_parts": 0, "orphan_records": 0}
        for key in await self.store.expired(now):
            if key in self.sessions:
                continue
            record = await self.store.get(key)
            if record is not None and record.state is StreamState.COMPLETE:
                await self.store.forget(key)  # its record expires by itself; files stay
                continue
            if record is not None and record.updated + record.expiry > now:
                await self.store.reschedule(key, record.updated + record.expiry)
                continue  # renewed since it was indexed
            await self.storage.discard(key)
            await self.store.delete(key)
            self._hashers.pop(key, None)
            counts["expired"] += 1
        for part in await self.storage.list_parts():
            if part.key in self.sessions or now - part.modified < self.settings.orphan_grace:
                continue
            if not await self.store.exists(part.key):
                await self.storage.discard(part.key)
                counts["orphan_parts"] += 1
        for key in await self.store.active_keys():
            if key in self.sessions:
                continue
            record = await self.store.get(key)
            if record is None:
                # Expired by its TTL a moment before its place in the index came due.
                await self.storage.discard(key)
                await self.store.forget(key)
                counts["expired"] += 1
            elif record.state is StreamState.COMPLETE:
                await self.store.forget(key)
            elif (
                record.state is StreamState.ACTIVE
                and now - record.updated >= self.settings.orphan_grace
                and await self.storage.part_size(key) is None
            ):
                await self.store.delete(key)
                counts["orphan_records"] += 1
        if any(counts.values()):
            log.info("sweeper: %s", counts)
        return counts


def completion_of(key: str, result: StoredResult) -> Completion:
    headers = dict(result.headers)
    message = headers.pop("message", None)
    return Completion(
        key,
        0,
        Status(result.status),
        None if message is None else str(message),
        result.payload,
        DataFormat(result.data_format),
        headers,
    )


class _NoWriter:
    """The writer of a window of zero bytes on a complete stream."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def inline(self) -> bool:
        return False

    def write_now(self, data: bytes | bytearray | memoryview, digest: Digest | None = None) -> None:
        raise StorageError("the stream is complete")

    async def write(
        self, data: bytes | bytearray | memoryview, digest: Digest | None = None
    ) -> None:
        raise StorageError("the stream is complete")

    async def sync(self) -> None:
        return None

    async def close(self) -> None:
        return None
