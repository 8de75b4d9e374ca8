"""What a receiver pays per GiB to move bytes from a loopback TCP socket into a file, by two
paths and two read sizes, without xstream: ``recv_into`` a preallocated buffer then
``os.write`` (what xstream's inline windows do), against ``os.splice`` socket → pipe → file
(no user-space copy). A forked sender writes 1 GiB per measurement; the receiver's CPU
(user + system, ``getrusage``) and wall time are printed as JSON lines, with a median line
per path at the end.

``python -m benchmarks.read_paths [--size-mib 1024] [--rounds 2]``; Linux only (splice).
Run it through ``bench-run`` like every benchmark.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
_F_SETPIPE_SZ: Final = 1031  # fcntl: a pipe's capacity


def _send(port: int, size: int) -> None:
    chunk = memoryview(bytearray(MiB))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sent = 0
        while sent < size:
            sent += sock.send(chunk[: min(len(chunk), size - sent)])
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the receiver has everything


def _receive_recv(conn: socket.socket, fd: int, size: int, read_size: int) -> int:
    buffer = memoryview(bytearray(read_size))
    got = 0
    while got < size:
        n = conn.recv_into(buffer)
        if not n:
            break
        view = buffer[:n]
        while view:
            view = view[os.write(fd, view) :]
        got += n
    return got


def _receive_splice(conn: socket.socket, fd: int, size: int, read_size: int) -> int:
    pipe_out, pipe_in = os.pipe()
    try:
        fcntl.fcntl(pipe_in, _F_SETPIPE_SZ, read_size)
        got = 0
        while got < size:
            n = os.splice(conn.fileno(), pipe_in, min(read_size, size - got))
            if not n:
                break
            moved = 0
            while moved < n:
                moved += os.splice(pipe_out, fd, n - moved)
            got += n
        return got
    finally:
        os.close(pipe_out)
        os.close(pipe_in)


def measure(path: str, read_size: int, size: int, target: Path) -> dict[str, float | str]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # the sender
        listener.close()
        try:
            _send(port, size)
        finally:
            os._exit(0)
    conn, _ = listener.accept()
    listener.close()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        receive = _receive_recv if path == "recv+write" else _receive_splice
        got = receive(conn, fd, size, read_size)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        conn.send(b"k")
    finally:
        conn.close()
        os.waitpid(pid, 0)
        os.close(fd)
        target.unlink()
    if got != size:
        raise SystemExit(f"{path}: received {got} of {size} bytes")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "path": path,
        "read_kib": read_size // KiB,
        "mb_per_s": round(size / seconds / 1e6),
        "cpu_s_per_gib": round(cpu / (size / GiB), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mib * MiB
    kinds = [(p, r) for r in (256 * KiB, MiB) for p in ("recv+write", "splice")]
    results: dict[tuple[str, int], list[dict[str, float | str]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="xstream-read-paths-") as work:
        target = Path(work) / "sink.bin"
        for _ in range(args.rounds):
            for path, read_size in kinds:
                figure = measure(path, read_size, size, target)
                results[path, read_size].append(figure)
                print(json.dumps(figure), flush=True)
    for (path, read_size), figures in results.items():
        summary = {
            "median": path,
            "read_kib": read_size // KiB,
            "mb_per_s": statistics.median(float(f["mb_per_s"]) for f in figures),
            "cpu_s_per_gib": statistics.median(float(f["cpu_s_per_gib"]) for f in figures),
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
