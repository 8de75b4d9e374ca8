"""Resumable uploads: negotiate, send window after window, resume after drops, verify.

``Upload`` drives one stream to completion (PROTOCOL §3):

1. ``x-stream: T:B`` (with ``x-stream-key`` once the server granted one);
2. the accept reply gives the durable offset ``O`` and the window ``W`` (all of the rest,
   or a partial grant ``n``); exactly ``W`` raw bytes follow;
3. the completion packet reports how much is still missing; a partial grant leads back to
   step 1 on the same connection.

A dropped connection, a stall, or a transient status (408, 429, 503) is followed by a
reconnect after a backoff delay, and the upload resumes from the server's durable offset.
Only ``retry.max_retries`` reconnects in a row that bring no progress are allowed.

Two ways to stop, as uTP's ``close`` and ``destroy``: ``close()`` lets the granted window
finish and waits for the server's completion packet, so the server has confirmed every
byte that was sent; ``abort()`` drops the connection at once. Both leave the stream
resumable with ``key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .connection import (
    DEFAULT_PORT,
    ClientConnection,
    ClientResponse,
    ConnectionLostError,
    Transport,
    parse_address,
)
from .errors import (
    ConnectionFailedError,
    IntegrityError,
    RetryableServerError,
    ServerProtocolError,
    UploadAborted,
    UploadClosed,
    error_for_status,
)
from .progress import Progress, ProgressCallback, ProgressFeed
from .sources import DEFAULT_REPLAY_BUFFER, Source, StreamSource, UploadSource, open_source

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_ROUTE",
    "DEFAULT_SERVER",
    "KeyCallback",
    "RetryCallback",
    "RetryPolicy",
    "Upload",
    "UploadResult",
    "upload",
    "upload_sync",
]

DEFAULT_SERVER: Final = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_ROUTE: Final = "/upload-file"
DEFAULT_BUFFER_SIZE: Final = 1024 * 1024
# How long to wait for the reason when the server closed the connection mid-window.
_REASON_GRACE: Final = 2.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter. ``max_retries`` counts reconnects in a row that
    brought no progress; any progress starts the count again."""

    max_retries: int = 8
    initial_delay: float = 0.25
    max_delay: float = 15.0
    multiplier: float = 2.0
    jitter: float = 0.25  # ± this fraction of the delay

    def delay(self, retry: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(retry - 1, 0))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True, slots=True)
class UploadResult:
    """A completed stream: ``sha256`` is checked equal on both sides; ``payload`` is what
    the route's handler returned, decoded by its ``data-format``."""

    key: str
    size: int
    sha256: str
    payload: Any
    headers: Mapping[str, str] = field(repr=False)
    windows: int = 0  # accept replies received (partial grants and resumes add to it)
    reconnects: int = 0
    resumed_from: int = 0  # bytes the server already held when this run began


KeyCallback = Callable[[str], None]
# Told before each backoff delay: the retry number (1, 2, ...), the delay, what went wrong.
RetryCallback = Callable[[int, float, Exception], None]


class Upload:
    """One resumable upload. Run it with ``await upload.run()`` (or ``await upload``).

    ``source`` is a path, a binary file object, or an async iterator of ``bytes`` (then
    ``total`` is required; see ``sources`` for how far such a stream can resume). ``key``
    resumes a stream an earlier run started. ``on_key`` is called as soon as the server
    grants a key — store it to resume after the process dies. ``announce_checksum`` hashes
    the source before sending so the server can verify it too (costs one extra read before
    the first byte; otherwise the client hashes while sending and compares at the end).
    """

    def __init__(
        self,
        source: UploadSource,
        *,
        server: str = DEFAULT_SERVER,
        route: str = DEFAULT_ROUTE,
        total: int | None = None,
        key: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
        authorization: str | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        reply_timeout: float = 300.0,
        stall_timeout: float = 60.0,
        on_progress: ProgressCallback | None = None,
        on_key: KeyCallback | None = None,
        on_retry: RetryCallback | None = None,
        announce_checksum: bool = False,
        replay_buffer: int = DEFAULT_REPLAY_BUFFER,
        transport: Transport = "tcp",
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be ≥ 1")
        self._address = parse_address(server)
        self._route = route
        self._source: Source = open_source(
            source, total=total, name=name, replay_buffer=replay_buffer
        )
        if announce_checksum and isinstance(self._source, StreamSource):
            self._source.close()
            raise ValueError("announce_checksum needs a file: a one-pass source is hashed as sent")
        self._key = key
        self._metadata = dict(metadata or {})
        if self._source.name is not None:
            self._metadata.setdefault("name", self._source.name)
        self._authorization = authorization
        self._buffer_size = buffer_size
        self._retry = retry or RetryPolicy()
        self._connect_timeout = connect_timeout
        self._transport: Transport = transport
        self._reply_timeout = reply_timeout
        self._stall_timeout = stall_timeout
        self._on_key = on_key
        self._on_retry = on_retry
        self._announce_checksum = announce_checksum
        self._feed = ProgressFeed(self._source.total, on_progress)

        self._connection: ClientConnection | None = None
        self._started = False
        self._inner: asyncio.Task[UploadResult] | None = None
        self._close_requested = asyncio.Event()
        self._aborted = False
        self._done = asyncio.Event()
        self._result: UploadResult | None = None
        self._windows = 0
        self._reconnects = 0
        self._resumed_from = 0

    # -- what callers look at --------------------------------------------------------------

    @property
    def key(self) -> str | None:
        return self._key

    @property
    def total(self) -> int:
        return self._source.total

    @property
    def progress(self) -> Progress:
        return self._feed.current

    def progress_updates(self) -> ProgressFeed:
        """``async for p in upload.progress_updates()`` — snapshots until the upload ends."""
        return self._feed

    # -- running and stopping --------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, UploadResult]:
        return self.run().__await__()

    async def run(self) -> UploadResult:
        """Upload to the end and return the verified result. Raises ``UploadClosed`` or
        ``UploadAborted`` when stopped early, ``XStreamError`` for the server's refusals,
        ``ConnectionFailedError`` when the retries are used up."""
        if self._started:
            raise RuntimeError("an Upload runs once")
        self._started = True
        if self._aborted:
            self._source.close()
            raise UploadAborted("upload aborted before it started", self._key, 0)
        self._inner = asyncio.create_task(self._run())
        try:
            self._result = await self._inner
            return self._result
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._aborted and (current is None or not current.cancelling()):
                raise UploadAborted(
                    "upload aborted", self._key, self._feed.current.acknowledged
                ) from None
            raise
        finally:
            self._done.set()

    async def close(self) -> UploadResult | None:
        """Stop after the window in flight: the server confirms what was sent, then the
        connection closes. Returns the result if that window completed the stream."""
        self._close_requested.set()
        if self._started:
            await self._done.wait()
        return self._result

    def abort(self) -> None:
        """Drop the connection now. The server keeps its durable prefix; resume with ``key``."""
        self._aborted = True
        if self._connection is not None:
            self._connection.abort()
        if self._inner is not None:
            self._inner.cancel()

    # -- the engine ------------------------------------------------------------------------

    async def _run(self) -> UploadResult:
        source = self._source
        try:
            source.start()
            checksum = await source.sha256() if self._announce_checksum else None
            retries = 0
            acknowledged_before = self._feed.current.acknowledged
            while True:
                self._check_close()
                try:
                    response = await self._upload_on_new_connection(checksum)
                    break
                except (ConnectionLostError, RetryableServerError) as exc:
                    if self._connection is not None:
                        self._connection.abort()
                    acknowledged = self._feed.current.acknowledged
                    if acknowledged > acknowledged_before:
                        retries, acknowledged_before = 0, acknowledged
                    retries += 1
                    if retries > self._retry.max_retries:
                        if isinstance(exc, RetryableServerError):
                            raise
                        raise ConnectionFailedError(
                            f"gave up after {retries} attempts without progress: {exc}",
                            retries,
                        ) from exc
                    self._reconnects += 1
                    delay = self._retry.delay(retries)
                    if self._on_retry is not None:
                        self._on_retry(retries, delay, exc)
                    await self._backoff(delay)
            return await self._verified(response)
        finally:
            connection = self._connection
            current = asyncio.current_task()
            # Cancelled (Ctrl-C), perhaps while a reply is still due: waiting for it to
            # close cleanly would hold the caller for close()'s whole timeout.
            cancelled = current is not None and current.cancelling() > 0
            if connection is not None:
                if (
                    connection.is_open
                    and not connection.streaming
                    and not self._aborted
                    and not cancelled
                ):
                    await connection.close()
                else:
                    connection.abort()
            source.close()
            self._feed.finish()

    def _check_close(self) -> None:
        if self._close_requested.is_set():
            raise UploadClosed("upload closed", self._key, self._feed.current.acknowledged)

    async def _backoff(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._close_requested.wait()

    async def _upload_on_new_connection(self, checksum: str | None) -> ClientResponse:
        host, port = self._address
        connection = await ClientConnection.open(
            host, port, connect_timeout=self._connect_timeout, transport=self._transport
        )
        connection.stall_timeout = self._stall_timeout
        self._connection = connection
        while True:
            self._check_close()
            response = await self._one_window(connection, checksum)
            if response is not None:
                return response

    async def _one_window(
        self, connection: ClientConnection, checksum: str | None
    ) -> ClientResponse | None:
        """Negotiate and send one window; the completion packet if the stream is complete."""
        source = self._source
        grant = await connection.negotiate(
            self._route,
            source.total,
            self._buffer_size,
            key=self._key,
            checksum=checksum if self._key is None else None,
            metadata=self._metadata,
            authorization=self._authorization,
        )
        if self._windows == 0:
            self._resumed_from = grant.offset
        self._windows += 1
        if self._key is None:
            self._key = grant.key
            if self._on_key is not None:
                self._on_key(grant.key)
        acknowledged = self._feed.current.acknowledged
        if grant.offset < acknowledged:
            raise ServerProtocolError(
                f"durable offset went back from {acknowledged} to {grant.offset} (§3.5)"
            )
        self._feed.update(acknowledged=grant.offset, sent=grant.offset)
        source.acknowledge(grant.offset)

        sent = grant.offset

        def count_sent(size: int) -> None:
            nonlocal sent
            sent += size
            self._feed.update(sent=sent)

        try:
            await source.send(connection, grant.offset, grant.window, grant.buffer_size, count_sent)
        except ConnectionLostError:
            # A server that fails mid-window sends its reason, then closes (§3.3).
            with contextlib.suppress(ConnectionLostError):
                self._finish_window(await connection.completion(_REASON_GRACE), grant.offset)
            raise
        reply = await connection.completion(self._reply_timeout)
        return reply if self._finish_window(reply, grant.offset + grant.window) else None

    def _finish_window(self, reply: ClientResponse, expected_offset: int) -> bool:
        """Account for a completion packet; True when the stream is complete."""
        total = self._source.total
        headers = reply.headers
        try:
            missing_text, _, zero = headers["x-stream"].partition(":")
            missing = int(missing_text)
        except (KeyError, ValueError):
            missing = -1
        if not 0 <= missing <= total or zero != "0" or headers.get("x-stream-key") != self._key:
            raise ServerProtocolError(f"malformed completion packet {dict(headers)!r}")
        if reply.status != 0:
            self._acknowledge(total - missing)
            raise error_for_status(reply.status, reply.message or "(no message)")
        if total - missing != expected_offset:
            raise ServerProtocolError(
                f"completion reports {missing} bytes missing, {total - expected_offset} expected"
            )
        self._acknowledge(expected_offset)
        return missing == 0

    def _acknowledge(self, offset: int) -> None:
        if offset < self._feed.current.acknowledged:
            return  # an error packet's offset; the stricter check is on the next accept
        self._feed.update(acknowledged=offset)
        self._source.acknowledge(offset)

    async def _verified(self, reply: ClientResponse) -> UploadResult:
        assert self._key is not None
        ours = await self._source.sha256()
        announced = reply.headers.get("x-stream-checksum", "")
        algorithm, _, theirs = announced.partition(":")
        if algorithm != "sha256" or len(theirs) != 64:
            raise ServerProtocolError(
                f"completion of a byte stream without x-stream-checksum: {announced!r}"
            )
        if theirs.lower() != ours:
            raise IntegrityError(self._key, ours, theirs.lower())
        return UploadResult(
            key=self._key,
            size=self._source.total,
            sha256=ours,
            payload=reply.content,
            headers=reply.headers,
            windows=self._windows,
            reconnects=self._reconnects,
            resumed_from=self._resumed_from,
        )


async def upload(
    source: UploadSource,
    *,
    server: str = DEFAULT_SERVER,
    route: str = DEFAULT_ROUTE,
    total: int | None = None,
    key: str | None = None,
    name: str | None = None,
    metadata: Mapping[str, str | int] | None = None,
    authorization: str | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    retry: RetryPolicy | None = None,
    connect_timeout: float = 10.0,
    reply_timeout: float = 300.0,
    stall_timeout: float = 60.0,
    on_progress: ProgressCallback | None = None,
    on_key: KeyCallback | None = None,
    on_retry: RetryCallback | None = None,
    announce_checksum: bool = False,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    transport: Transport = "tcp",
) -> UploadResult:
    """Upload ``source`` to the end; the options are those of ``Upload``."""
    return await Upload(
        source,
        server=server,
        route=route,
        total=total,
        key=key,
        name=name,
        metadata=metadata,
        authorization=authorization,
        buffer_size=buffer_size,
        retry=retry,
        connect_timeout=connect_timeout,
        reply_timeout=reply_timeout,
        stall_timeout=stall_timeout,
        on_progress=on_progress,
        on_key=on_key,
        on_retry=on_retry,
        announce_checksum=announce_checksum,
        replay_buffer=replay_buffer,
        transport=transport,
    ).run()


def upload_sync(
    source: UploadSource,
    *,
    server: str = DEFAULT_SERVER,
    route: str = DEFAULT_ROUTE,
    total: int | None = None,
    key: str | None = None,
    name: str | None = None,
    metadata: Mapping[str, str | int] | None = None,
    authorization: str | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    retry: RetryPolicy | None = None,
    connect_timeout: float = 10.0,
    reply_timeout: float = 300.0,
    stall_timeout: float = 60.0,
    on_progress: ProgressCallback | None = None,
    on_key: KeyCallback | None = None,
    on_retry: RetryCallback | None = None,
    announce_checksum: bool = False,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    transport: Transport = "tcp",
) -> UploadResult:
    """For scripts: ``upload_sync("big.iso", server="host:7070")`` runs its own event loop;
    the options are those of ``Upload``."""
    return asyncio.run(
        upload(
            source,
            server=server,
            route=route,
            total=total,
            key=key,
            name=name,
            metadata=metadata,
            authorization=authorization,
            buffer_size=buffer_size,
            retry=retry,
            connect_timeout=connect_timeout,
            reply_timeout=reply_timeout,
            stall_timeout=stall_timeout,
            on_progress=on_progress,
            on_key=on_key,
            on_retry=on_retry,
            announce_checksum=announce_checksum,
            replay_buffer=replay_buffer,
            transport=transport,
        )
    )
