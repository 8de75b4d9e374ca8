"""What hostile clients can make a server hold: its RSS under four attack patterns, for one
or two source trees (the same way ``benchmarks.ab`` runs them), each pattern bounded in
count and time, on loopback only.

    .venv/bin/python -m benchmarks.attacks --before /work/before --after . [--connections 300]
    .venv/bin/python -m benchmarks.attacks --before /work/before --after . --scale

``--scale`` uses the counts of issue 14's attacker: 600 declared payloads, 1,000 stopped
readers, 1,000 drips, 3,000 stalled windows from three loopback addresses (127.0.0.1-3);
``--count PATTERN=N`` sets one pattern's count.

Patterns (``N`` connections each, all open at once):

* ``declared``: a packet declaring a 1 MiB payload, 900 KiB of it sent, then silence;
* ``stopped-reader``: 4 MiB of pipelined ``/echo`` requests, no reply ever read;
* ``drip``: one byte of a header block every 0.5 s (the server runs with
  ``XSTREAM_PACKET_TIMEOUT=3``; a server without that deadline keeps them);
* ``stalled-window``: a 2 MiB stream with 1 MiB buffers, 1 MiB − 1 byte sent, then silence.

For each: the server's RSS before, at the peak (all connections in place, sampled until it
stops growing), and 3 s and 10 s after they are all closed; and for ``drip`` how many the
server still holds after 6 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import psutil

from xstream_server.protocol import encode_packet
from xstream_server.protocol.codec import PREFIX

from .ab import Server, source_tree, start_server
from .processes import LOOPBACK, server_rss, start_redis

MiB: Final = 1024 * 1024
ENV: Final = {"XSTREAM_PACKET_TIMEOUT": "3"}

Writer = asyncio.StreamWriter


# Where the client's connections come from, in turn (loopback addresses: 127.0.0.0/8).
SOURCES: list[str] = [LOOPBACK]
_opened = 0


async def _open(port: int) -> tuple[asyncio.StreamReader, Writer]:
    global _opened
    source = SOURCES[_opened % len(SOURCES)]
    _opened += 1
    return await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0), limit=2**16)


async def declared(port: int) -> Writer:
    _, writer = await _open(port)
    header = b"route: /echo\r\ndata-format: json\r\n"
    writer.write(PREFIX.pack(len(header), MiB) + header + b"[" * (900 * 1024))
    await writer.drain()
    return writer


async def stopped_reader(port: int) -> Writer:
    _, writer = await _open(port)
    packet = encode_packet({"route": "/echo", "data-format": "json"}, b'{"x": 1}')
    writer.write(packet * (4 * MiB // len(packet)))
    # No drain: the server stops reading at some point and the rest stays with us.
    return writer


async def stalled_window(port: int) -> Writer:
    reader, writer = await _open(port)
    writer.write(encode_packet({"route": "/upload-file", "x-stream": f"{2 * MiB}:{MiB}"}))
    await writer.drain()
    reply = await reader.read(4096)
    if b"status: 0" not in reply:
        raise RuntimeError(f"stream refused: {reply[:200]!r}")
    writer.write(b"\0" * (MiB - 1))
    await writer.drain()
    return writer


async def drip(port: int, stop: asyncio.Event) -> Writer:
    _, writer = await _open(port)
    header = PREFIX.pack(200, 0) + b"route: /echo\r\n" + b"x" * 186

    async def dripping() -> None:
        for byte in header:
            if stop.is_set() or writer.is_closing():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(0.5)

    asyncio.get_running_loop().create_task(dripping())
    return writer


def held_connections(pid: int, port: int) -> int:
    process = psutil.Process(pid)
    return sum(
        1
        for c in process.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def attack(server: Server, name: str, count: int) -> dict[str, Any]:
    pid = server.process.pid
    before = server_rss(pid)
    stop = asyncio.Event()
    openers: dict[str, Callable[[int], Awaitable[Writer]]] = {
        "declared": declared,
        "stopped-reader": stopped_reader,
        "stalled-window": stalled_window,
        "drip": lambda port: drip(port, stop),
    }
    opened = await asyncio.gather(
        *(openers[name](server.port) for _ in range(count)), return_exceptions=True
    )
    writers = [w for w in opened if isinstance(w, asyncio.StreamWriter)]
    errors = [repr(e) for e in opened if isinstance(e, BaseException)][:3]
    settle = 6.0 if name == "drip" else 2.0
    peak = before
    # The peak: sampled for ``settle`` seconds, and on while the server still grows (it
    # may still be working through what the connections sent), 60 s at the most.
    start = grew = time.monotonic()
    while True:
        now = time.monotonic()
        rss = server_rss(pid)
        if rss > peak + MiB:
            grew = now
        peak = max(peak, rss)
        if now - start >= 60 or (now - start >= settle and now - grew >= 2.0):
            break
        await asyncio.sleep(0.1)
    held = held_connections(pid, server.port)
    stop.set()
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(3.0)
    after = server_rss(pid)
    await asyncio.sleep(7.0)
    after_10 = server_rss(pid)
    return {
        "pattern": name,
        "connections": len(writers),
        "errors": errors,
        "rss_before_mib": round(before / MiB, 1),
        "rss_peak_mib": round(peak / MiB, 1),
        "rss_after_mib": round(after / MiB, 1),
        "rss_after_10s_mib": round(after_10 / MiB, 1),
        "held_at_end": held,
    }


PATTERNS: Final = ("declared", "stopped-reader", "drip", "stalled-window")
# Issue 14's attacker.
SCALE: Final = {"declared": 600, "stopped-reader": 1000, "drip": 1000, "stalled-window": 3000}
SCALE_SOURCES: Final = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


async def run(
    servers: list[Server], counts: dict[str, int], patterns: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for name in patterns:
        for server in servers:
            row = {"tree": server.tree.label, **await attack(server, name, counts[name])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pattern", action="append", choices=PATTERNS, help="default: all")
    parser.add_argument("--scale", action="store_true", help="issue 14's counts and sources")
    parser.add_argument("--count", action="append", default=[], help="PATTERN=N")
    parser.add_argument("--source", action="append", help="a loopback address to connect from")
    options = parser.parse_args(argv)
    counts = dict.fromkeys(PATTERNS, options.connections)
    if options.scale:
        counts.update(SCALE)
        SOURCES[:] = SCALE_SOURCES
    for given in options.count:
        name, _, number = given.partition("=")
        if name not in PATTERNS or not number.isdigit():
            parser.error(f"--count {given}: PATTERN=N with PATTERN one of {', '.join(PATTERNS)}")
        counts[name] = int(number)
    if options.source:
        SOURCES[:] = options.source
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trees = [source_tree("after", options.after)]
    if options.before is not None:
        trees.insert(0, source_tree("before", options.before))
    with tempfile.TemporaryDirectory(prefix="xstream-attacks-") as directory:
        work = Path(directory)
        redis, url = start_redis(work)
        servers = []
        try:
            for db, tree in enumerate(trees):
                servers.append(start_server(tree, work, url, db, env=ENV))
            rows = asyncio.run(run(servers, counts, options.pattern or list(PATTERNS)))
        finally:
            for server in servers:
                server.process.stop()
            redis.stop()
    print("| pattern | tree | conns | RSS before | peak | 3 s after | 10 s after | held at end |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['pattern']} | {row['tree']} | {row['connections']} |"
            f" {row['rss_before_mib']} MiB | {row['rss_peak_mib']} MiB |"
            f" {row['rss_after_mib']} MiB | {row['rss_after_10s_mib']} MiB | {row['held_at_end']} |"
        )
    if options.out is not None:
        options.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
