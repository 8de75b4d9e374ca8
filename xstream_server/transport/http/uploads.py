"""The upload operations tus and the IETF draft share, on top of the engine: create a
stream, append a request body at a stated offset, look a stream up for a route.

Every offset they return is the engine's durable one (PROTOCOL §3.5): written, fsynced
and recorded before it is said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request

from ...app import StreamRoute
from ...engine import Accepted, Completion, PartCheck, Refused, StreamStatus
from ...protocol import DataFormat, Status, StreamRequest
from .body import receive_body
from .context import HttpContext, client_of
from .direct import body_tap_of

__all__ = [
    "Appended",
    "append",
    "concatenate",
    "create",
    "create_with_body",
    "lookup",
    "set_length",
    "stream_request",
]


@dataclass(frozen=True, slots=True)
class Appended:
    """After an append: the durable offset, and the engine's answer (``status`` other than
    OK when the window ended badly: a takeover, a shutdown, storage, the handler)."""

    offset: int
    total: int
    status: Status = Status.OK
    message: str | None = None
    headers: Mapping[str, str | int] = field(default_factory=dict)
    expires: float | None = None  # epoch seconds, for an incomplete stream
    client_left: bool = False
    # False when bytes of the body were left unread: the connection closes after the answer.
    body_read: bool = True

    @property
    def complete(self) -> bool:
        return self.offset == self.total


def stream_request(
    route: StreamRoute,
    request: Request,
    total: int,
    key: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> StreamRequest:
    return StreamRequest(
        route.path,
        None,
        DataFormat.BYTES,
        total,
        route.max_buffer,
        key=key,
        metadata=dict(metadata or {}),
        authorization=request.headers.get("authorization"),
    )


async def lookup(
    context: HttpContext, route: StreamRoute, key: str, request: Request
) -> StreamStatus | Refused:
    """``key``'s durable state, if it is a stream of ``route`` the caller may see."""
    engine = context.engine
    if engine is None:
        return Refused(Status.UNAVAILABLE, "server not started")
    found = await engine.status(key, request.headers.get("authorization"))
    if isinstance(found, StreamStatus) and found.route != route.path:
        return Refused(Status.NOT_FOUND, f"no upload {key} on {route.path}")
    return found


async def create(
    context: HttpContext,
    route: StreamRoute,
    request: Request,
    total: int | None,
    metadata: Mapping[str, str],
    *,
    partial: bool = False,
) -> StreamStatus | Refused:
    """A new upload of ``total`` bytes; None: its length is said later (up to the route's
    ``max_size``)."""
    engine = context.engine
    if engine is None:
        return Refused(Status.UNAVAILABLE, "server not started")
    return await engine.create_stream(
        stream_request(
            route, request, route.max_size if total is None else total, metadata=metadata
        ),
        client_of(request),
        length_deferred=total is None,
        partial=partial,
    )


async def concatenate(
    context: HttpContext,
    route: StreamRoute,
    request: Request,
    keys: list[str],
    metadata: Mapping[str, str],
) -> tuple[StreamStatus, Completion | None] | Refused:
    """A final upload of the partial ones ``keys``; no completion while some of them are
    unfinished (it completes when they are)."""
    engine = context.engine
    if engine is None:
        return Refused(Status.UNAVAILABLE, "server not started")
    return await engine.concatenate(
        stream_request(route, request, 1, metadata=metadata), client_of(request), keys
    )


async def set_length(
    context: HttpContext, request: Request, key: str, total: int
) -> StreamStatus | Refused:
    engine = context.engine
    if engine is None:
        return Refused(Status.UNAVAILABLE, "server not started")
    return await engine.set_length(key, total, request.headers.get("authorization"))


async def append(
    context: HttpContext,
    route: StreamRoute,
    request: Request,
    key: str,
    total: int,
    offset: int,
    check: PartCheck | None = None,
    at_most: int | None = None,
    body_end: Callable[[bool], None] | None = None,
) -> Appended | Refused:
    """The request's body, from ``offset`` (which must be the durable one, else 409); with
    ``check``, counted only if it matches (else 460, the offset unchanged). ``body_end``:
    see ``receive_body``."""
    engine = context.engine
    if engine is None:
        return Refused(Status.UNAVAILABLE, "server not started")
    opened = await engine.open_stream(
        stream_request(route, request, total, key),
        client_of(request),
        offset=offset,
        at_most=at_most,
    )
    if isinstance(opened, Refused):
        return opened
    return await _pour(context, request, opened, total, offset, check, body_end)


async def create_with_body(
    context: HttpContext,
    route: StreamRoute,
    request: Request,
    total: int | None,
    metadata: Mapping[str, str],
    *,
    partial: bool = False,
    check: PartCheck | None = None,
    at_most: int | None = None,
    body_end: Callable[[bool], None] | None = None,
) -> tuple[StreamStatus, Appended | Refused] | Refused:
    """``create`` and ``append`` from offset 0 in one: the new stream takes the request's
    body (creation-with-upload) through the window granted with its creation, so no
    second trip to find it and take its lease. A Refused alone: nothing was created."""
    engine = context.engine
    if engine is None:
        return Refused(Status.UNAVAILABLE, "server not started")
    made = await engine.create_and_open(
        stream_request(
            route, request, route.max_size if total is None else total, metadata=metadata
        ),
        client_of(request),
        length_deferred=total is None,
        partial=partial,
        at_most=at_most,
    )
    if isinstance(made, Refused):
        return made
    created, opened = made
    if isinstance(opened, Refused):
        return created, opened
    return created, await _pour(context, request, opened, created.total, 0, check, body_end)


async def _pour(
    context: HttpContext,
    request: Request,
    opened: Accepted,
    total: int,
    offset: int,
    check: PartCheck | None,
    body_end: Callable[[bool], None] | None,
) -> Appended | Refused:
    """The request's body into the granted window ``opened``; its settled outcome."""
    engine = context.engine
    assert engine is not None
    length = request.headers.get("content-length")
    if check is not None and length is not None and int(length) > opened.window:
        # Only a whole body can be verified, and the rest of this one would not be read.
        await opened.session.release()
        return Refused(
            Status.TOO_LARGE,
            f"a body with a checksum must fit the {opened.window} bytes granted now",
        )
    if opened.window:
        received = await receive_body(
            engine,
            opened,
            request.stream(),
            context.windows,
            check,
            context.stall_timeout,
            body_end,
            body_tap_of(request.scope),
        )
        completion, body_read = received.completion, received.body_read
    else:  # complete already: its result again, no bytes to take
        completion, body_read = await opened.session.finish(), length == "0"
    if completion is None:
        return Appended(offset, total, client_left=True)
    # The record's inactivity clock restarted at the checkpoint that just settled.
    expires = time.time() + opened.session.record.expiry
    return Appended(
        total - completion.missing,
        total,
        completion.status,
        completion.message,
        completion.headers,
        expires,
        body_read=body_read,
    )
