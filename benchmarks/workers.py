"""Aggregate upload throughput of ``xstream-server --workers N`` (N = 1, 2), fsync on and off.

    python -m benchmarks.workers [--size BYTES] [--concurrency C]

Each run starts a fresh server (embedded Redis, its own data directory) on free loopback
ports, drives it with ``benchmarks.loadgen upload`` and prints one line per run and the
loadgen's JSON. Run it through ``/work/bin/bench-run`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


def run(workers: int, fsync: bool, size: int, concurrency: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="xs-workers-") as work:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xstream_server.cli.server",
                *("--port", "0", "--http-port", "0", "--data-dir", str(Path(work) / "data")),
                *("--workers", str(workers), "--fsync" if fsync else "--no-fsync"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            port = 0
            deadline = time.monotonic() + 60
            # The supervisor's line comes once every worker serves.
            while not port and time.monotonic() < deadline:
                line = server.stderr.readline()
                if not line:
                    raise RuntimeError("server exited")
                match = _LISTENING.search(line)
                if match:
                    port = int(match.group(1))
            # Keep the server's log from filling the pipe while the load runs.
            subprocess_drain(server)
            started = time.monotonic()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.loadgen",
                    *("--port", str(port), "--timeout", "300"),
                    *("upload", "--size", str(size), "--concurrency", str(concurrency)),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            elapsed = time.monotonic() - started
            report: dict[str, object] = json.loads(result.stdout)
            report.update(workers=workers, fsync=fsync, wall_seconds=round(elapsed, 2))
            return report
        finally:
            server.terminate()
            server.wait(60)


def subprocess_drain(process: subprocess.Popen[str]) -> None:
    import threading

    stream = process.stderr
    assert stream is not None
    threading.Thread(target=stream.read, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32 * MiB)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    for fsync in (True, False):
        for workers in (1, 2):
            report = run(workers, fsync, args.size, args.concurrency)
            total = args.size * args.concurrency
            print(
                f"workers={workers} fsync={'on' if fsync else 'off'}: "
                f"{args.concurrency} x {args.size // MiB} MiB in {report['wall_seconds']} s "
                f"= {total / MiB / float(str(report['wall_seconds'])):.0f} MiB/s (client wall)"
            )
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
