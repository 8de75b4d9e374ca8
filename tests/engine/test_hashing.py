"""The sha256 that trails the writer (``engine.hashing``), on a real file: jobs read back what
was written, in order, while writing goes on; the tail is hashed on demand; a part shorter
than what was reported written leaves no hash at all rather than a wrong one."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from xstream_server.engine.hashing import BATCH, TrailingHash
from xstream_server.storage import StorageError

KiB = 1024


def reader(fd: int):  # type: ignore[no-untyped-def]
    def read_at(offset: int, into: memoryview) -> int:
        return os.preadv(fd, [into], offset)

    return read_at


async def test_the_hash_trails_the_writer_and_covers_every_byte(tmp_path: Path) -> None:
    prefix = os.urandom(1000)
    data = os.urandom(2 * BATCH + 300 * KiB + 3)
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, prefix)
        trail = TrailingHash(hashlib.sha256(prefix), len(prefix), reader(fd))
        written = len(prefix)
        for start in range(0, len(data), 256 * KiB):
            written += os.write(fd, data[start : start + 256 * KiB])
            trail.written(written)
        await trail.idle()
        # Whole batches were hashed without being asked for; a tail under a batch waits.
        assert trail.hashed >= len(prefix) + 2 * BATCH
        assert (trail.current() is None) == (trail.hashed < written)
        hasher = await trail.settle()
        assert hasher is not None and trail.current() is hasher
        assert hasher.hexdigest() == hashlib.sha256(prefix + data).hexdigest()
    finally:
        os.close(fd)


async def test_catching_up_early_hashes_the_tail_without_being_asked(tmp_path: Path) -> None:
    data = os.urandom(BATCH // 2)
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        trail = TrailingHash(hashlib.sha256(), 0, reader(fd))
        trail.written(os.write(fd, data))
        assert trail.hashed == 0  # under one batch: no job yet
        trail.catch_up_soon()
        await trail.idle()
        assert trail.hashed == len(data)
        hasher = trail.current()
        assert hasher is not None and hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


async def test_a_part_shorter_than_reported_leaves_no_hash(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, os.urandom(BATCH))
        trail = TrailingHash(hashlib.sha256(), 0, reader(fd))
        trail.written(BATCH + 10)  # ten bytes more than the part holds
        assert await trail.settle() is None
        assert trail.broken
    finally:
        os.close(fd)


async def test_a_failed_write_stops_the_hash(tmp_path: Path) -> None:
    def failing(offset: int, into: memoryview) -> int:
        raise StorageError("reading back failed")

    trail = TrailingHash(hashlib.sha256(), 0, failing)
    trail.written(BATCH)
    assert await trail.settle() is None
    trail = TrailingHash(hashlib.sha256(), 0, failing)
    trail.abandon()  # a partial write: nothing more is hashed
    trail.written(2 * BATCH)
    assert await asyncio.wait_for(trail.settle(), 5) is None
