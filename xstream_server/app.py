"""The framework API: an ``App`` holds routes; a backend developer registers handlers on it.

Three kinds of route:

* request routes: one packet in, one packet out (``@app.request("/echo")``);
* stream routes: the client negotiates a raw-byte upload; the handler runs once the whole
  stream is stored, with the finished file (``@app.stream("/upload-file", ...)``);
* pull routes: the client downloads content the route names (``@app.pull("/get")``).

Downloads (PROTOCOL §5): a route that offers content has a *content hook*, which maps a
``PullContext`` (key, metadata, principal of the pull) to ``StreamContent`` — the bytes of
a stored stream — or refuses with ``RouteError``. A stream route takes one with
``content=``; ``@app.pull`` registers a route that only serves content.

A handler answers with a ``Reply`` or a plain value: ``bytes`` (a bytes payload), ``str``
(text) or anything else JSON can encode (json). It refuses with ``RouteError``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .events import EventHook, StreamEvent
from .protocol import DataFormat, Status

if TYPE_CHECKING:
    from .engine import StreamEngine
    from .settings import ServerSettings
    from .state import StateStore
    from .storage import Storage

__all__ = [
    "App",
    "CompletedUpload",
    "ConfigurationError",
    "ContentHook",
    "CreateDecision",
    "CreateOffer",
    "HandlerResult",
    "Notification",
    "NotificationFeed",
    "PullContext",
    "PullRoute",
    "Reply",
    "RequestContext",
    "RequestRoute",
    "RouteError",
    "Services",
    "StreamContent",
    "StreamEvent",
    "StreamOffer",
    "StreamRoute",
    "encode_reply",
]

MiB = 1024 * 1024


class RouteError(Exception):
    """Raised by a handler or hook to answer with a non-zero status."""

    def __init__(self, status: Status | int, message: str | None = None) -> None:
        self.status = Status(status)
        self.message = message or self.status.phrase
        super().__init__(self.message)


class ConfigurationError(ValueError):
    """Raised by an app module at import for a bad setting (an environment variable, say):
    ``xstream-server`` then exits at start with the message, and no traceback."""


@dataclass(frozen=True, slots=True)
class Notification:
    """A packet the server pushes to a client without being asked (PROTOCOL §8)."""

    id: str  # ordered and unique per principal
    kind: str  # the ``notification`` header: ``stream-offer``, ``stream-accepted``, ...
    payload: Any  # a JSON value
    sender: str | None = None  # the ``from`` header


class NotificationFeed(Protocol):
    """Notifications for one connection, as a request handler hands them to the transport
    (``Reply(feed=...)``). The transport opens the feed once the reply is written, takes
    batches while the connection lives, and closes it when the connection ends. Transports
    without server pushes (HTTP) never open it."""

    async def open(self) -> None: ...

    async def next_batch(self) -> Sequence[Notification]:
        """Wait until at least one notification is due; return those due, in order."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    payload: bytes | str | Any = b""
    data_format: DataFormat | None = None
    headers: Mapping[str, str | int] = field(default_factory=dict)
    # Turns the connection into one that also receives notifications (a monitor, §8).
    feed: NotificationFeed | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """What a start-up hook gets: the server's own parts, for routes that need more than
    their request (presence and inboxes kept in the state store, streams discarded...)."""

    settings: ServerSettings
    redis_url: str
    store: StateStore
    storage: Storage
    engine: StreamEngine


HandlerResult = Reply | bytes | str | dict[str, Any] | list[Any] | None


def encode_reply(result: HandlerResult) -> tuple[bytes, DataFormat, Mapping[str, str | int]]:
    """Payload bytes, format and extra headers of what a handler returned."""
    if not isinstance(result, Reply):
        result = Reply(result)
    value, fmt = result.payload, result.data_format
    if isinstance(value, bytes):
        return value, fmt or DataFormat.BYTES, result.headers
    if isinstance(value, str) and fmt in (None, DataFormat.TEXT):
        return value.encode(), DataFormat.TEXT, result.headers
    if value is None:
        return b"", fmt or DataFormat.BYTES, result.headers
    return json.dumps(value, separators=(",", ":")).encode(), DataFormat.JSON, result.headers


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a request handler receives. ``content`` is the decoded payload: ``bytes``, the
    ``str`` of a text payload, or the value of a JSON payload (already validated)."""

    route: str
    id: str | None
    data_format: DataFormat
    payload: bytes
    content: Any
    metadata: Mapping[str, str]
    principal: str | None


@dataclass(frozen=True, slots=True)
class StreamOffer:
    """What a stream route's accept hook sees before a window is granted."""

    route: str
    key: str
    total: int
    offset: int
    metadata: Mapping[str, str]
    principal: str | None
    resume: bool
    free_space: int  # bytes the storage can still take

    @property
    def remaining(self) -> int:
        return self.total - self.offset


@dataclass(frozen=True, slots=True)
class CompletedUpload:
    """A finished stream, as the completion handler receives it.

    The handler runs at least once: when it raises (anything but ``RouteError``) the client
    is answered 503 and the next resume runs it again, up to the route's
    ``completion_attempts`` runs, after which a 500 is the stream's final result; when the
    server dies while it runs, the next resume runs it again too. Make it idempotent
    (``key`` names the stream; ``attempt`` counts the runs).

    ``path`` is the finished file, and the handler may do with it what it likes: read it,
    move or rename it (on the same file system, ``os.replace`` is atomic), delete it. The
    server records the stream as finished, with ``size`` and ``sha256``, before the handler
    runs, so it never needs the file again to answer a client; but a run after a failed or
    interrupted one gets the same ``path``, which no longer exists if an earlier run moved
    it away (a json/text stream's ``content`` is then unavailable and that run fails). If
    no run succeeds, the file left at ``path`` is deleted when the stream expires; after a
    successful one the server never touches it: it belongs to the app.
    """

    key: str
    route: str
    size: int
    path: Path
    metadata: Mapping[str, str]
    sha256: str
    data_format: DataFormat
    principal: str | None
    # The decoded content of json/text streams (None for bytes streams).
    content: Any = None
    attempt: int = 1  # 1 on the first run of the handler for this stream, then 2, ...


@dataclass(frozen=True, slots=True)
class PullContext:
    """What a content hook sees of a pull (``x-stream-pull: O:B``)."""

    route: str
    key: str | None  # the pull's x-stream-key, if any
    offset: int  # bytes the client holds already
    metadata: Mapping[str, str]
    principal: str | None  # from the route's auth policy


@dataclass(frozen=True, slots=True)
class StreamContent:
    """The bytes of the stored stream ``key``, as content of a pull.

    Only durable bytes are ever sent. ``live`` False: the stream must be complete (else
    404). ``live`` True: a stream still being uploaded is served as it is uploaded, its
    bytes sent as soon as they are durable, until its total (a live relay).

    Who may pull: ``readers`` None keeps the stream's own rule (its principal only, or
    anyone holding the key of a stream without one); a collection of principals lets in
    exactly those instead (an addressee, say). Others get 403.

    ``route``, when given, is the route the stream must have been uploaded on (else 404).
    """

    key: str
    live: bool = False
    readers: Collection[str] | None = None
    route: str | None = None


@dataclass(frozen=True, slots=True)
class CreateOffer:
    """A new stream, as a ``before_create`` hook sees it before anything is stored."""

    route: str
    total: int  # the most it may hold when ``length_deferred``
    metadata: Mapping[str, str]
    principal: str | None
    data_format: DataFormat
    length_deferred: bool = False


@dataclass(frozen=True, slots=True)
class CreateDecision:
    """What a ``before_create`` hook may change: a shorter life (``expiry`` seconds of
    inactivity, at most the route's), other metadata. Refusing is raising ``RouteError``."""

    expiry: float | None = None
    metadata: Mapping[str, str] | None = None


BeforeCreateHook = Callable[[CreateOffer], Awaitable[CreateDecision | None]]
RequestHandler = Callable[[RequestContext], Awaitable[HandlerResult]]
CompletionHandler = Callable[[CompletedUpload], Awaitable[HandlerResult]]
# Returns how many bytes it grants now (None: everything that remains); raises RouteError.
AcceptHook = Callable[[StreamOffer], Awaitable[int | None]]
# Maps the `authorization` header (None when absent) to a principal; raises RouteError(401).
AuthPolicy = Callable[[str | None], Awaitable[str | None]]
# Extra fields of ``/stream-status`` for the streams of one route (``key`` → fields).
StatusFields = Callable[[str], Awaitable[Mapping[str, Any]]]
# Run once the server's parts are up (start) or before they go down (stop).
LifecycleHook = Callable[[Services], Awaitable[None]]
# What a pull means on a route: the content to send, or RouteError (404, 403...).
ContentHook = Callable[[PullContext], Awaitable[StreamContent]]


@dataclass(frozen=True, slots=True)
class RequestRoute:
    path: str
    handler: RequestHandler
    max_payload: int | None = None
    auth: AuthPolicy | None = None


@dataclass(frozen=True, slots=True)
class StreamRoute:
    path: str
    on_complete: CompletionHandler
    max_size: int = 1 << 40
    min_buffer: int = 4 * 1024
    max_buffer: int = 1 * MiB
    max_window: int | None = None
    accept: AcceptHook | None = None
    auth: AuthPolicy | None = None
    expiry: float | None = None  # seconds; None: the server's default
    # json/text streams are decoded for the handler; larger ones are refused with 413. The
    # decoding runs in a thread, a top-level JSON array or object in pieces of ~64 KiB, so
    # other connections wait at most a few ms at a time (about 0.3 s of CPU per 16 MiB on a
    # 2-core test machine). One huge nested element or string is decoded in one go and
    # holds the GIL that long: for such documents prefer bytes, decoded in a process of your own.
    max_decoded_size: int = 16 * MiB
    # Runs of the completion handler before its failure (500) is the stream's final result.
    completion_attempts: int = 3
    # What a pull on this route sends (PROTOCOL §5); None: pulls get 405.
    content: ContentHook | None = None

    def __post_init__(self) -> None:
        if self.completion_attempts < 1:
            raise ValueError("completion_attempts must be at least 1")

    def clamp_buffer(self, requested: int) -> int:
        return max(self.min_buffer, min(self.max_buffer, requested))


@dataclass(frozen=True, slots=True)
class PullRoute:
    """A route that only serves downloads: every pull goes to ``content``."""

    path: str
    content: ContentHook
    auth: AuthPolicy | None = None
    min_buffer: int = 4 * 1024
    max_buffer: int = 1 * MiB

    def clamp_buffer(self, requested: int) -> int:
        return max(self.min_buffer, min(self.max_buffer, requested))


Route = RequestRoute | StreamRoute | PullRoute
_H = TypeVar("_H", bound=Callable[..., Awaitable[HandlerResult]])


class App:
    """A set of routes. ``xstream-server --app module:attribute`` serves one."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.status_fields: dict[str, StatusFields] = {}
        self.on_start: list[LifecycleHook] = []
        self.on_stop: list[LifecycleHook] = []
        self.event_hooks: list[EventHook] = []
        self.before_create_hooks: list[BeforeCreateHook] = []

    def add_status_fields(self, path: str, fields: StatusFields) -> None:
        """Add ``fields(key)`` to what ``/stream-status`` says about streams of ``path``."""
        self.status_fields[path] = fields

    def on_event(self, hook: EventHook) -> EventHook:
        """Register ``async def hook(event: StreamEvent)``, called for every lifecycle event
        of every stream this process serves (see ``xstream_server.events``), in order, off
        the upload path. A hook that raises is logged; the next event comes all the same."""
        self.event_hooks.append(hook)
        return hook

    def before_create(self, hook: BeforeCreateHook) -> BeforeCreateHook:
        """Register ``async def hook(offer: CreateOffer) -> CreateDecision | None``, run
        before a new stream is stored (as tusd's pre-create hook): raise ``RouteError`` to
        refuse it with that status, or return a ``CreateDecision`` to shorten its life or
        change its metadata. Any other exception refuses it with 500 and is logged."""
        self.before_create_hooks.append(hook)
        return hook

    def add_route(self, route: Route) -> None:
        if not route.path.startswith("/"):
            raise ValueError(f"route {route.path!r} must start with '/'")
        if route.path in self.routes:
            raise ValueError(f"route {route.path!r} is registered twice")
        self.routes[route.path] = route

    def request(
        self, path: str, *, max_payload: int | None = None, auth: AuthPolicy | None = None
    ) -> Callable[[_H], _H]:
        def register(handler: _H) -> _H:
            self.add_route(RequestRoute(path, handler, max_payload, auth))
            return handler

        return register

    def stream(
        self,
        path: str,
        *,
        max_size: int = 1 << 40,
        min_buffer: int = 4 * 1024,
        max_buffer: int = 1 * MiB,
        max_window: int | None = None,
        accept: AcceptHook | None = None,
        auth: AuthPolicy | None = None,
        expiry: float | None = None,
        max_decoded_size: int = 16 * MiB,
        completion_attempts: int = 3,
        content: ContentHook | None = None,
    ) -> Callable[[_H], _H]:
        if not 1 <= min_buffer <= max_buffer:
            raise ValueError("buffer bounds must satisfy 1 <= min_buffer <= max_buffer")
        if completion_attempts < 1:
            raise ValueError("completion_attempts must be at least 1")

        def register(handler: _H) -> _H:
            self.add_route(
                StreamRoute(
                    path,
                    handler,
                    max_size,
                    min_buffer,
                    max_buffer,
                    max_window,
                    accept,
                    auth,
                    expiry,
                    max_decoded_size,
                    completion_attempts,
                    content,
                )
            )
            return handler

        return register

    def pull(
        self,
        path: str,
        *,
        auth: AuthPolicy | None = None,
        min_buffer: int = 4 * 1024,
        max_buffer: int = 1 * MiB,
    ) -> Callable[[ContentHook], ContentHook]:
        """Register a route that serves downloads; the decorated hook says what a pull on
        it means (see ``StreamContent``)."""
        if not 1 <= min_buffer <= max_buffer:
            raise ValueError("buffer bounds must satisfy 1 <= min_buffer <= max_buffer")

        def register(hook: ContentHook) -> ContentHook:
            self.add_route(PullRoute(path, hook, auth, min_buffer, max_buffer))
            return hook

        return register

    def payload_limit(self, default: int) -> Callable[[Mapping[str, str]], int]:
        """The per-packet payload limit for the codec: the route's own, else ``default``."""

        def limit(headers: Mapping[str, str]) -> int:
            route = self.routes.get(headers.get("route", ""))
            if isinstance(route, RequestRoute) and route.max_payload is not None:
                return route.max_payload
            return default

        return limit
