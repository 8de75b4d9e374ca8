"""Where upload bytes come from, and how each kind of source resumes after a drop.

* ``FileSource`` — a regular file (a path, or a file object with a real descriptor). Any
  offset can be sent again, with ``loop.sendfile`` where possible; its sha256 is computed
  over the whole file in a worker thread while the upload runs.
* ``SeekableSource`` — any other seekable binary file object (``io.BytesIO``, ...). Any
  offset can be sent again; it is hashed as it is first read.
* ``StreamSource`` — an async iterator of bytes, read once. It keeps the last
  ``replay_buffer`` bytes it sent (and everything the server has not yet confirmed, up to
  that bound); after a drop it resumes only if the server's durable offset lies inside that
  buffer, otherwise ``NotResumableError``. It cannot go back further: it never reads the
  iterator twice.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import io
import os
import re
import stat
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import BinaryIO, Final

from .connection import ClientConnection
from .errors import ClientError, NotResumableError

__all__ = [
    "DEFAULT_REPLAY_BUFFER",
    "FileSource",
    "SeekableSource",
    "Source",
    "StreamSource",
    "UploadSource",
    "open_source",
]

DEFAULT_REPLAY_BUFFER: Final = 32 * 1024 * 1024
_HASH_BLOCK: Final = 1024 * 1024

UploadSource = str | os.PathLike[str] | BinaryIO | AsyncIterable[bytes]
Sent = Callable[[int], None]


class Source(abc.ABC):
    """``total`` bytes that can be sent window by window."""

    total: int
    name: str | None = None

    def start(self) -> None:  # noqa: B027 — optional hook
        """Called once before the first window (background hashing starts here)."""

    @abc.abstractmethod
    async def send(
        self, connection: ClientConnection, offset: int, count: int, portion: int, sent: Sent
    ) -> None:
        """Send bytes ``[offset, offset + count)`` as raw window bytes."""

    def acknowledge(self, offset: int) -> None:  # noqa: B027 — optional hook
        """The server holds ``[0, offset)`` durably; they will never be asked for again."""

    @abc.abstractmethod
    async def sha256(self) -> str:
        """Hex sha256 of all ``total`` bytes (for one-pass sources: once all were sent)."""

    def close(self) -> None:  # noqa: B027 — optional hook
        """Release what the source holds."""


class FileSource(Source):
    def __init__(self, file: BinaryIO, *, owned: bool, name: str | None) -> None:
        info = os.fstat(file.fileno())
        self._file = file
        self._owned = owned
        self._base = file.tell()
        self.total = info.st_size - self._base
        self.name = name
        self._stop = threading.Event()
        self._hashing: asyncio.Future[str] | None = None

    def start(self) -> None:
        if self._hashing is None:
            self._hashing = asyncio.ensure_future(asyncio.to_thread(self._hash_file))

    def _hash_file(self) -> str:
        digest = hashlib.sha256()
        fd, position, end = self._file.fileno(), self._base, self._base + self.total
        while position < end and not self._stop.is_set():
            block = os.pread(fd, min(_HASH_BLOCK, end - position), position)
            if not block:
                raise ClientError(f"the file shrank while being uploaded ({position} bytes)")
            digest.update(block)
            position += len(block)
        return digest.hexdigest()

    async def send(
        self, connection: ClientConnection, offset: int, count: int, portion: int, sent: Sent
    ) -> None:
        await connection.send_file(self._file, self._base + offset, count, sent)

    async def sha256(self) -> str:
        self.start()
        assert self._hashing is not None
        return await asyncio.shield(self._hashing)

    def close(self) -> None:
        self._stop.set()
        if self._hashing is not None and not self._hashing.done():
            # The thread sees the stop flag; nobody waits for its (meaningless) digest.
            self._hashing.add_done_callback(_retrieve)
        if self._owned:
            self._file.close()


class SeekableSource(Source):
    """Hashes bytes the first time they are read; a prefix skipped on resume is read and
    hashed separately, so the digest always covers the whole content."""

    def __init__(self, file: BinaryIO, *, name: str | None) -> None:
        self._file = file
        self._base = file.tell()
        self.total = file.seek(0, io.SEEK_END) - self._base
        self.name = name
        self._digest = hashlib.sha256()
        self._hashed = 0

    async def _read(self, offset: int, size: int) -> bytes:
        def read() -> bytes:
            self._file.seek(self._base + offset)
            return self._file.read(size)

        data = await asyncio.to_thread(read)
        if len(data) != size:
            raise ClientError(f"the file ended at {offset + len(data)} bytes, {size} wanted")
        return data

    async def _hash_up_to(self, offset: int) -> None:
        while self._hashed < offset:
            data = await self._read(self._hashed, min(_HASH_BLOCK, offset - self._hashed))
            self._digest.update(data)
            self._hashed += len(data)

    async def send(
        self, connection: ClientConnection, offset: int, count: int, portion: int, sent: Sent
    ) -> None:
        await self._hash_up_to(offset)
        position, end = offset, offset + count
        while position < end:
            data = await self._read(position, min(portion, end - position))
            if position == self._hashed:
                self._digest.update(data)
                self._hashed += len(data)
            await connection.send_raw(data)
            position += len(data)
            sent(len(data))

    async def sha256(self) -> str:
        await self._hash_up_to(self.total)
        return self._digest.hexdigest()


class StreamSource(Source):
    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        total: int,
        *,
        replay_buffer: int = DEFAULT_REPLAY_BUFFER,
        name: str | None = None,
    ) -> None:
        self._chunks: AsyncIterator[bytes] = aiter(chunks)
        self.total = total
        self.name = name
        self._replay_limit = replay_buffer
        self._buffer = bytearray()
        self._buffer_start = 0  # stream offset of _buffer[0]
        self._acknowledged = 0
        self._digest = hashlib.sha256()

    @property
    def _produced(self) -> int:
        return self._buffer_start + len(self._buffer)

    async def _pull(self) -> None:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            raise ClientError(
                f"the source ended after {self._produced} bytes, {self.total} were announced"
            ) from None
        if self._produced + len(chunk) > self.total:
            raise ClientError(f"the source yields more than the {self.total} bytes announced")
        self._digest.update(chunk)
        self._buffer += chunk

    def _forget_below(self, offset: int) -> None:
        drop = offset - self._buffer_start
        if drop > 0:
            del self._buffer[:drop]
            self._buffer_start = offset

    async def send(
        self, connection: ClientConnection, offset: int, count: int, portion: int, sent: Sent
    ) -> None:
        if offset < self._buffer_start:
            raise NotResumableError(
                f"the server needs bytes from offset {offset}, but this one-pass source only "
                f"still holds bytes from {self._buffer_start} (replay buffer "
                f"{self._replay_limit} bytes)"
            )
        while self._produced < offset:  # a resumed key: the server already has a prefix
            await self._pull()
            self._forget_below(min(offset, self._produced))
        position, end = offset, offset + count
        while position < end:
            while self._produced <= position:
                await self._pull()
            start = position - self._buffer_start
            size = min(portion, end - position, len(self._buffer) - start)
            await connection.send_raw(bytes(self._buffer[start : start + size]))
            position += size
            sent(size)
            # Keep what the server has not confirmed, within the replay bound.
            floor = max(self._acknowledged, position - self._replay_limit)
            if floor - self._buffer_start >= max(self._replay_limit // 4, 1):
                self._forget_below(floor)
        if end == self.total:
            await self._expect_exhausted()

    async def _expect_exhausted(self) -> None:
        async for chunk in self._chunks:
            if chunk:
                raise ClientError(f"the source yields more than the {self.total} bytes announced")

    def acknowledge(self, offset: int) -> None:
        self._acknowledged = max(self._acknowledged, offset)
        self._forget_below(min(self._acknowledged, self._produced))

    async def sha256(self) -> str:
        if self._produced < self.total:
            raise ClientError("the digest of a one-pass source is known once it was all read")
        return self._digest.hexdigest()


def open_source(
    source: UploadSource,
    *,
    total: int | None = None,
    name: str | None = None,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
) -> Source:
    """The ``Source`` for a path, a binary file object or an async iterator of bytes.

    A file object is uploaded from its current position to its end; its position is left
    undefined afterwards. ``total`` is required for an iterator and must agree for files.
    """
    opened: Source
    if isinstance(source, str | os.PathLike):
        file = open(source, "rb")  # noqa: SIM115 — owned by the FileSource
        try:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ValueError(f"{os.fspath(source)!r} is not a regular file")
            opened = FileSource(file, owned=True, name=name or _header_safe(source))
        except BaseException:
            file.close()
            raise
    elif isinstance(source, io.IOBase | BinaryIO) or hasattr(source, "read"):
        file_obj: BinaryIO = source  # type: ignore[assignment]
        if _has_regular_descriptor(file_obj):
            opened = FileSource(file_obj, owned=False, name=name)
        elif file_obj.seekable():
            opened = SeekableSource(file_obj, name=name)
        else:
            if total is None:
                raise ValueError("total= is required for a file object that cannot seek")
            opened = StreamSource(
                _read_chunks(file_obj), total, replay_buffer=replay_buffer, name=name
            )
    elif isinstance(source, AsyncIterable):
        if total is None:
            raise ValueError("total= is required for an async iterator source")
        opened = StreamSource(source, total, replay_buffer=replay_buffer, name=name)
    else:
        raise TypeError(f"cannot upload from {type(source).__name__}")
    if total is not None and total != opened.total:
        opened.close()
        raise ValueError(f"total={total} but the source holds {opened.total} bytes")
    if opened.total < 1:
        opened.close()
        raise ValueError("nothing to upload: the source is empty (streams carry ≥ 1 byte)")
    return opened


def _header_safe(path: str | os.PathLike[str]) -> str | None:
    """The file's name as a header value can carry it: no control characters, trimmed."""
    name = re.sub(r"[\x00-\x1f\x7f]", "?", os.path.basename(os.fspath(path))).strip()
    return name or None


def _has_regular_descriptor(file: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False


async def _read_chunks(file: BinaryIO) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(file.read, _HASH_BLOCK):
        yield chunk


def _retrieve(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()
