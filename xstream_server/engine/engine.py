"""``StreamEngine``: one object that owns streams for every transport (see the package's
docstring for the API and how a transport plugs in)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

from ..app import App, RequestRoute, RouteError, StreamRoute
from ..protocol import Request, Status, StreamRequest
from ..settings import ServerSettings
from ..state import StateStore, StateUnavailable, StreamRecord, StreamState
from ..storage import Storage
from .completion import Completer
from .dispatch import RequestDispatcher
from .maintenance import Maintenance
from .negotiation import Negotiator
from .outcomes import Accepted, Completion, Refused, Response, StreamStatus
from .registry import LiveStreams
from .session import StreamSession
from .window import RawWindow, ReadControl

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
        self._completer = Completer(store, storage)
        self._negotiator = Negotiator(self, app, store, storage, settings, self.live, self.instance)
        self._dispatcher = RequestDispatcher(app, self.status)
        self.maintenance = Maintenance(store, storage, settings, self.live, self.instance)
        self._shutting_down = False
        self._settling: set[asyncio.Task[None]] = set()
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
        self, request: StreamRequest, client: str, *, offset: int | None = None
    ) -> Accepted | Refused:
        """Negotiate a window: a new stream (no key) or a resume (taking the stream over from
        an older connection if need be). ``offset``, when the client states one (tus
        PATCH), must be the durable offset, else 409."""
        if self._shutting_down:
            return Refused(Status.UNAVAILABLE, "server shutting down")
        return await self._negotiator.open(request, client, offset=offset)

    def receive(self, accepted: Accepted, reading: ReadControl) -> RawWindow:
        """The receiving side of a granted window (``Accepted.window`` > 0)."""
        if accepted.window < 1:
            raise ValueError("a window of no bytes has nothing to receive: finish its session")
        return RawWindow(accepted, reading, self._track, self._shared_buffer)

    async def create_stream(self, request: StreamRequest, client: str) -> StreamStatus | Refused:
        """Create a stream without granting a window (tus creation); its key is in the
        status. Bytes come later through ``open_stream`` with the key."""
        if self._shutting_down:
            return Refused(Status.UNAVAILABLE, "server shutting down")
        created = await self._negotiator.create(request, client)
        return created if isinstance(created, Refused) else _status_of(created)

    async def terminate(self, key: str, authorization: str | None = None) -> Refused | None:
        """Delete a stream and its stored bytes (tus termination); a window open on it is
        stopped first. None when done; 410 when unknown, 403 when someone else's."""
        if self._shutting_down:
            return Refused(Status.UNAVAILABLE, "server shutting down")
        found = await self.status(key, authorization)
        if isinstance(found, Refused):
            return found
        return await self._negotiator.terminate(key)

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
        """The durable bytes of a stream from ``offset`` (downloads); raises ``LookupError``
        for a stream that is unknown or not the caller's."""
        found = await self.status(key, authorization)
        if isinstance(found, Refused):
            raise LookupError(found.message)
        position = offset
        while position < found.offset:
            chunk = await self.storage.read(
                key, position, min(_READ_CHUNK, found.offset - position)
            )
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    # ---- what sessions call (SessionHost) -----------------------------------------------
    async def complete(self, session: StreamSession) -> Completion:
        return await self._completer.complete(session)

    def session_ended(self, session: StreamSession) -> None:
        self.live.remove(session)

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
        return await self.maintenance.sweep(now)

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
            if principal != record.principal:
                return Refused(Status.FORBIDDEN, "stream belongs to someone else")
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
    )
