"""File storage: ``parts/<key>.part`` while a stream is open, ``complete/<key>`` once
finished. Keys are server-made and URL-safe, so they are safe file names; a client-supplied
name is never used as a path. Every blocking call runs in the thread pool through aiofiles,
one trip per call (a write and its hash, when it has one, travel together). ``read_at``
reads written bytes back for the hashing thread that trails the writer.

Finishing a part: ``fdatasync`` of its bytes (checkpoints and the last one), then its rename
from ``parts/`` to ``complete/``, then an fsync of both folders, so that the rename outlives
a crash. The folders' fsyncs are shared (group commit, see ``FolderSync``): many streams
finishing at once cost one pair of folder fsyncs, not one pair each.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiofiles
import aiofiles.os

from .. import metrics
from ..private import private_directory
from .base import Digest, PartInfo, StorageError, StorageFull

__all__ = ["FileStorage", "FolderSync"]

_FULL_ERRNOS: Final = {errno.ENOSPC, errno.EDQUOT}


def _timed_fdatasync(fd: int) -> None:
    # The part's bytes and what is needed to read them back (its size), not its timestamps.
    started = time.perf_counter()
    os.fdatasync(fd)
    metrics.fsynced(time.perf_counter() - started)


_fdatasync = aiofiles.os.wrap(_timed_fdatasync)


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
            await _fdatasync(self._fd)
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
            if self._inline:
                # Where writes go from the event loop, so does the close: a local file's
                # close returns at once (its bytes are fsynced already, or need not be).
                os.close(fd)
            else:
                await _close(fd)
        except OSError as exc:
            raise _storage_error(exc, "closing") from exc


def _sync_folders(folders: tuple[Path, ...]) -> None:
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_sync_folders_async = aiofiles.os.wrap(_sync_folders)


class FolderSync:
    """Group commit of folder fsyncs: ``sync()`` returns once an fsync of every folder has
    run that started after the call. A rename finished before an fsync of its folder starts
    is made durable by it, so every stream that renamed its part before calling ``sync()``
    shares one fsync with the others that call while an earlier one is running: at most one
    runs at a time, and the next one starts as soon as it ends, for all who came meanwhile.
    """

    def __init__(
        self,
        *folders: Path,
        run: Callable[[tuple[Path, ...]], Awaitable[None]] = _sync_folders_async,
    ) -> None:
        self._folders = folders
        self._run = run  # fsyncs the folders, in a worker thread
        self._running: asyncio.Future[None] | None = None  # started: covers earlier calls
        self._next: asyncio.Future[None] | None = None  # not started: covers every call

    async def sync(self) -> None:
        if self._next is None:
            self._next = asyncio.ensure_future(self._after(self._running))
        # Shielded: one caller cancelled must not cancel the fsync the others wait for.
        await asyncio.shield(self._next)

    async def _after(self, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its callers'
        # Starting: nobody joins this one from here on (no await before the fsync starts).
        this, self._next = self._next, None
        self._running = this
        try:
            await self._run(self._folders)
        finally:
            if self._running is this:
                self._running = None


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
        # The finished file's folder, which the rename added it to, and the parts' folder,
        # which it left: both, so that after a crash the file has exactly one name. (On
        # ext4 and XFS one rename is one journal transaction and the second fsync finds
        # nothing left to do; elsewhere it is what removes the old name for good.)
        self._folders = FolderSync(self.complete, self.parts)

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
        """Move the part (whose bytes are fsynced) into place, durably: renamed, then both
        folders fsynced (shared with the other streams finishing now, see FolderSync)."""
        final = self.finished_path(key)
        try:
            await _finalize_async(self._part(key), final)
            if self.fsync:
                # Also when the part had been renamed already (a crash came before the
                # record was told): that rename may not have reached the disk.
                await self._folders.sync()
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


def _finalize(part: Path, final: Path) -> None:
    """Rename the part into place; a part already renamed (a crash came before the record
    was told) is left as it is."""
    try:
        os.replace(part, final)
    except FileNotFoundError:
        if not final.exists():
            raise


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
