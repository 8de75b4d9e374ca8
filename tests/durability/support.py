"""Tools shared by the durability tests: a wire client that never loses a packet the server
sent before closing, an uploader that records every offset the server reports, and checks of
those reports against what is stored."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from xstream_server.protocol import Packet, PacketDecoder, encode_packet
from xstream_server.state.redis import EXPIRY_INDEX_KEYS, is_cluster_url

MiB: Final = 1024 * 1024
ROUTE: Final = "/upload-file"
_CHUNK: Final = 64 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def status(packet: Packet) -> int:
    return int(packet.headers["status"])


def missing(packet: Packet) -> int:
    """M of a completion packet (``x-stream: M:0``)."""
    value, _, _ = packet.headers["x-stream"].partition(":")
    return int(value)


def grant(reply: Packet, total: int) -> tuple[int, int]:
    """(O, W) of an accept reply: the durable offset and the bytes to send now."""
    capacity = int(reply.headers["x-stream"].partition(":")[0])
    offset = int(reply.headers["x-stream-offset"])
    return offset, (total - offset if capacity == 0 else capacity)


def reported_offset(packet: Packet, total: int) -> int | None:
    """The durable offset a packet reports: ``O`` of an accept, ``T − M`` of a completion
    (successful or not); None for anything else (a refusal has ``x-stream: -1``)."""
    if "x-stream-key" not in packet.headers:
        return None
    if "x-stream-offset" in packet.headers:
        return int(packet.headers["x-stream-offset"])
    return total - missing(packet)


async def until(condition: Callable[[], Awaitable[bool] | bool], step: float = 0.01) -> None:
    """Poll ``condition`` until it holds, for states nothing announces (a file's size, a
    Redis field); the caller bounds the wait with ``asyncio.timeout``."""
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(step)


def part_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Link(asyncio.Protocol):
    """A wire-level client built on a protocol rather than a StreamReader: packets are
    decoded as they arrive, so one the server sent before closing is kept even when the
    close turns into a reset (StreamReader raises the reset before its buffered data)."""

    def __init__(self, on_packet: Callable[[Packet], None] | None = None) -> None:
        self.decoder = PacketDecoder(payload_limit=lambda _: 1 << 31)
        self.on_packet = on_packet
        self.packets: collections.deque[tuple[float, Packet]] = collections.deque()
        self.arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, port: int, on_packet: Callable[[Packet], None] | None = None) -> Link:
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(lambda: cls(on_packet), "127.0.0.1", port)
        return link

    # ---- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.decoder.receive_data(data)
        while (packet := self.decoder.next_packet()) is not None:
            if self.on_packet is not None:
                self.on_packet(packet)
            self.packets.append((time.monotonic(), packet))
            self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.arrived.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # ---- use
    async def _write(self, data: bytes | memoryview) -> None:
        if self.closed.is_set() or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        await self.writable.wait()

    async def send(self, headers: dict[str, str | int], payload: bytes = b"") -> None:
        await self._write(encode_packet(headers, payload))

    async def send_raw(
        self, data: bytes | memoryview, on_sent: Callable[[int], None] | None = None
    ) -> int:
        """Write raw bytes in pieces; stop early when the server answers or closes (it does
        so at once on failure). Returns how many bytes were written."""
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            if self.packets or self.closed.is_set():
                break
            piece = view[sent : sent + _CHUNK]
            await self._write(piece)
            sent += len(piece)
            if on_sent is not None:
                on_sent(len(piece))
        return sent

    async def receive(self, timeout: float = 30.0) -> Packet:
        return (await self.receive_timed(timeout))[1]

    async def receive_timed(self, timeout: float = 30.0) -> tuple[float, Packet]:
        """The next packet and the monotonic time it arrived."""
        async with asyncio.timeout(timeout):
            while not self.packets:
                if self.closed.is_set():
                    raise EOFError("server closed the connection")
                self.arrived.clear()
                await self.arrived.wait()
        return self.packets.popleft()

    async def request(self, headers: dict[str, str | int], timeout: float = 30.0) -> Packet:
        await self.send(headers)
        return await self.receive(timeout)

    async def wait_closed(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()
        await self.wait_closed(5)


@dataclass
class Upload:
    """One body uploaded over as many connections, windows and server lives as it takes;
    every durable offset the server reports is kept, with the key it was reported for."""

    data: bytes
    buffer: int = 64 * 1024
    key: str | None = None
    reports: list[tuple[str, int]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # non-zero statuses received
    errors: list[str] = field(default_factory=list)  # their status and message
    checksum: str | None = None
    link: Link | None = None

    @property
    def total(self) -> int:
        return len(self.data)

    def observe(self, packet: Packet) -> None:
        """Called for every packet as it arrives, before anything else can happen."""
        key = packet.headers.get("x-stream-key")
        offset = reported_offset(packet, self.total)
        if key is not None and offset is not None:
            self.key = key
            self.reports.append((key, offset))
        code = int(packet.headers.get("status", -1))
        if code != 0:
            self.statuses.append(code)
            self.errors.append(f"{code} {packet.headers.get('message')}")

    def stream_request(self) -> dict[str, str | int]:
        headers: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{self.total}:{self.buffer}"}
        if self.key is not None:
            headers["x-stream-key"] = self.key
        return headers

    @property
    def durable(self) -> int:
        """The last offset the server reported (0 before any)."""
        return self.reports[-1][1] if self.reports else 0

    async def connect(self, port: int) -> Link:
        self.link = await Link.connect(port, self.observe)
        return self.link

    async def windows(self, link: Link, on_sent: Callable[[int], None] | None = None) -> bool:
        """Negotiate and send windows on ``link`` until the stream is complete (True) or the
        server answers an error (False). Raises on a lost connection."""
        while True:
            reply = await link.request(self.stream_request())
            if status(reply) != 0:
                return False
            offset, window = grant(reply, self.total)
            await link.send_raw(memoryview(self.data)[offset : offset + window], on_sent)
            done = await link.receive()
            if status(done) != 0:
                return False
            if missing(done) == 0:
                self.checksum = done.headers["x-stream-checksum"]
                return True

    async def run(self, port: int, on_sent: Callable[[int], None] | None = None) -> bool:
        link = await self.connect(port)
        try:
            return await self.windows(link, on_sent)
        finally:
            link.abort()


def check_reports(uploads: Iterable[Upload], stored: Callable[[Upload], bytes]) -> int:
    """Per stream, reported offsets never decrease; every reported offset is covered by the
    stored file: the bytes before it equal the source. Returns how many reports were checked."""
    count = 0
    for upload in uploads:
        body = stored(upload)
        previous: dict[str, int] = {}
        for key, offset in upload.reports:
            assert offset >= previous.get(key, 0), (key, upload.reports)
            previous[key] = offset
            assert 0 <= offset <= upload.total
            assert key == upload.key, "a stream was lost and started over"
            assert body[:offset] == upload.data[:offset], (key, offset)
            count += 1
    return count


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class StateProbe:
    """Reads the server's state straight from Redis and the data directory."""

    def __init__(self, redis_url: str, data_dir: Path) -> None:
        self.redis: aioredis.Redis = (
            cast(aioredis.Redis, RedisCluster.from_url(redis_url.replace("+cluster", "", 1)))
            if is_cluster_url(redis_url)
            else aioredis.Redis.from_url(redis_url)
        )
        self.streams = data_dir / "streams"

    async def close(self) -> None:
        await self.redis.aclose()

    async def record(self, key: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"xs:{{{key}}}:stream")
        return {_text(k): _text(v) for k, v in raw.items()}

    async def expiry_index(self) -> set[str]:
        """The keys of incomplete streams, as the sweeper sees them."""
        keys: set[str] = set()
        for index in EXPIRY_INDEX_KEYS:
            keys.update(_text(cast(bytes, k)) for k in await self.redis.zrange(index, 0, -1))
        return keys

    async def recorded_offset(self, key: str) -> int | None:
        value = await self.redis.hget(f"xs:{{{key}}}:stream", "offset")
        return None if value is None else int(value)

    async def lease_ttl_ms(self, key: str) -> int:
        return int(await self.redis.pttl(f"xs:{{{key}}}:lease"))

    def part(self, key: str) -> Path:
        return self.streams / "parts" / f"{key}.part"

    def complete(self, key: str) -> Path:
        return self.streams / "complete" / key

    def stored(self, key: str) -> bytes:
        """The finished file, else the part file."""
        path = self.complete(key)
        if not path.exists():
            path = self.part(key)
        return path.read_bytes()

    async def check_durable(self, upload: Upload) -> None:
        """What a crash leaves behind covers every offset reported so far: the recorded
        offset is at least the last report, and the file holds the source up to it."""
        if upload.key is None or not upload.reports:
            return
        recorded = await self.recorded_offset(upload.key)
        assert recorded is not None, f"record of {upload.key} lost"
        reported = max(offset for key, offset in upload.reports if key == upload.key)
        assert recorded >= reported, (upload.key, recorded, reported)
        body = self.stored(upload.key)
        assert len(body) >= recorded, (upload.key, len(body), recorded)
        assert body[:recorded] == upload.data[:recorded], upload.key
