"""uTP against TCP and libutp, in one run on this machine (a few seconds at the default size):

    .venv/bin/python -m benchmarks.utp [--size MiB] [--loss 0.01] [--profile]

One in-process server (embedded Redis, fsync off) takes the same file uploaded over TCP, over
uTP, and over uTP through a relay dropping, duplicating and delaying ``--loss`` of the
datagrams each; then libutp (npm utp-native under Node, tests/utp_interop) moves the same
number of bytes between two of its sockets in one Node process. For each: MB/s and CPU
seconds per MB (client and server share this process, so that CPU is both ends).
``--profile`` prints where the clean uTP upload's CPU goes.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from handlers import app
from tests.utp.relay import start_relay
from xstream_server.client import upload
from xstream_server.client.connection import Transport
from xstream_server.server import Server
from xstream_server.settings import ServerSettings

MiB = 1024 * 1024
INTEROP = Path(__file__).resolve().parent.parent / "tests" / "utp_interop"


async def _measure(name: str, size: int, run: Callable[[], Awaitable[str]]) -> dict[str, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    digest = await run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "name": name,
        "MB/s": round(size / 1e6 / wall, 1),
        "CPU s/MB": round(cpu / (size / 1e6), 4),
        "sha256": digest[:12],
    }


def _libutp_pair(size: int) -> dict[str, object] | None:
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "utp-native").is_dir():
        return None
    output = subprocess.run(
        [node, "peer.js", "pair", str(size)],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result = json.loads(output)
    return {
        "name": "libutp -> libutp (Node)",
        "MB/s": round(size / 1e6 / result["seconds"], 1),
        "CPU s/MB": round(result["cpu_seconds"] / (size / 1e6), 4),
        "sha256": "-",
    }


async def main(size: int, loss: float, profile: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="xstream-utp-bench-") as work:
        path = Path(work) / "payload.bin"
        block = hashlib.sha256(b"seed").digest() * (MiB // 32)
        with path.open("wb") as file:
            for _ in range(size // MiB):
                file.write(block)
        settings = ServerSettings(
            host="127.0.0.1", port=0, utp_port=0, data_dir=Path(work) / "data", fsync=False
        )
        async with Server(app, settings) as server:
            tcp = f"127.0.0.1:{server.port}"
            utp = f"127.0.0.1:{server.utp_port}"

            async def over(address: str, transport: Transport) -> str:
                result = await upload(path, server=address, transport=transport)
                return result.sha256

            async def lossy() -> str:
                relay_transport, _ = await start_relay(("127.0.0.1", server.utp_port or 0), 1, loss)
                try:
                    port = relay_transport.get_extra_info("sockname")[1]
                    return await over(f"127.0.0.1:{port}", "utp")
                finally:
                    relay_transport.close()

            rows = [
                await _measure("TCP", size, lambda: over(tcp, "tcp")),
                await _measure("uTP", size, lambda: over(utp, "utp")),
                await _measure(f"uTP, {loss:.0%} loss/dup/delay", size, lossy),
            ]
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await over(utp, "utp")
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    libutp = _libutp_pair(size)
    if libutp is not None:
        rows.append(libutp)
    print(f"{size // MiB} MiB, loopback")
    print(f"{'':34} {'MB/s':>8} {'CPU s/MB':>10}  sha256")
    for row in rows:
        print(f"{row['name']:34} {row['MB/s']:>8} {row['CPU s/MB']:>10}  {row['sha256']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="MiB to upload [32]")
    parser.add_argument("--loss", type=float, default=0.01, help="datagram fault rate [0.01]")
    parser.add_argument("--profile", action="store_true")
    arguments = parser.parse_args()
    uvloop.run(main(arguments.size * MiB, arguments.loss, arguments.profile))
