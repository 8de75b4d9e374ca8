"""Subprocesses of a benchmark run: Redis, the servers under test, the load generator.

Every process is started on 127.0.0.1 with a free port, logs to a file in the run's work
directory, and is stopped by its own pid. While the load generator runs, a thread samples
the server's resident memory so that the peak is known. Also the few helpers that every
entry point (``run``, ``ab``) needs around them: the shared Redis, removing what a
measurement uploaded, the machine's description.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

__all__ = [
    "VENV_BIN",
    "LoadResult",
    "ManagedProcess",
    "RssSampler",
    "free_port",
    "machine_facts",
    "removing_new_files",
    "run_loadgen",
    "server_rss",
    "start_redis",
    "upload_timeout",
]

LOOPBACK: Final = "127.0.0.1"
GiB: Final = 1024 * 1024 * 1024
VENV_BIN: Final = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ManagedProcess:
    """A long-running child process that announces readiness with a line in its log."""

    name: str
    command: Sequence[str]
    log_path: Path
    ready_marker: str
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> None:
        environment = dict(os.environ)
        environment.update(self.env or {})
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_marker in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.command)}):\n{tail}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_redis(work: Path) -> tuple[ManagedProcess, str]:
    """A redis-server without persistence on a free port; returns it and its URL."""
    port = free_port()
    directory = work / "redis"
    directory.mkdir()
    redis = ManagedProcess(
        "redis-server",
        [
            str(VENV_BIN / "redis-server"),
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        work / "redis.log",
        "Ready to accept connections",
    )
    redis.start()
    return redis, f"redis://{LOOPBACK}:{port}"


def files_under(directory: Path) -> set[Path]:
    return {path for path in directory.rglob("*") if path.is_file()}


@contextlib.contextmanager
def removing_new_files(directory: Path) -> Iterator[None]:
    """Delete the files a measurement created, so that disk use stays bounded."""
    before = files_under(directory)
    try:
        yield
    finally:
        for path in files_under(directory) - before:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.sync()


def upload_timeout(total_bytes: int) -> float:
    """The load generator's time limit for uploading ``total_bytes``: at least 20 MB/s."""
    return 60.0 + total_bytes / (20 * 1e6)


def machine_facts() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
    }


def server_rss(pid: int) -> int:
    """Resident bytes of the server and its children, not counting a Redis it may embed."""
    process = psutil.Process(pid)
    total: int = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            if "redis" not in child.name():
                total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def server_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, server_rss(self._pid))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self.peak = server_rss(self._pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class LoadResult:
    """The load generator's JSON plus what was observed on the server meanwhile."""

    data: dict[str, Any]
    server_rss_before: int
    server_rss_peak: int
    server_cpu_s: float
    failure: str = ""


def loadgen_command(port: int, target: str, scenario: Sequence[str], timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--port",
        str(port),
        "--target",
        target,
        "--timeout",
        str(timeout),
        *scenario,
    ]


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise ValueError("no JSON result in the load generator's output")


def run_loadgen(
    server_pid: int, port: int, target: str, scenario: Sequence[str], timeout: float
) -> LoadResult:
    """Run one load-generator process to completion while watching the server."""
    command = loadgen_command(port, target, scenario, timeout)
    cpu_before = server_cpu(server_pid)
    with RssSampler(server_pid) as sampler:
        rss_before = sampler.peak
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout + 30, check=False
            )
        except subprocess.TimeoutExpired:
            return LoadResult({}, rss_before, sampler.peak, 0.0, f"timed out after {timeout} s")
    cpu = server_cpu(server_pid) - cpu_before
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return LoadResult({}, rss_before, sampler.peak, cpu, f"exit {done.returncode}: {tail}")
    return LoadResult(last_json_line(done.stdout), rss_before, sampler.peak, cpu)
