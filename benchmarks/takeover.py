"""Takeover time across instances: how long after an instance dies (SIGKILL) mid-upload
another instance accepts the stream's resume.

    python -m benchmarks.takeover [--runs 10] [--lease 5 2] [--redis single cluster]

Two ``xstream-server`` processes, A and B, on their own ports share one Redis (a single
``redis-server``, or a real 3-master Redis Cluster) and one data directory. Each run opens
a stream on A and sends 1 MiB of its 4 MiB, waits until Redis records a checkpoint, kills A
with SIGKILL, and then asks B to resume the stream: B refuses nobody, it waits (up to its
takeover timeout) for the dead owner's lease to lapse and then accepts. The figure is the
time from the SIGKILL to B's accept reply, and the offset B reports. A is started again for
the next run. Run it through ``/work/bin/bench-run`` on a shared machine.

The lease is renewed every quarter of ``--lease-seconds`` by its owner, so B should accept
between 3/4 of the lease and the whole lease after the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from tests.conftest import RedisClusterProcesses, RedisProcess
from xstream_server.protocol import Packet, PacketDecoder, encode_packet

MiB = 1024 * 1024
TOTAL = 4 * MiB
SENT = MiB
_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


class Instance:
    """One ``xstream-server`` child process; its log is drained in a thread."""

    def __init__(self, data_dir: Path, redis_url: str, lease: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "xstream_server.cli.server", "--host", "127.0.0.1"),
                *("--port", "0", "--http-port", "0", "--data-dir", str(data_dir)),
                *("--redis-url", redis_url, "--lease-seconds", str(lease)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        stream = self.process.stderr
        assert stream is not None
        self.port = 0
        deadline = time.monotonic() + 60
        while not self.port and time.monotonic() < deadline:
            line = stream.readline()
            if not line:
                raise RuntimeError("xstream-server exited at start-up")
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
        if not self.port:
            self.kill()
            raise RuntimeError("xstream-server did not start in 60 s")
        threading.Thread(target=stream.read, daemon=True).start()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str | int]
) -> Packet:
    writer.write(encode_packet(headers))
    await writer.drain()
    decoder = PacketDecoder()
    while (packet := decoder.next_packet()) is None:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        decoder.receive_data(data)
    return packet


async def one_takeover(a: Instance, b: Instance, probe: Any) -> tuple[float, int]:
    """Start a stream on A, kill A, resume on B: (seconds from the kill to B's accept, the
    offset B reports)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
    accept = await _request(reader, writer, {"route": "/upload-file", "x-stream": f"{TOTAL}:65536"})
    assert accept.headers["status"] == "0", accept.headers
    key = accept.headers["x-stream-key"]
    writer.write(os.urandom(SENT))
    await writer.drain()
    record = f"xs:{{{key}}}:stream"
    deadline = time.monotonic() + 30
    # A checkpoints within its checkpoint cadence (1 s): wait until Redis has it.
    while int(await asyncio.to_thread(probe.hget, record, "offset") or 0) < SENT:
        if time.monotonic() > deadline:
            raise RuntimeError("A never recorded the bytes sent")
        await asyncio.sleep(0.01)
    killed = time.monotonic()
    a.process.send_signal(signal.SIGKILL)
    writer.close()
    while True:
        reader_b, writer_b = await asyncio.open_connection("127.0.0.1", b.port)
        try:
            reply = await _request(
                reader_b,
                writer_b,
                {"route": "/upload-file", "x-stream": f"{TOTAL}:65536", "x-stream-key": key},
            )
        finally:
            writer_b.close()
        if reply.headers["status"] == "0":
            return time.monotonic() - killed, int(reply.headers["x-stream-offset"])
        if reply.headers["status"] != "503":  # 503: still busy past B's takeover timeout
            raise RuntimeError(f"B refused the resume: {reply.headers}")


def measure(mode: str, lease: float, runs: int, work: Path) -> dict[str, Any]:
    store: RedisProcess | RedisClusterProcesses
    if mode == "cluster":
        store = RedisClusterProcesses(work / f"cluster-{lease}")
    else:
        store = RedisProcess(work / f"redis-{lease}")
    store.start()
    url = store.url
    probe: Any = (
        redis.RedisCluster(host="127.0.0.1", port=store.nodes[0].port)
        if isinstance(store, RedisClusterProcesses)
        else redis.Redis.from_url(url)
    )
    data_dir = work / f"data-{mode}-{lease}"
    times: list[float] = []
    offsets: list[int] = []
    b = Instance(data_dir, url, lease)
    try:
        for run in range(runs):
            a = Instance(data_dir, url, lease)
            try:
                seconds, offset = asyncio.run(one_takeover(a, b, probe))
            finally:
                a.kill()
            times.append(seconds)
            offsets.append(offset)
            print(f"{mode} lease {lease:g} s, run {run + 1}: {seconds:.3f} s, resumed at {offset}")
    finally:
        b.kill()
        probe.close()
        store.stop()
    return {
        "redis": mode,
        "lease_seconds": lease,
        "runs": runs,
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "times_s": [round(t, 3) for t in times],
        "offsets": offsets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lease", type=float, nargs="+", default=[5.0, 2.0])
    parser.add_argument("--redis", nargs="+", choices=["single", "cluster"], default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    modes = args.redis or ["single", "cluster"]
    results = []
    with tempfile.TemporaryDirectory(prefix="xs-takeover-") as work:
        for lease in args.lease:
            for mode in modes:
                results.append(measure(mode, lease, args.runs, Path(work)))
    lines = [
        "| Redis | lease | runs | median | min | max |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['redis']} | {r['lease_seconds']:g} s | {r['runs']} | {r['median_s']:.2f} s"
            f" | {r['min_s']:.2f} s | {r['max_s']:.2f} s |"
            for r in results
        ),
    ]
    print("\ntime from SIGKILL of A to B's accept of the resume\n" + "\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{time.strftime('%Y-%m-%d')}-takeover"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(
        "# Takeover time across instances\n\n"
        "`python -m benchmarks.takeover`: time from the SIGKILL of instance A, mid-upload,\n"
        "to instance B's accept of the stream's resume (B waits for A's lease to lapse).\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
