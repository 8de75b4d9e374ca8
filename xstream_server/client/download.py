"""Resumable downloads (PROTOCOL §5): pull a stream's content into a local file.

The bytes go to ``PATH.part`` first; the pull asks for them from the size of that file
(``x-stream-pull: O:B``), so a run that was interrupted — a dropped connection, Ctrl-C, a
killed process — continues where it stopped, in this run (reconnects with backoff, as an
upload does) or the next one. At the end the file's sha256 is compared with the one the
server announced, and only then is ``PATH.part`` renamed to ``PATH``.

    result = await download(key, "big.iso", server="127.0.0.1:7070")

Scripts without an event loop use ``download_sync``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .connection import ClientConnection, ConnectionLostError, Transport, parse_address
from .errors import (
    ClientError,
    ConnectionFailedError,
    IntegrityError,
    RetryableServerError,
    XStreamError,
)
from .progress import ProgressCallback, ProgressFeed
from .upload import DEFAULT_BUFFER_SIZE, DEFAULT_ROUTE, DEFAULT_SERVER, RetryCallback, RetryPolicy

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["DownloadResult", "download", "download_sync", "partial_path"]

_HASH_BLOCK: Final = 1024 * 1024
_RANGE_NOT_SATISFIABLE: Final = 416


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A finished download: ``path`` holds ``size`` bytes whose sha256 is ``sha256``
    (checked against the server's when it announced one: ``verified``)."""

    key: str
    path: Path
    size: int
    sha256: str
    verified: bool
    resumed_from: int = 0  # bytes already in the partial file when this run began
    reconnects: int = 0


def partial_path(path: Path) -> Path:
    """Where the bytes of ``path`` gather until the download is complete and verified."""
    return path.with_name(path.name + ".part")


def _hash_prefix(path: Path, size: int) -> _Hash:
    hasher = hashlib.sha256()
    if not size:
        return hasher
    with path.open("rb") as file:
        left = size
        while left > 0:
            block = file.read(min(_HASH_BLOCK, left))
            if not block:
                raise ClientError(f"{path} shrank while it was read")
            hasher.update(block)
            left -= len(block)
    return hasher


class _Receiver:
    """One download's state across connections."""

    def __init__(
        self,
        key: str,
        path: Path,
        *,
        server: str,
        route: str,
        authorization: str | None,
        metadata: Mapping[str, str | int] | None,
        buffer_size: int,
        retry: RetryPolicy,
        connect_timeout: float,
        stall_timeout: float,
        on_progress: ProgressCallback | None,
        on_retry: RetryCallback | None,
        transport: Transport,
    ) -> None:
        self.key = key
        self.path = path
        self.part = partial_path(path)
        self.address = parse_address(server)
        self.route = route
        self.authorization = authorization
        self.metadata = metadata
        self.buffer_size = buffer_size
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self.on_progress = on_progress
        self.on_retry = on_retry
        self.transport = transport
        self.feed: ProgressFeed | None = None
        self.hasher: _Hash | None = None
        self.held = 0  # bytes in the partial file
        self.checksum: str | None = None
        self.total: int | None = None
        self.reconnects = 0

    async def run(self) -> DownloadResult:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.held = self.part.stat().st_size if self.part.exists() else 0
        resumed_from = self.held
        retries = 0
        progress_before = self.held
        while True:
            try:
                await self._on_new_connection()
                break
            except (ConnectionLostError, RetryableServerError, OSError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                    raise  # the local file cannot be written: retrying will not help
                if self.held > progress_before:
                    retries, progress_before = 0, self.held
                retries += 1
                if retries > self.retry.max_retries:
                    if isinstance(exc, RetryableServerError):
                        raise
                    raise ConnectionFailedError(
                        f"gave up after {retries} attempts without progress: {exc}", retries
                    ) from exc
                self.reconnects += 1
                delay = self.retry.delay(retries)
                if self.on_retry is not None:
                    self.on_retry(retries, delay, exc)
                await asyncio.sleep(delay)
        if self.feed is not None:
            self.feed.finish()
        assert self.hasher is not None and self.total is not None
        digest = self.hasher.hexdigest()
        if self.checksum is not None and digest != self.checksum:
            self.part.unlink(missing_ok=True)  # bad bytes: the next run starts afresh
            raise IntegrityError(self.key, self.checksum, digest)
        os.replace(self.part, self.path)
        return DownloadResult(
            self.key,
            self.path,
            self.total,
            digest,
            self.checksum is not None,
            resumed_from,
            self.reconnects,
        )

    async def _on_new_connection(self) -> None:
        host, port = self.address
        connection = await ClientConnection.open(
            host, port, connect_timeout=self.connect_timeout, transport=self.transport
        )
        connection.stall_timeout = self.stall_timeout
        try:
            await self._pull(connection)
        except BaseException:
            connection.abort()
            raise
        await connection.close()

    async def _pull(self, connection: ClientConnection) -> None:
        try:
            grant = await connection.pull(
                self.route,
                key=self.key,
                offset=self.held,
                buffer_size=self.buffer_size,
                metadata=self.metadata,
                authorization=self.authorization,
            )
        except XStreamError as exc:
            if exc.status != _RANGE_NOT_SATISFIABLE or not self.held:
                raise
            # The partial file is longer than the content: it is not this content's.
            self.part.unlink()
            self.held, self.hasher = 0, None
            grant = await connection.pull(
                self.route,
                key=self.key,
                offset=0,
                buffer_size=self.buffer_size,
                metadata=self.metadata,
                authorization=self.authorization,
            )
        if self.checksum is not None and grant.checksum not in (None, self.checksum):
            raise IntegrityError(self.key, self.checksum, grant.checksum or "")
        self.checksum = grant.checksum or self.checksum
        self.total = grant.total
        if self.hasher is None:
            self.hasher = await asyncio.to_thread(_hash_prefix, self.part, self.held)
        if self.feed is None:
            self.feed = ProgressFeed(grant.total, self.on_progress)
        self.feed.update(acknowledged=self.held, sent=self.held)
        with self.part.open("ab") as file:
            while True:
                try:
                    async with asyncio.timeout(self.stall_timeout):
                        chunk = await connection.read_content()
                except TimeoutError:
                    raise ConnectionLostError(
                        f"no content from the server for {self.stall_timeout:g} s"
                    ) from None
                if not chunk:
                    break
                file.write(chunk)
                self.hasher.update(chunk)
                self.held += len(chunk)
                self.feed.update(acknowledged=self.held, sent=self.held)
            file.flush()


async def download(
    key: str,
    path: str | os.PathLike[str] | None = None,
    *,
    server: str = DEFAULT_SERVER,
    route: str = DEFAULT_ROUTE,
    authorization: str | None = None,
    metadata: Mapping[str, str | int] | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    retry: RetryPolicy | None = None,
    connect_timeout: float = 10.0,
    stall_timeout: float = 60.0,
    on_progress: ProgressCallback | None = None,
    on_retry: RetryCallback | None = None,
    transport: Transport = "tcp",
) -> DownloadResult:
    """Download the content ``route`` serves for ``key`` (the default route: a completed
    upload) into ``path`` (default: ``key`` in the current folder), resuming from
    ``path.part`` when an earlier run left one. ``on_progress`` gets a ``Progress`` whose
    ``acknowledged`` counts the bytes in the local file."""
    target = Path(path) if path is not None else Path(key)
    receiver = _Receiver(
        key,
        target,
        server=server,
        route=route,
        authorization=authorization,
        metadata=metadata,
        buffer_size=buffer_size,
        retry=retry or RetryPolicy(),
        connect_timeout=connect_timeout,
        stall_timeout=stall_timeout,
        on_progress=on_progress,
        on_retry=on_retry,
        transport=transport,
    )
    return await receiver.run()


def download_sync(
    key: str,
    path: str | os.PathLike[str] | None = None,
    *,
    server: str = DEFAULT_SERVER,
    route: str = DEFAULT_ROUTE,
    authorization: str | None = None,
    metadata: Mapping[str, str | int] | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    retry: RetryPolicy | None = None,
    connect_timeout: float = 10.0,
    stall_timeout: float = 60.0,
    on_progress: ProgressCallback | None = None,
    on_retry: RetryCallback | None = None,
    transport: Transport = "tcp",
) -> DownloadResult:
    """For scripts: ``download_sync(key, "big.iso", server="host:7070")`` runs its own event
    loop; the options are those of ``download``."""
    return asyncio.run(
        download(
            key,
            path,
            server=server,
            route=route,
            authorization=authorization,
            metadata=metadata,
            buffer_size=buffer_size,
            retry=retry,
            connect_timeout=connect_timeout,
            stall_timeout=stall_timeout,
            on_progress=on_progress,
            on_retry=on_retry,
            transport=transport,
        )
    )
