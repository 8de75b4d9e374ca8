"""Load generator: drives the xstream server or the baseline, prints one JSON result.

It runs in its own process, apart from the servers it measures, on asyncio with uvloop.
Uploads are sent from one preallocated, immutable 1 MiB pattern (the byte at stream offset
``x`` is ``PATTERN[x % 1 MiB]``), so the client neither allocates nor reads files while it
sends; the completion reply is checked against the pattern's known SHA-256.

Sub-commands (each prints exactly one JSON object on stdout, progress goes to stderr)::

    upload --size S --concurrency C     C simultaneous uploads of S bytes each
    resume --count N --size S           N half-sent streams, then N timed resume requests
    idle --count N                      N silent connections, held until stdin has a line
    echo --clients C --depth D --seconds T
                                        C clients each keeping D pipelined /echo requests

``--target xstream`` speaks PROTOCOL-v1 (negotiate, raw bytes, completion packet);
``--target baseline`` speaks the baseline's 8-byte handshake (see ``baseline_server``);
``--target tus`` is a tus 1.0 client (one creation POST to ``--path``, then PATCHes of
``--chunk`` bytes, the whole upload by default, on the same keep-alive connection) and
``--target put`` sends one HTTP ``PUT`` to ``--path``/name (nginx WebDAV). Both speak
HTTP/1.1 over plain asyncio streams, so that the client costs no more than the others.
Every loop is bounded by a count and by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import random
import resource
import statistics
import struct
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, cast

import uvloop

from xstream_server.protocol.codec import PREFIX, Packet, PacketDecoder, encode_packet

__all__ = ["PATTERN", "UploadOutcome", "main", "pattern_sha256", "percentile"]

MiB: Final = 1024 * 1024
PATTERN: Final = random.Random(5).randbytes(MiB)
BASELINE_HANDSHAKE: Final = struct.Struct(">Q")
UPLOAD_ROUTE: Final = "/upload-file"
ECHO_ROUTE: Final = "/echo"
# Connection attempts in flight at once: keeps a burst inside the servers' accept backlog.
CONNECT_PARALLELISM: Final = 256


class BenchError(Exception):
    """A reply that breaks the protocol or reports a failure."""


@dataclass
class UploadOutcome:
    seconds: float
    ok: bool
    error: str = ""
    granted_buffer: int = 0
    rounds: int = 0


@dataclass
class Collected:
    """What a scenario returns; serialised as the process's JSON output."""

    scenario: str
    target: str
    params: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    whole, rest = divmod(size, len(PATTERN))
    for _ in range(whole):
        digest.update(PATTERN)
    digest.update(PATTERN[:rest])
    return digest.hexdigest()


def percentile(samples: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks; ``pct`` in [0, 100]."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def send_pattern(writer: asyncio.StreamWriter, start: int, count: int) -> None:
    view = memoryview(PATTERN)
    position, end = start, start + count
    while position < end:
        offset = position % len(PATTERN)
        size = min(len(PATTERN) - offset, end - position)
        writer.write(view[offset : offset + size])
        position += size
        await writer.drain()


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    prefix = await reader.readexactly(PREFIX.size)
    header_len, payload_len = PREFIX.unpack(prefix)
    decoder = PacketDecoder()
    decoder.receive_data(prefix + await reader.readexactly(header_len + payload_len))
    packet = decoder.next_packet()
    assert packet is not None
    return packet


def describe(packet: Packet) -> str:
    headers = dict(packet.headers)
    return f"status {headers.get('status')}: {headers.get('message', '')} {headers}"


def window_numbers(value: str) -> tuple[int, int]:
    first, _, second = value.partition(":")
    return int(first), int(second or 0)


async def open_connection(
    host: str, port: int, gate: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with gate:
        reader, writer = await asyncio.open_connection(host, port)
    writer.transport.set_write_buffer_limits(high=4 * MiB)
    return reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# --------------------------------------------------------------------------- uploads


async def negotiate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    size: int,
    buffer: int,
    name: str,
    key: str | None,
) -> tuple[str, int, int, int]:
    """Send a stream request; return (key, offset, bytes to send now, granted buffer)."""
    headers: dict[str, str | int] = {
        "route": UPLOAD_ROUTE,
        "x-stream": f"{size}:{buffer}",
        "name": name,
    }
    if key is not None:
        headers["x-stream-key"] = key
    writer.write(encode_packet(headers))
    reply = await read_packet(reader)
    if reply.headers.get("status") != "0":
        raise BenchError(f"stream request refused: {describe(reply)}")
    window, granted = window_numbers(reply.headers["x-stream"])
    key = reply.headers["x-stream-key"]
    offset = int(reply.headers["x-stream-offset"])
    to_send = size - offset if window == 0 else window
    return key, offset, to_send, granted


async def xstream_upload(
    host: str, port: int, gate: asyncio.Semaphore, size: int, buffer: int, name: str, sha: str
) -> UploadOutcome:
    started = time.perf_counter()
    reader, writer = await open_connection(host, port, gate)
    key: str | None = None
    try:
        for rounds in range(1, 10_001):
            key, offset, to_send, granted = await negotiate(reader, writer, size, buffer, name, key)
            await send_pattern(writer, offset, to_send)
            done = await read_packet(reader)
            missing, _ = window_numbers(done.headers.get("x-stream", "-1"))
            if done.headers.get("status") != "0":
                raise BenchError(f"stream failed: {describe(done)}")
            if missing == 0:
                result = json.loads(done.payload)
                if result.get("size") != size or result.get("sha256") != sha:
                    raise BenchError(f"completion does not match what was sent: {result}")
                return UploadOutcome(time.perf_counter() - started, True, "", granted, rounds)
        raise BenchError("stream not complete after 10,000 windows")
    finally:
        await close(writer)


async def baseline_upload(
    host: str, port: int, gate: asyncio.Semaphore, size: int
) -> UploadOutcome:
    started = time.perf_counter()
    reader, writer = await open_connection(host, port, gate)
    try:
        writer.write(BASELINE_HANDSHAKE.pack(size))
        await send_pattern(writer, 0, size)
        (stored,) = BASELINE_HANDSHAKE.unpack(await reader.readexactly(BASELINE_HANDSHAKE.size))
        if stored != size:
            raise BenchError(f"baseline stored {stored} of {size} bytes")
        return UploadOutcome(time.perf_counter() - started, True, "", 0, 1)
    finally:
        await close(writer)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 response: (status, lower-case headers); its body is read and dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif (length := int(headers.get("content-length", "0"))) > 0:
        await reader.readexactly(length)
    return status, headers


def request_head(method: str, path: str, host: str, headers: dict[str, str | int]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def tus_upload(
    host: str,
    port: int,
    gate: asyncio.Semaphore,
    size: int,
    path: str,
    chunk: int,
    name: str,
    with_upload: bool = False,
) -> UploadOutcome:
    """tus 1.0: creation, then PATCHes of ``chunk`` bytes (0: the whole upload in one).
    ``with_upload`` (creation-with-upload): the POST carries the first chunk."""
    started = time.perf_counter()
    reader, writer = await open_connection(host, port, gate)
    try:
        metadata = "filename " + base64.b64encode(name.encode()).decode()
        first = min(chunk or size, size) if with_upload else 0
        head: dict[str, str | int] = {
            "Tus-Resumable": "1.0.0",
            "Upload-Length": size,
            "Upload-Metadata": metadata,
            "Content-Length": first,
        }
        if with_upload:
            head["Content-Type"] = "application/offset+octet-stream"
        writer.write(request_head("POST", path, host, head))
        if first:
            await send_pattern(writer, 0, first)
        status, headers = await read_response(reader)
        if status != 201 or "location" not in headers:
            raise BenchError(f"creation answered {status} {headers}")
        if with_upload and int(headers.get("upload-offset", -1)) != first:
            raise BenchError(f"creation with {first} bytes answered {status} {headers}")
        location = urllib.parse.urlsplit(headers["location"]).path
        offset, rounds = first, 1 if first else 0
        while offset < size:
            count = min(chunk or size, size - offset)
            writer.write(
                request_head(
                    "PATCH",
                    location,
                    host,
                    {
                        "Tus-Resumable": "1.0.0",
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Offset": offset,
                        "Content-Length": count,
                    },
                )
            )
            await send_pattern(writer, offset, count)
            status, headers = await read_response(reader)
            if status != 204 or int(headers.get("upload-offset", -1)) != offset + count:
                raise BenchError(f"PATCH at {offset} answered {status} {headers}")
            offset += count
            rounds += 1
        return UploadOutcome(time.perf_counter() - started, True, "", 0, rounds)
    finally:
        await close(writer)


async def put_upload(
    host: str, port: int, gate: asyncio.Semaphore, size: int, path: str, name: str
) -> UploadOutcome:
    """One HTTP PUT of the whole upload (nginx WebDAV)."""
    started = time.perf_counter()
    reader, writer = await open_connection(host, port, gate)
    try:
        target = f"{path.rstrip('/')}/{name}"
        writer.write(request_head("PUT", target, host, {"Content-Length": size}))
        await send_pattern(writer, 0, size)
        status, headers = await read_response(reader)
        if status not in (201, 204):
            raise BenchError(f"PUT answered {status} {headers}")
        return UploadOutcome(time.perf_counter() - started, True, "", 0, 1)
    finally:
        await close(writer)


async def guarded(work: Awaitable[UploadOutcome], started: float) -> UploadOutcome:
    """The outcome of one upload; a failure is recorded, not raised."""
    try:
        return await work
    except (OSError, asyncio.IncompleteReadError, BenchError, ValueError, KeyError) as exc:
        return UploadOutcome(time.perf_counter() - started, False, f"{type(exc).__name__}: {exc}")


async def run_uploads(args: argparse.Namespace) -> Collected:
    """Keep ``concurrency`` uploads in flight until ``total`` have been made (default: one
    wave of ``concurrency``): a finished upload is replaced by a new one on a new connection."""
    size, concurrency = args.size, args.concurrency
    total = max(args.total or concurrency, concurrency)
    sha = pattern_sha256(size) if args.target == "xstream" else ""
    gate = asyncio.Semaphore(CONNECT_PARALLELISM)
    numbers = iter(range(total))
    outcomes: list[UploadOutcome] = []

    def one(index: int) -> Awaitable[UploadOutcome]:
        name = f"bench-{size}-{index}.bin"
        if args.target == "xstream":
            return xstream_upload(args.host, args.port, gate, size, args.buffer, name, sha)
        if args.target == "tus":
            return tus_upload(
                args.host,
                args.port,
                gate,
                size,
                args.path,
                args.chunk,
                name,
                args.creation_with_upload,
            )
        if args.target == "put":
            return put_upload(args.host, args.port, gate, size, args.path, name)
        return baseline_upload(args.host, args.port, gate, size)

    async def worker() -> None:
        for index in numbers:
            outcomes.append(await guarded(one(index), time.perf_counter()))

    started = time.perf_counter()
    cpu_before = cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    good = [o for o in outcomes if o.ok]
    latencies = [o.seconds for o in good]
    collected = Collected(
        "upload",
        args.target,
        {"size": size, "concurrency": concurrency, "total": total, "buffer": args.buffer},
    )
    collected.values = {
        "seconds": elapsed,
        "completed": len(good),
        "failed": len(outcomes) - len(good),
        "bytes": size * len(good),
        "mb_per_s": size * len(good) / elapsed / 1e6,
        "uploads_per_s": len(good) / elapsed,
        "latency_p50_s": percentile(latencies, 50),
        "latency_max_s": max(latencies, default=float("nan")),
        "granted_buffer": max((o.granted_buffer for o in good), default=0),
        "windows_max": max((o.rounds for o in good), default=0),
        "client_cpu_s": cpu_seconds() - cpu_before,
    }
    collected.errors = sorted({o.error for o in outcomes if not o.ok})[:10]
    return collected


# --------------------------------------------------------------------------- resume


async def half_send(
    host: str, port: int, gate: asyncio.Semaphore, size: int, buffer: int, index: int
) -> str:
    """Open a stream, send half of it, drop the connection; return the key."""
    reader, writer = await open_connection(host, port, gate)
    try:
        key, offset, to_send, _ = await negotiate(
            reader, writer, size, buffer, f"resume-{index}.bin", None
        )
        await send_pattern(writer, offset, min(to_send, size // 2))
        return key
    finally:
        await close(writer)


async def timed_resume(
    host: str, port: int, gate: asyncio.Semaphore, size: int, buffer: int, key: str
) -> tuple[float, int]:
    """From the resume request to the accept reply, on a connection opened beforehand."""
    reader, writer = await open_connection(host, port, gate)
    try:
        request = encode_packet(
            {
                "route": UPLOAD_ROUTE,
                "x-stream": f"{size}:{buffer}",
                "x-stream-key": key,
                "name": "resume.bin",
            }
        )
        started = time.perf_counter()
        writer.write(request)
        reply = await read_packet(reader)
        elapsed = time.perf_counter() - started
        if reply.headers.get("status") != "0":
            raise BenchError(f"resume refused: {describe(reply)}")
        return elapsed, int(reply.headers["x-stream-offset"])
    finally:
        await close(writer)


async def run_resume(args: argparse.Namespace) -> Collected:
    if args.target != "xstream":
        raise SystemExit("resume needs --target xstream: the baseline keeps no stream state")
    gate = asyncio.Semaphore(args.setup_concurrency)
    collected = Collected(
        "resume", args.target, {"count": args.count, "size": args.size, "buffer": args.buffer}
    )
    keys = await asyncio.gather(
        *(
            half_send(args.host, args.port, gate, args.size, args.buffer, i)
            for i in range(args.count)
        ),
        return_exceptions=True,
    )
    good_keys = [k for k in keys if isinstance(k, str)]
    collected.errors = sorted({f"setup: {k!r}" for k in keys if not isinstance(k, str)})[:5]
    # Let the server notice every dropped connection, so that no resume below has to take
    # over a stream whose old connection is still being torn down.
    await asyncio.sleep(args.settle)
    samples: list[float] = []
    offsets: list[int] = []
    serial = asyncio.Semaphore(1)
    for key in good_keys:
        try:
            elapsed, offset = await timed_resume(
                args.host, args.port, serial, args.size, args.buffer, key
            )
        except (OSError, asyncio.IncompleteReadError, BenchError, KeyError, ValueError) as exc:
            collected.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        samples.append(elapsed * 1000)
        offsets.append(offset)
    collected.errors = collected.errors[:10]
    collected.values = {
        "resumed": len(samples),
        "failed": args.count - len(samples),
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples, default=float("nan")),
        "mean_offset": statistics.fmean(offsets) if offsets else 0.0,
        "samples_ms": [round(s, 4) for s in samples],
    }
    return collected


# --------------------------------------------------------------------------- idle


async def run_idle(args: argparse.Namespace) -> Collected:
    gate = asyncio.Semaphore(args.connect_concurrency)
    collected = Collected("idle", args.target, {"count": args.count})

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await asyncio.open_connection(args.host, args.port)

    started = time.perf_counter()
    opened = await asyncio.gather(*(connect() for _ in range(args.count)), return_exceptions=True)
    connections = [c for c in opened if isinstance(c, tuple)]
    collected.errors = sorted({repr(c) for c in opened if not isinstance(c, tuple)})[:5]
    connect_seconds = time.perf_counter() - started
    print(json.dumps({"event": "ready", "open": len(connections)}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    except TimeoutError:
        collected.errors.append(f"no release after {args.hold} s")
    closed_by_server = sum(reader.at_eof() for reader, _ in connections)
    for _, writer in connections:
        writer.transport.abort()
    collected.values = {
        "open": len(connections),
        "closed_by_server": closed_by_server,
        "connect_seconds": connect_seconds,
    }
    return collected


# --------------------------------------------------------------------------- echo


class EchoClient(asyncio.Protocol):
    """Keeps ``depth`` /echo requests in flight: a new batch goes out when one is answered."""

    def __init__(self, batch: bytes, depth: int, payload: bytes, stats: EchoStats) -> None:
        self._batch = batch
        self._depth = depth
        self._payload = payload
        self._stats = stats
        self._buffer = bytearray()
        self._outstanding = 0
        self._transport: asyncio.Transport | None = None
        self.idle = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._send_batch()

    def _send_batch(self) -> None:
        assert self._transport is not None
        if not self._stats.running:
            if not self.idle.done():
                self.idle.set_result(None)
            return
        self._outstanding = self._depth
        self._transport.write(self._batch)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position = 0
        while len(buffer) - position >= PREFIX.size:
            header_len, payload_len = PREFIX.unpack_from(buffer, position)
            end = position + PREFIX.size + header_len + payload_len
            if len(buffer) < end:
                break
            block = bytes(buffer[position + PREFIX.size : position + PREFIX.size + header_len])
            payload = bytes(buffer[end - payload_len : end])
            if not self._ok(block, payload):
                self._stats.errors.append(f"bad echo reply: {block!r} {payload[:80]!r}")
                self._stats.running = False
            position = end
            self._stats.completed += 1
            self._outstanding -= 1
        del buffer[:position]
        if self._outstanding == 0:
            self._send_batch()

    def _ok(self, block: bytes, payload: bytes) -> bool:
        for line in block.split(b"\n"):
            if line.startswith(b"status:"):
                return line[7:].strip() == b"0" and json.loads(payload) == json.loads(self._payload)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stats.running:
            self._stats.errors.append(f"connection lost: {exc!r}")
        if not self.idle.done():
            self.idle.set_result(None)


@dataclass
class EchoStats:
    running: bool = True
    completed: int = 0
    errors: list[str] = field(default_factory=list)


async def run_echo(args: argparse.Namespace) -> Collected:
    payload = json.dumps({"message": "hello", "n": 42, "items": [1, 2, 3]}).encode()
    batch = b"".join(
        encode_packet({"route": ECHO_ROUTE, "id": str(i), "data-format": "json"}, payload)
        for i in range(args.depth)
    )
    stats = EchoStats()
    loop = asyncio.get_running_loop()
    clients: list[EchoClient] = []
    for _ in range(args.clients):
        _, client = await loop.create_connection(
            lambda: EchoClient(batch, args.depth, payload, stats), args.host, args.port
        )
        clients.append(client)
    cpu_before = cpu_seconds()
    started_count = stats.completed
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    elapsed = time.perf_counter() - started
    completed = stats.completed - started_count
    stats.running = False
    await asyncio.wait([c.idle for c in clients], timeout=5)
    collected = Collected(
        "echo", args.target, {"clients": args.clients, "depth": args.depth, "seconds": args.seconds}
    )
    collected.values = {
        "round_trips": completed,
        "seconds": elapsed,
        "round_trips_per_s": completed / elapsed,
        "client_cpu_s": cpu_seconds() - cpu_before,
    }
    collected.errors = stats.errors[:10]
    return collected


# --------------------------------------------------------------------------- entry


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SCENARIOS: Final[dict[str, Callable[[argparse.Namespace], Awaitable[Collected]]]] = {
    "upload": run_uploads,
    "resume": run_resume,
    "idle": run_idle,
    "echo": run_echo,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="xstream benchmark load generator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--target", choices=["xstream", "baseline", "tus", "put"], default="xstream"
    )
    parser.add_argument("--path", default="/files", help="tus endpoint or PUT folder")
    parser.add_argument("--chunk", type=int, default=0, help="tus PATCH size; 0: whole upload")
    parser.add_argument(
        "--creation-with-upload",
        action="store_true",
        help="tus: the creation POST carries the first chunk (the whole upload with --chunk 0)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit, seconds")
    parser.add_argument("--buffer", type=int, default=256 * 1024, help="x-stream buffer B")
    commands = parser.add_subparsers(dest="scenario", required=True)
    upload = commands.add_parser("upload")
    upload.add_argument("--size", type=int, required=True)
    upload.add_argument("--concurrency", type=int, default=1)
    upload.add_argument("--total", type=int, help="uploads in all (default: --concurrency)")
    resume = commands.add_parser("resume")
    resume.add_argument("--count", type=int, default=500)
    resume.add_argument("--size", type=int, default=MiB)
    resume.add_argument("--setup-concurrency", type=int, default=32)
    resume.add_argument("--settle", type=float, default=3.0)
    idle = commands.add_parser("idle")
    idle.add_argument("--count", type=int, default=5000)
    idle.add_argument("--connect-concurrency", type=int, default=CONNECT_PARALLELISM)
    idle.add_argument("--hold", type=float, default=120.0)
    echo = commands.add_parser("echo")
    echo.add_argument("--clients", type=int, default=64)
    echo.add_argument("--depth", type=int, default=16)
    echo.add_argument("--seconds", type=float, default=5.0)
    return parser


async def run(args: argparse.Namespace) -> Collected:
    return await asyncio.wait_for(SCENARIOS[args.scenario](args), args.timeout)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise_open_files_limit()
    collected = uvloop.run(run(args))
    print(json.dumps(asdict(collected)), flush=True)


if __name__ == "__main__":
    main()
