"""uTP against TCP and against libutp, interleaved in one run on this machine:

    .venv/bin/python -m benchmarks.utp [--size 256] [--rounds 2] [--loss 0.01]
                                       [--py-spy FILE] [--json FILE]

An ``xstream-server`` process (its own Redis, fsync off, TCP and uTP ports) takes the same
file uploaded by the Python client in this process over TCP, over uTP, and over uTP through
the lossy relay of tests/utp/relay.py (a process of its own, dropping, duplicating and
delaying ``--loss`` of the datagrams each); libutp (npm utp-native under Node) moves the
same number of bytes from one Node process to another, and between two sockets of one Node
process. Each round runs the five in turn, so that a change in the machine's load shows in
every row rather than in one.

For each upload: MB/s (wall clock, first byte to result), and CPU seconds per MB of the
receiving side (the xstream server process, every thread; the receiving Node process) and
of the sending side (this process; the sending Node process). ``--py-spy FILE`` then
samples the server with py-spy during one more clean uTP upload, writes the raw stacks to
FILE and prints the functions where its CPU goes (self time, and total time of a few).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import hashlib
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import uvloop

from benchmarks.processes import VENV_BIN, ManagedProcess, free_port, start_redis
from xstream_server.client import upload
from xstream_server.client.connection import Transport

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "tests" / "utp_interop"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Line:
    """A child process that speaks JSON lines on stdout and ends when its stdin closes."""

    def __init__(self, command: list[str], cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args!r} ended without output")
        document: dict[str, Any] = json.loads(line)
        return document

    def close(self) -> dict[str, Any] | None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        rest = self.process.stdout.read().strip().splitlines()
        self.process.wait(10)
        return json.loads(rest[-1]) if rest else None


@contextlib.contextmanager
def lossy_relay(utp_port: int, rate: float, seed: int) -> Iterator[tuple[int, dict[str, Any]]]:
    relay = Line(
        [sys.executable, "-m", "tests.utp.relay", f"127.0.0.1:{utp_port}", str(rate), str(seed)]
    )
    counts: dict[str, Any] = {}
    try:
        yield int(relay.read()["port"]), counts
    finally:
        counts.update(relay.close() or {})


def row(
    name: str, size: int, wall: float, receiver_cpu: float, sender_cpu: float
) -> dict[str, Any]:
    mb = size / 1e6
    return {
        "name": name,
        "MB/s": mb / wall,
        "server CPU s/MB": receiver_cpu / mb,
        "client CPU s/MB": sender_cpu / mb,
    }


async def xstream_upload(
    name: str,
    path: Path,
    size: int,
    address: str,
    transport: Transport,
    server_pid: int,
    digest: str,
) -> dict[str, Any]:
    cpu_server, cpu_client = cpu_of(server_pid), time.process_time()
    started = time.perf_counter()
    result = await upload(path, server=address, transport=transport, buffer_size=MiB)
    wall = time.perf_counter() - started
    cpu_server, cpu_client = cpu_of(server_pid) - cpu_server, time.process_time() - cpu_client
    if result.sha256 != digest or result.size != size:
        raise RuntimeError(f"{name}: sha256 {result.sha256}, expected {digest}")
    return row(name, size, wall, cpu_server, cpu_client)


def libutp_transfer(sink: Line, port: int, size: int) -> dict[str, Any]:
    sent = subprocess.run(
        ["node", "peer.js", "send", str(port), str(size)],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    sender = json.loads(sent.stdout)
    receiver = sink.read()
    if receiver["received"] != size:
        raise RuntimeError(f"libutp sink got {receiver['received']} of {size} bytes")
    return row(
        "libutp -> libutp (2 Node processes)",
        size,
        sender["seconds"],
        receiver["cpu_seconds"],
        sender["cpu_seconds"],
    )


def libutp_pair(size: int) -> dict[str, Any]:
    """Both libutp ends in one Node process (its CPU is both ends', in the receiver column)."""
    done = subprocess.run(
        ["node", "peer.js", "pair", str(size)],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout)
    if result["received"] != size:
        raise RuntimeError(f"libutp pair moved {result['received']} of {size} bytes")
    measured = row(
        "libutp, both ends in 1 Node process", size, result["seconds"], result["cpu_seconds"], 0.0
    )
    measured["client CPU s/MB"] = float("nan")
    return measured


def profile_summary(raw: Path, top: int = 25) -> str:
    """Self and total sample counts per function from py-spy's raw (collapsed) stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [
            f.rsplit(" (", 1)[0] + " (" + f.rsplit(" (", 1)[1].split(":")[0] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples of the server process"]
    lines.append(f"{'self %':>7} {'total %':>8}  function (file)")
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / samples:7.1f} {100 * total[frame] / samples:8.1f}  {frame}")
    return "\n".join(lines)


def main(
    size: int,
    rounds: int,
    loss: float,
    py_spy: Path | None,
    out: Path | None,
    with_libutp: bool = True,
) -> None:
    with tempfile.TemporaryDirectory(prefix="xstream-utp-bench-") as name:
        work = Path(name)
        path, digest = _payload(work / "payload.bin", size)
        redis, redis_url = start_redis(work)
        tcp_port, utp_port = free_port(), free_udp_port()
        server = ManagedProcess(
            "xstream-server",
            [
                str(VENV_BIN / "xstream-server"),
                *("--port", str(tcp_port), "--utp-port", str(utp_port), "--no-http"),
                *("--data-dir", str(work / "data"), "--redis-url", redis_url, "--no-fsync"),
            ],
            work / "server.log",
            "listening on",
        )
        sink = Line(["node", "peer.js", "sink"], cwd=INTEROP)
        results: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        relay_counts: list[dict[str, Any]] = []
        profile = None
        try:
            server.start()
            sink_port = int(sink.read()["port"])
            tcp, utp = f"127.0.0.1:{tcp_port}", f"127.0.0.1:{utp_port}"
            lossy_name = f"uTP, {loss:.0%} drop + {loss:.0%} dup + {loss:.0%} delay"
            for number in range(1, rounds + 1):
                measurements: list[Callable[[], dict[str, Any]]] = [
                    lambda: _xstream("TCP", path, size, tcp, "tcp", server.pid, digest),
                    lambda: _xstream("uTP", path, size, utp, "utp", server.pid, digest),
                    functools.partial(
                        _lossy,
                        lossy_name,
                        path,
                        size,
                        utp_port,
                        loss,
                        number,
                        server.pid,
                        digest,
                        relay_counts,
                    ),
                ]
                if with_libutp:
                    measurements.append(lambda: libutp_transfer(sink, sink_port, size))
                    measurements.append(lambda: libutp_pair(size))
                for measure in measurements:
                    result = measure()
                    results[result["name"]].append(result)
                    print(_format(result, f"round {number}"), flush=True)
                    _remove_finished(work / "data")
            if py_spy is not None:
                profile = _profile(py_spy, server.pid, path, size, utp, digest)
        finally:
            sink.close()
            server.stop()
            redis.stop()
    print()
    print(_table(results, size, rounds))
    print(f"relay: {relay_counts}")
    if profile is not None:
        print()
        print(profile)
    if out is not None:
        document = {"size": size, "rounds": results, "relay": relay_counts, "profile": profile}
        out.write_text(json.dumps(document, indent=1))


def _payload(path: Path, size: int) -> tuple[Path, str]:
    hasher = hashlib.sha256()
    block = hashlib.sha256(b"seed").digest() * (MiB // 32)
    with path.open("wb") as file:
        for index in range(size // MiB):
            chunk = index.to_bytes(8, "big") + block[8:]
            hasher.update(chunk)
            file.write(chunk)
    return path, hasher.hexdigest()


def _xstream(
    name: str, path: Path, size: int, address: str, transport: Transport, pid: int, digest: str
) -> dict[str, Any]:
    return uvloop.run(xstream_upload(name, path, size, address, transport, pid, digest))


def _lossy(
    name: str,
    path: Path,
    size: int,
    utp_port: int,
    loss: float,
    seed: int,
    pid: int,
    digest: str,
    relay_counts: list[dict[str, Any]],
) -> dict[str, Any]:
    with lossy_relay(utp_port, loss, seed) as (port, counts):
        measurement = _xstream(name, path, size, f"127.0.0.1:{port}", "utp", pid, digest)
    relay_counts.append(counts)
    return measurement


def _profile(raw: Path, pid: int, path: Path, size: int, address: str, digest: str) -> str:
    spy = subprocess.Popen(
        [
            *(str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw"),
            *("--rate", "250", "--nonblocking", "--output", str(raw)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        _xstream("uTP (profiled)", path, size, address, "utp", pid, digest)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and ends
        _, err = spy.communicate(timeout=60)
    if not raw.exists():
        return f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"
    return profile_summary(raw)


def _remove_finished(data: Path) -> None:
    for item in data.rglob("*"):
        if item.is_file():
            item.unlink()


def _format(result: dict[str, Any], label: str) -> str:
    return (
        f"{label:10} {result['name']:38} {result['MB/s']:7.1f} MB/s  "
        f"server {result['server CPU s/MB']:.4f} s/MB  client {result['client CPU s/MB']:.4f} s/MB"
    )


def _table(results: dict[str, list[dict[str, Any]]], size: int, rounds: int) -> str:
    lines = [
        f"{size // MiB} MiB over loopback, {rounds} rounds interleaved (median; min-max)",
        "| path | MB/s | receiver CPU s/MB | sender CPU s/MB |",
        "|---|---:|---:|---:|",
    ]
    for name, rows in results.items():
        cells = []
        for field in ("MB/s", "server CPU s/MB", "client CPU s/MB"):
            values = [r[field] for r in rows]
            digits = 1 if field == "MB/s" else 4
            cells.append(
                f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="MiB to upload [256]")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds [2]")
    parser.add_argument("--loss", type=float, default=0.01, help="datagram fault rate [0.01]")
    parser.add_argument("--py-spy", type=Path, help="profile the server; raw stacks to FILE")
    parser.add_argument("--json", type=Path, help="write the measurements to FILE")
    parser.add_argument("--no-libutp", action="store_true", help="xstream's rows only")
    arguments = parser.parse_args()
    if shutil.which("node") is None or not (INTEROP / "node_modules" / "utp-native").is_dir():
        sys.exit("needs Node and utp-native (scripts/setup --dev)")
    main(
        arguments.size * MiB,
        arguments.rounds,
        arguments.loss,
        arguments.py_spy,
        arguments.json,
        not arguments.no_libutp,
    )
