"""``StreamEngine``: one object that owns streams for every transport (see the package's
docstring for the API and how a transport plugs in)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Final

from .. import metrics
from ..app import (
    App,
    PullContext,
    PullRoute,
    RequestRoute,
    RouteError,
    StreamContent,
    StreamRoute,
)
from ..events import StreamEvents
from ..protocol import DataFormat, PullRequest, Request, Status, StreamRequest
from ..settings import ServerSettings
from ..state import StateStore, StateUnavailable, StreamRecord, StreamState
from ..storage import Storage, StorageError
from .access import may_access
from .completion import Completer
from .dispatch import RequestDispatcher
from .download import Download
from .maintenance import Maintenance
from .negotiation import Negotiator
from .outcomes import Accepted, Completion, Refused, Response, StreamStatus
from .registry import LiveStreams
from .session import StreamSession
from .window import PartCheck, RawWindow, ReadControl

__all__ = ["StreamEngine"]

log = logging.getLogger("xstream.engine")

_READ_CHUNK: Final = 1024 * 1024


class StreamEngine:
    def __init__(
        self, app: App, store: StateStore, storage: Storage, settings: ServerSettings
    ) -> None:
        self.app = app
        self.store = store
        self.storage = storage
        self.settings = settings
        self.instance = secrets.token_hex(8)
        self.live = LiveStreams()
        # Lifecycle events for the app's hooks and the Redis event stream (events.py).
        self.events = StreamEvents(app.event_hooks, self.instance)
        self._completer = Completer(store, storage, self.events)
        self._negotiator = Negotiator(self, app, store, storage, settings, self.live, self.instance)
        self._dispatcher = RequestDispatcher(app, self.status)
        self.maintenance = Maintenance(
            store, storage, settings, self.live, self.instance, self.events
        )
        self._shutting_down = False
        self._settling: set[asyncio.Task[None]] = set()
        self._pouring: set[str] = set()  # final streams being concatenated here
        # Raw bytes of inline windows are read here, one read at a time (see RawWindow).
        largest = max(
            (r.max_buffer for r in app.routes.values() if isinstance(r, StreamRoute)), default=0
        )
        self._shared_buffer = memoryview(bytearray(largest))

    # ---- what transports call (the Engine protocol) -------------------------------------
    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def payload_limit(self) -> Callable[[Mapping[str, str]], int]:
        return self.app.payload_limit(self.settings.max_payload)

    def largest_payload(self) -> int:
        """The largest payload any route takes in one packet."""
        return max(
            [self.settings.max_payload]
            + [
                r.max_payload
                for r in self.app.routes.values()
                if isinstance(r, RequestRoute) and r.max_payload is not None
            ]
        )

    async def handle_request(self, request: Request) -> Response:
        return await self._dispatcher.handle(request)

    async def open_stream(
        self,
        request: StreamRequest,
        client: str,
        *,
        offset: int | None = None,
        at_most: int | None = None,
    ) -> Accepted | Refused:
        """Negotiate a window: a new stream (no key) or a resume (taking the stream over from
        an older connection if need be). ``offset``, when the client states one (tus
        PATCH), must be the durable offset, else 409. ``at_most``: the client has no more
        than this many bytes now (a PATCH's Content-Length); the window is no larger."""
        if self._shutting_down:
            opened: Accepted | Refused = Refused(Status.UNAVAILABLE, "server shutting down")
        else:
            opened = await self._negotiator.open(request, client, offset=offset, at_most=at_most)
        if isinstance(opened, Refused):
            metrics.refused(opened.status)
        elif opened.offset:
            metrics.resumed()
        return opened

    def receive(
        self,
        accepted: Accepted,
        reading: ReadControl,
        check: PartCheck | None = None,
        *,
        transport: str | None = None,
    ) -> RawWindow:
        """The receiving side of a granted window (``Accepted.window`` > 0); with ``check``,
        its bytes count only if they match it (see ``PartCheck``). ``transport`` (``tcp``,
        ``websocket``, ``utp``, ``http``) labels the window's bytes in the metrics."""
        if accepted.window < 1:
            raise ValueError("a window of no bytes has nothing to receive: finish its session")
        window = RawWindow(accepted, reading, self._track, self._shared_buffer, check)
        if transport is not None:
            accepted.session.transport = transport
            metrics.stream_opened(transport)
        return window

    async def create_stream(
        self,
        request: StreamRequest,
        client: str,
        *,
        length_deferred: bool = False,
        partial: bool = False,
    ) -> StreamStatus | Refused:
        """Create a stream without granting a window (tus creation); its key is in the
        status. Bytes come later through ``open_stream`` with the key. With
        ``length_deferred`` (tus creation-defer-length) ``request.total`` is the most the
        stream may hold until ``set_length`` says how long it is. A ``partial`` stream (tus
        concatenation) runs no handler when complete: it is there to be ``concatenate``d."""
        if self._shutting_down:
            metrics.refused(Status.UNAVAILABLE)
            return Refused(Status.UNAVAILABLE, "server shutting down")
        created = await self._negotiator.create(
            request, client, length_deferred=length_deferred, partial=partial
        )
        if isinstance(created, Refused):
            metrics.refused(created.status)
            return created
        return _status_of(created)

    async def concatenate(
        self, request: StreamRequest, client: str, parts: Sequence[str]
    ) -> tuple[StreamStatus, Completion | None] | Refused:
        """A new stream on ``request.route`` made of partial streams, in order (tus
        concatenation, final upload). Their bytes are poured through windows of the new
        stream like any upload's, so it is hashed, checkpointed and completed (its handler
        run) the same way. ``request.total`` is ignored: the sum of the parts'.

        Parts may be unfinished (tus concatenation-unfinished): the final stream is created
        now and poured once its last part completes, in whichever process completes it;
        the completion is None then. A part that is unfinished can be waited for by one
        final stream only (409 for a second)."""
        if not parts:
            return Refused(Status.BAD_REQUEST, "no partial uploads to concatenate")
        found: list[StreamStatus] = []
        for key in parts:
            part = await self.status(key, request.authorization)
            if isinstance(part, Refused):
                return part
            if part.route != request.route or not part.partial:
                return Refused(Status.BAD_REQUEST, f"{key} is not a partial upload of this route")
            found.append(part)
        deferred = any(part.length_deferred for part in found)
        route = self.app.routes.get(request.route)
        most = route.max_size if isinstance(route, StreamRoute) else 0
        total = most if deferred else sum(part.total for part in found)
        whole = dataclasses.replace(request, total=total)
        created = await self._negotiator.create(
            whole, client, length_deferred=deferred, concat=tuple(parts)
        )
        if isinstance(created, Refused):
            return created
        key = created.key
        try:
            for part in found:
                if not part.complete:
                    answer = await self._wait_for(part.key, key)
                    if answer != "ok":
                        await self._negotiator.terminate(key)
                        if answer == "gone":
                            return Refused(Status.GONE, f"partial upload {part.key} is gone")
                        return Refused(
                            Status.CONFLICT,
                            f"another final upload waits for partial upload {part.key}",
                        )
        except StateUnavailable:
            return Refused(Status.UNAVAILABLE, "state store unreachable")
        # Every unfinished part now names this final stream, so the one completing last
        # pours it; if they all completed meanwhile, it is poured here.
        completion = await self._finish_final(key)
        status = await self.status(key, request.authorization)
        if isinstance(status, Refused):
            return status
        return status, completion

    async def _wait_for(self, part: str, final: str) -> str:
        """Note ``final`` on unfinished ``part`` (see ``StateStore.set_final``); a final
        stream noted there before that is gone since (terminated, expired) is replaced."""
        answer = await self.store.set_final(part, final)
        if answer == "taken":
            record = await self.store.get(part)
            earlier = record.final if record is not None else None
            if earlier is not None and not await self.store.exists(earlier):
                answer = await self.store.set_final(part, final, replacing=earlier)
        return answer

    async def _finish_final(self, key: str) -> Completion | None:
        """Pour final stream ``key`` from its parts if they are all complete; its completion,
        or None when it is not poured now (a part unfinished, or poured already or
        elsewhere). A pour that fails is logged; the final stream stays incomplete."""
        if key in self._pouring:
            return None
        self._pouring.add(key)
        try:
            return await self._pour(key)
        except Exception:
            log.exception("final stream %s: concatenating its parts failed", key)
            return None
        finally:
            self._pouring.discard(key)

    async def _pour(self, key: str) -> Completion | None:
        final = await self.store.get(key)
        if final is None or final.concat is None or final.state is StreamState.COMPLETE:
            return None
        parts: list[StreamStatus] = []
        for part_key in final.concat:
            part = await self.store.get(part_key)
            if part is None or part.state is not StreamState.COMPLETE:
                return None
            parts.append(_status_of(part))
        total = sum(part.total for part in parts)
        if final.length_deferred:
            refused = await self._negotiator.set_total(key, total)
            if refused is not None:
                log.warning("final stream %s: %s", key, refused.message)
                return None
        request = StreamRequest(
            final.route,
            None,
            DataFormat.BYTES,
            total,
            final.buffer_size,
            key=key,
            metadata=dict(final.metadata),
        )
        offset = final.offset
        while True:
            opened = await self._negotiator.open(request, "engine", offset=offset, trusted=True)
            if isinstance(opened, Refused):
                log.warning("final stream %s not poured: %s", key, opened.message)
                return None
            if not opened.window:
                return await opened.session.finish()
            window = self.receive(opened, _Unpaused())
            async for chunk in self._concatenated(parts, offset, opened.window):
                await window.write(chunk)
            completion = await window.result()
            if completion is None or completion.status != Status.OK or not completion.missing:
                return completion
            offset = total - completion.missing

    def _partial_completed(self, key: str) -> None:
        """Partial stream ``key`` is complete: the final stream waiting for it, if any,
        may be poured now."""

        async def pour_waiting() -> None:
            try:
                record = await self.store.get(key)
            except StateUnavailable:
                log.warning("partial stream %s complete, its final stream not checked", key)
                return
            if record is not None and record.final is not None:
                await self._finish_final(record.final)

        self._track(asyncio.get_running_loop().create_task(pour_waiting()))

    async def _concatenated(
        self, parts: Sequence[StreamStatus], offset: int, size: int
    ) -> AsyncIterator[bytes]:
        """``size`` bytes of the parts put end to end, from ``offset``."""
        start = 0
        for part in parts:
            end = start + part.total
            if offset < end and size > 0:
                # The caller checked the parts (their principal included): read them as
                # the engine, not as an anonymous client.
                part_bytes = self._download(
                    part.key, part.offset, max(0, offset - start), None, _READ_CHUNK, live=False
                )
                async for chunk in part_bytes.chunks(_READ_CHUNK):
                    piece = chunk[:size]
                    size -= len(piece)
                    yield piece
                    if size <= 0:
                        return
            start = end

    async def set_length(
        self, key: str, total: int, authorization: str | None = None
    ) -> StreamStatus | Refused:
        """Say the length of a stream created with a deferred one; its status after. 409
        when the length is known already (and differs) or below the stream's offset."""
        found = await self.status(key, authorization)
        if isinstance(found, Refused):
            return found
        try:
            refused = await self._negotiator.set_total(key, total)
        except StateUnavailable:
            return Refused(Status.UNAVAILABLE, "state store unreachable")
        return refused or await self.status(key, authorization)

    async def terminate(self, key: str, authorization: str | None = None) -> Refused | None:
        """Delete a stream and its stored bytes (tus termination); a window open on it is
        stopped first. None when done; 410 when unknown, 403 when someone else's."""
        if self._shutting_down:
            return Refused(Status.UNAVAILABLE, "server shutting down")
        found = await self.status(key, authorization)
        if isinstance(found, Refused):
            return found
        return await self._negotiator.terminate(key)

    async def discard(
        self, key: str, status: Status, message: str, *, finished: bool = True
    ) -> Refused | None:
        """A service operation for app code (no principal check): delete a stream, its part
        and (unless ``finished`` is False) its finished file. A window open on it in this
        process ends with ``status`` and ``message``; one in another process as in a
        takeover (409). None when done; 410 when unknown."""
        try:
            if not await self.store.exists(key):
                return Refused(Status.GONE, "stream key unknown or expired")
        except StateUnavailable:
            return Refused(Status.UNAVAILABLE, "state store unreachable")
        return await self._negotiator.terminate(key, (status, message), finished=finished)

    async def status(self, key: str, authorization: str | None = None) -> StreamStatus | Refused:
        """A stream's durable state; 410 when unknown, 403 when it is someone else's."""
        try:
            record = await self.store.get(key)
            if record is None:
                return Refused(Status.GONE, "stream key unknown or expired")
            refused = await self._check_principal(record, authorization)
        except StateUnavailable:
            return Refused(Status.UNAVAILABLE, "state store unreachable")
        return refused or _status_of(record)

    async def read(
        self, key: str, offset: int = 0, authorization: str | None = None
    ) -> AsyncIterator[bytes]:
        """The durable bytes of a stream from ``offset`` (HTTP downloads; all of them once
        it is complete), with the same principal rule as a resume; raises ``LookupError``
        for a stream that is unknown or not the caller's, ``DownloadFailed`` when its
        bytes vanish."""
        found = await self.status(key, authorization)
        if isinstance(found, Refused):
            raise LookupError(found.message)
        download = self._download(key, found.offset, offset, None, _READ_CHUNK, live=False)
        async for chunk in download.chunks(_READ_CHUNK):
            yield chunk

    async def open_download(self, request: PullRequest, client: str) -> Download | Refused:
        """Answer a pull (``x-stream-pull: O:B``): the route's auth policy names the
        principal, its content hook says which content is meant; then ``open_content``.
        Refusals: 404 (no route, no content, incomplete), 405 (the route offers none), 401/403
        (auth, someone else's), 410 (unknown or expired key), 416 (``O`` past the end)."""
        if self._shutting_down:
            return Refused(Status.UNAVAILABLE, "server shutting down")
        route = self.app.routes.get(request.route)
        if route is None:
            return Refused(Status.NOT_FOUND, f"no route {request.route}")
        hook = route.content if isinstance(route, StreamRoute | PullRoute) else None
        if hook is None or isinstance(route, RequestRoute):
            return Refused(Status.METHOD_NOT_ALLOWED, "this route offers nothing to pull")
        try:
            principal = await route.auth(request.authorization) if route.auth else None
            content = await hook(
                PullContext(request.route, request.key, request.offset, request.metadata, principal)
            )
        except RouteError as exc:
            return Refused(exc.status, exc.message)
        except Exception:
            log.exception("content hook of %s failed", request.route)
            return Refused(Status.SERVER_ERROR, "internal error")
        if not isinstance(content, StreamContent):
            log.error("content hook of %s returned %r, not StreamContent", route.path, content)
            return Refused(Status.SERVER_ERROR, "internal error")
        return await self.open_content(
            content.key,
            request.offset,
            live=content.live,
            principal=principal,
            readers=content.readers,
            buffer_size=route.clamp_buffer(request.buffer_size),
            route=content.route,
        )

    async def open_content(
        self,
        key: str,
        offset: int = 0,
        *,
        live: bool = False,
        principal: str | None = None,
        readers: Collection[str] | None = None,
        buffer_size: int = _READ_CHUNK,
        check_access: bool = True,
        route: str | None = None,
    ) -> Download | Refused:
        """Serve the stored stream ``key`` from ``offset``: only its durable bytes, the
        whole once complete; with ``live`` while it is still being uploaded, waiting for
        each checkpoint (a relay). ``principal`` must be let in by the stream's rule (or be
        one of ``readers``) unless ``check_access`` is off (the caller checked); with
        ``route``, the stream must have been uploaded on that route (else 404)."""
        try:
            record = await self.store.get(key)
        except StateUnavailable:
            return Refused(Status.UNAVAILABLE, "state store unreachable")
        if record is None:
            return Refused(Status.GONE, "stream key unknown or expired")
        if route is not None and record.route != route:
            return Refused(Status.NOT_FOUND, f"no upload {key} on {route}")
        if check_access and not may_access(record.principal, principal, readers):
            return Refused(Status.FORBIDDEN, "stream belongs to someone else")
        complete = record.state is not StreamState.ACTIVE
        if not complete and (not live or record.length_deferred):
            return Refused(
                Status.NOT_FOUND, f"upload incomplete: {record.offset} of {record.total} bytes"
            )
        if offset > record.total:
            return Refused(
                Status.RANGE_NOT_SATISFIABLE, f"offset {offset} is past the end ({record.total})"
            )
        if complete:
            try:  # the completion handler may have moved or deleted the file
                await self.storage.read(key, record.total, 0)
            except StorageError:
                return Refused(Status.GONE, "the content is no longer stored")
        if not complete:
            return self._download(key, record.total, offset, None, buffer_size, True, record.offset)
        return self._download(key, record.total, offset, record.sha256, buffer_size, live)

    def _download(
        self,
        key: str,
        total: int,
        offset: int,
        checksum: str | None,
        buffer_size: int,
        live: bool,
        durable: int | None = None,
    ) -> Download:
        return Download(
            key=key,
            total=total,
            offset=offset,
            buffer_size=buffer_size,
            checksum=checksum,
            live=live,
            available=total if durable is None else durable,
            store=self.store,
            storage=self.storage,
            streams=self.live,
        )

    # ---- what sessions call (SessionHost) -----------------------------------------------
    async def complete(self, session: StreamSession) -> Completion:
        completion = await self._completer.complete(session)
        if session.record.partial and completion.status == Status.OK and not completion.missing:
            self._partial_completed(session.key)
        return completion

    def session_ended(self, session: StreamSession) -> None:
        self.live.remove(session)
        if session.transport is not None:
            metrics.stream_closed(session.transport)

    def durable_advanced(self, session: StreamSession) -> None:
        self.live.notify(session.key)

    # ---- the server's side ---------------------------------------------------------------
    @property
    def sessions(self) -> dict[str, StreamSession]:
        """Streams with a window open in this process, by key."""
        return self.live.sessions

    def shut_down(self) -> None:
        """Grant no more windows: stream requests are answered 503 from now on."""
        self._shutting_down = True

    async def wait_settled(self, timeout: float) -> None:
        """Wait for windows still being settled (their bytes made durable)."""
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=timeout)

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        counts = await self.maintenance.sweep(now)
        metrics.swept(counts)
        return counts

    def _track(self, settling: asyncio.Task[None]) -> None:
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)

    async def _check_principal(
        self, record: StreamRecord, authorization: str | None
    ) -> Refused | None:
        route = self.app.routes.get(record.route)
        if isinstance(route, StreamRoute) and route.auth is not None:
            try:
                principal = await route.auth(authorization)
            except RouteError as exc:
                return Refused(exc.status, exc.message)
            except Exception:
                log.exception("auth policy of %s failed", route.path)
                return Refused(Status.SERVER_ERROR, "internal error")
            if not may_access(record.principal, principal):
                return Refused(Status.FORBIDDEN, "stream belongs to someone else")
        return None


class _Unpaused:
    """The reading tap of bytes the engine pours itself: written one chunk at a time."""

    def pause_reading(self, reason: str) -> None:
        return None

    def resume_reading(self, reason: str) -> None:
        return None


def _status_of(record: StreamRecord) -> StreamStatus:
    complete = record.state is StreamState.COMPLETE
    return StreamStatus(
        record.key,
        record.route,
        record.total,
        record.offset,
        complete,
        None if complete else record.updated + record.expiry,
        record.metadata,
        record.length_deferred,
        record.partial,
        record.concat,
        record.state is StreamState.FINALIZED,
        record.attempts,
    )
