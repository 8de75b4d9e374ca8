"""Where the server's time goes: py-spy samples an xstream server while the load generator
runs one scenario against it; writes a flame graph (SVG) and prints the functions that take
the most samples, per thread.

``python -m benchmarks.profile --scenario single|concurrent|small [--http] [--out DIR]``
(needs ``pip install py-spy``; py-spy attaches to a child process, which works as root or
where ptrace is allowed). Run it through ``bench-run`` like every benchmark.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from .processes import (
    LOOPBACK,
    VENV_BIN,
    ManagedProcess,
    free_port,
    removing_new_files,
    run_loadgen,
    start_redis,
    upload_timeout,
)

MiB: Final = 1024 * 1024
SCENARIOS: Final = {
    "single": (1024 * MiB, 1, 1),
    "concurrent": (32 * MiB, 64, 64),
    "concurrent16": (32 * MiB, 16, 32),
    "small": (MiB, 64, 500),
}


def summarise(collapsed: Path, top: int) -> str:
    """Self time per (thread, function) from py-spy's collapsed stacks."""
    per_thread: collections.Counter[str] = collections.Counter()
    own: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0]
        samples = int(count)
        per_thread[thread] += samples
        own[(thread, frames[-1])] += samples
    lines = []
    for thread, total in per_thread.most_common():
        lines.append(f"{thread}: {total} samples")
        for (name, frame), samples in own.most_common():
            if name == thread and samples * 100 >= total:
                lines.append(f"  {100 * samples / total:5.1f}%  {frame}")
        lines.append("")
    return "\n".join(lines[: top * 4])


def main_thread(collapsed: Path, top: int) -> str:
    """The event loop's thread: self and inclusive shares of its samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames[1:]):
            inclusive[frame] += samples
    lines = [f"event loop: {total} samples; self time"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="single")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "xstream-profile")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--http", action="store_true", help="upload with tus over HTTP")
    parser.add_argument("--svg", action="store_true", help="also write a flame graph (SVG)")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    size, concurrency, total = SCENARIOS[args.scenario]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xstream-profile-") as name:
        work = Path(name)
        redis, redis_url = start_redis(work)
        data = work / "data"
        data.mkdir()
        port, http_port = free_port(), free_port()
        server = ManagedProcess(
            "xstream-server",
            [
                sys.executable,
                "-m",
                "xstream_server.cli.server",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--http-port",
                str(http_port),
                "--data-dir",
                str(data),
                "--redis-url",
                redis_url,
                "--no-fsync" if args.no_fsync else "--fsync",
            ],
            work / "server.log",
            "listening on",
        )
        try:
            server.start()
            suffix = ("-nofsync" if args.no_fsync else "") + ("-http" if args.http else "")
            stem = args.out / f"{args.scenario}{suffix}"
            spy = subprocess.Popen(
                [
                    str(VENV_BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--rate",
                    str(args.rate),
                    "--threads",
                    # Sampling without stopping the server: stopping all its threads 250
                    # times a second slowed a 64-stream run from ~500 to ~100 MB/s.
                    "--nonblocking",
                    "--format",
                    "flamegraph" if args.svg else "raw",
                    "--output",
                    str(stem.with_suffix(".svg" if args.svg else ".txt")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            target = ["--path", "/upload-file", "upload"] if args.http else ["upload"]
            scenario = [*target, "--size", str(size), "--concurrency", str(concurrency)]
            scenario += ["--total", str(total)]
            with removing_new_files(data):
                result = run_loadgen(
                    server.pid,
                    http_port if args.http else port,
                    "tus" if args.http else "xstream",
                    scenario,
                    upload_timeout(size * total),
                )
            spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
            spy.wait(30)
            print(
                result.failure
                or {k: result.data["values"].get(k) for k in ("mb_per_s", "uploads_per_s")}
            )
            print(f"server CPU {result.server_cpu_s:.2f} s")
            if args.svg:
                print(f"flame graph: {stem.with_suffix('.svg')}")
            else:
                print(summarise(stem.with_suffix(".txt"), args.top))
                print(main_thread(stem.with_suffix(".txt"), args.top))
                print(f"collapsed stacks: {stem.with_suffix('.txt')}")
        finally:
            server.stop()
            redis.stop()


if __name__ == "__main__":
    main()
