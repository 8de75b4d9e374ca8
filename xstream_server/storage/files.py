"""File storage: ``parts/<key>.part`` while a stream is open, ``complete/<key>`` once
finished. Keys are server-made and URL-safe, so they are safe file names; a client-supplied
name is never used as a path. Every blocking call runs in the thread pool through aiofiles,
one trip per call (a write and its hash, when it has one, travel together). ``read_at``
reads written bytes back for the hashing thread that trails the writer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from pathlib import Path
from typing import Final

import aiofiles
import aiofiles.os

from .. import metrics
from ..private import private_directory
from .base import Digest, PartInfo, StorageError, StorageFull

__all__ = ["FileStorage"]

_FULL_ERRNOS: Final = {errno.ENOSPC, errno.EDQUOT}


def _timed_fsync(fd: int) -> None:
    started = time.perf_counter()
    os.fsync(fd)
    metrics.fsynced(time.perf_counter() - started)


_fsync = aiofiles.os.wrap(_timed_fsync)


def _sha256_prefix(part: Path, final: Path, size: int) -> str:
    """sha256 of the first ``size`` bytes of the part, or of the finished file when the part
    was already renamed (a crash came before the record was told)."""
    path = part if part.exists() else final
    digest = hashlib.sha256()
    remaining = size
    with open(path, "rb", buffering=0) as f:
        chunk = bytearray(1 << 20)
        view = memoryview(chunk)
        while remaining:
            n = f.readinto(view[: min(remaining, len(chunk))])
            if not n:
                raise StorageError(f"{path} is shorter than {size} bytes")
            digest.update(view[:n])
            remaining -= n
    return digest.hexdigest()


_hash_file = aiofiles.os.wrap(_sha256_prefix)


def _write_and_digest(
    fd: int, data: bytes | bytearray | memoryview, digest: Digest | None
) -> tuple[int, OSError | None]:
    """Write all of ``data`` at the file's position, then feed it to ``digest``; both in one
    trip to the thread pool, while the bytes are still warm in the CPU cache. Returns the
    bytes written and the error that stopped a partial write (then ``digest`` is untouched)."""
    view = memoryview(data).cast("B")
    done = 0
    try:
        while done < len(view):
            written = os.write(fd, view[done:])
            if not written:
                raise OSError(errno.ENOSPC, "no space left on device")
            done += written
    except OSError as exc:
        return done, exc
    if digest is not None:
        digest.update(view)
    return done, None


_write_and_digest_async = aiofiles.os.wrap(_write_and_digest)


def _storage_error(exc: OSError, action: str) -> StorageError:
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(f"out of storage while {action}")
    return StorageError(f"{action} failed: {exc.strerror or exc}")


def _open_reconciled(path: Path, durable_offset: int) -> tuple[int, int]:
    """Open (or create) a part, cut it back to the durable offset, position at its end."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        offset = min(size, durable_offset)
        if size > offset:
            # Only when there is a tail to cut: ext4 treats a truncate to zero as a sign the
            # file is being replaced and flushes all its data when it is closed.
            os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd, offset


_open_reconciled_async = aiofiles.os.wrap(_open_reconciled)


def _cut_at(fd: int, offset: int) -> None:
    os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)


_cut = aiofiles.os.wrap(_cut_at)
_close = aiofiles.os.wrap(os.close)


class FilePartWriter:
    """Appends to one part file through its descriptor. ``write`` is one pool trip;
    ``write_now`` writes from the calling thread (into the page cache)."""

    def __init__(self, fd: int, offset: int, fsync: bool, inline: bool) -> None:
        self._fd = fd
        self._offset = offset
        self._fsync = fsync
        self._inline = inline

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def inline(self) -> bool:
        return self._inline

    def write_now(self, data: bytes | bytearray | memoryview, digest: Digest | None = None) -> None:
        written, error = _write_and_digest(self._fd, data, digest)
        self._offset += written
        if error is not None:
            raise _storage_error(error, "writing") from error

    async def write(
        self, data: bytes | bytearray | memoryview, digest: Digest | None = None
    ) -> None:
        written, error = await _write_and_digest_async(self._fd, data, digest)
        self._offset += written
        if error is not None:
            raise _storage_error(error, "writing") from error

    def read_at(self, offset: int, into: memoryview) -> int:
        try:
            return os.preadv(self._fd, [into], offset)
        except OSError as exc:
            raise _storage_error(exc, "reading back") from exc

    async def sync(self) -> None:
        if not self._fsync:
            return
        try:
            await _fsync(self._fd)
        except OSError as exc:
            raise _storage_error(exc, "fsync") from exc

    async def truncate(self, offset: int) -> None:
        if offset > self._offset:
            raise ValueError(f"cannot cut a part of {self._offset} bytes to {offset}")
        try:
            await _cut(self._fd, offset)
        except OSError as exc:
            raise _storage_error(exc, "truncating") from exc
        self._offset = offset

    async def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            await _close(fd)
        except OSError as exc:
            raise _storage_error(exc, "closing") from exc


class FileStorage:
    def __init__(
        self, root: Path, *, fsync: bool = True, reserve: int = 0, inline_writes: bool = True
    ) -> None:
        self.root = root
        self.inline_writes = inline_writes
        self.parts = root / "parts"
        self.complete = root / "complete"
        self.fsync = fsync
        self.reserve = reserve
        for folder in (root, self.parts, self.complete):  # 0700: part names are keys
            private_directory(folder)

    def _part(self, key: str) -> Path:
        return self.parts / f"{key}.part"

    def finished_path(self, key: str) -> Path:
        return self.complete / key

    async def open_part(self, key: str, durable_offset: int) -> FilePartWriter:
        try:
            fd, offset = await _open_reconciled_async(self._part(key), durable_offset)
        except OSError as exc:
            raise _storage_error(exc, "opening the part") from exc
        return FilePartWriter(fd, offset, self.fsync, self.inline_writes)

    async def part_size(self, key: str) -> int | None:
        try:
            return (await aiofiles.os.stat(self._part(key))).st_size
        except FileNotFoundError:
            return None

    async def is_finished(self, key: str) -> bool:
        return bool(await _is_finished_async(self._part(key), self.finished_path(key)))

    async def hash_part(self, key: str, size: int) -> str:
        try:
            digest: str = await _hash_file(self._part(key), self.finished_path(key), size)
        except OSError as exc:
            raise _storage_error(exc, "hashing the part") from exc
        return digest

    async def finalize(self, key: str) -> Path:
        final = self.finished_path(key)
        try:
            await _finalize_async(self._part(key), final, self.fsync)
        except OSError as exc:
            raise _storage_error(exc, "finalizing") from exc
        return final

    async def read(self, key: str, offset: int, size: int) -> bytes:
        try:
            data: bytes = await _read_async(self._part(key), self.finished_path(key), offset, size)
        except OSError as exc:
            raise _storage_error(exc, "reading") from exc
        return data

    async def discard(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self._part(key))

    async def remove_finished(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self.finished_path(key))

    async def list_parts(self) -> list[PartInfo]:
        infos = []
        for entry in await aiofiles.os.scandir(self.parts):
            if entry.name.endswith(".part"):
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                infos.append(PartInfo(entry.name[: -len(".part")], stat.st_size, stat.st_mtime))
        return infos

    def free_space(self) -> int:
        stat = os.statvfs(self.parts)
        return max(0, stat.f_bavail * stat.f_frsize - self.reserve)


def _is_finished(part: Path, final: Path) -> bool:
    return final.exists() and not part.exists()


_is_finished_async = aiofiles.os.wrap(_is_finished)


def _finalize(part: Path, final: Path, fsync: bool) -> None:
    """Rename the part into place and make the rename durable; a part already renamed (a
    crash came before the record was told) is left as it is."""
    if _is_finished(part, final):
        return
    os.replace(part, final)
    if fsync:
        for directory in {final.parent, part.parent}:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


_finalize_async = aiofiles.os.wrap(_finalize)


def _read(part: Path, final: Path, offset: int, size: int) -> bytes:
    try:
        fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(final, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


_read_async = aiofiles.os.wrap(_read)
