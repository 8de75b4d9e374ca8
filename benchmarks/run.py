"""One command for the whole benchmark: ``python -m benchmarks.run [--quick] [--out DIR]``.

It starts its own redis-server, two xstream servers (fsync on, fsync off) and two baseline
servers (the same two durabilities) on free loopback ports with data directories in a
temporary directory, then runs the scenarios of ``benchmarks/README.md``. Every upload
scenario is measured against xstream and against the baseline of the same durability one
right after the other, alternating which goes first, and repeated; the report gives the
median and the spread. The load generator always runs in a process of its own.

Writes ``<out>/<date>[-quick].json``, a Markdown report beside it and two PNG plots.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

from . import report
from .processes import (
    VENV_BIN,
    LoadResult,
    ManagedProcess,
    free_port,
    loadgen_command,
    machine_facts,
    removing_new_files,
    run_loadgen,
    server_rss,
    start_redis,
    upload_timeout,
)

__all__ = ["FULL", "QUICK", "Plan", "main"]

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB
DURABILITIES: Final = ("no-fsync", "fsync")


@dataclass(frozen=True)
class Plan:
    single_size: int
    concurrencies: tuple[int, ...]
    concurrent_size: int
    many_count: int
    many_size: int
    resume_count: int
    resume_size: int
    idle_count: int
    echo_clients: int
    echo_depth: int
    echo_seconds: float
    repetitions: int
    # Concurrent-upload scenarios go on (new uploads replacing finished ones) until at least
    # this many bytes were sent, so that one measurement lasts long enough to mean something.
    min_concurrent_bytes: int
    buffer: int = 256 * 1024


FULL: Final = Plan(
    single_size=GiB,
    concurrencies=(1, 8, 64, 256),
    concurrent_size=32 * MiB,
    many_count=1000,
    many_size=MiB,
    resume_count=500,
    resume_size=MiB,
    idle_count=5000,
    echo_clients=64,
    echo_depth=16,
    echo_seconds=10.0,
    repetitions=3,
    min_concurrent_bytes=2 * GiB,
)
QUICK: Final = Plan(
    single_size=256 * MiB,
    concurrencies=(1, 8, 64),
    concurrent_size=8 * MiB,
    many_count=200,
    many_size=MiB,
    resume_count=100,
    resume_size=MiB,
    idle_count=1000,
    echo_clients=64,
    echo_depth=16,
    echo_seconds=2.0,
    repetitions=1,
    min_concurrent_bytes=256 * MiB,
)


@dataclass
class Server:
    """A server under test: which kind, which durability, where it listens and writes."""

    kind: str  # "xstream" or "baseline"
    durability: str
    port: int
    data_dir: Path
    process: ManagedProcess

    @property
    def label(self) -> str:
        return f"{self.kind} {self.durability}"


@dataclass
class Run:
    plan: Plan
    work: Path
    checkpoint_bytes: int
    checkpoint_seconds: float
    redis_url: str = ""
    servers: dict[tuple[str, str], Server] = field(default_factory=dict)
    measurements: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- servers


def xstream_available() -> str:
    """Empty string when ``xstream-server --help`` works, else why not."""
    binary = VENV_BIN / "xstream-server"
    if not binary.exists():
        return f"{binary} does not exist"
    done = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        return f"xstream-server --help failed: {done.stderr.strip()[-500:]}"
    return ""


def server_checkpoint_defaults() -> tuple[int, float]:
    """The xstream server's default checkpoint cadence, which the fsync baseline copies."""
    try:
        from xstream_server.settings import ServerSettings
    except ImportError:
        return 64 * MiB, 1.0
    fields = ServerSettings.model_fields
    return int(fields["checkpoint_bytes"].default), float(fields["checkpoint_seconds"].default)


def xstream_process(
    run: Run, durability: str, port: int, data_dir: Path, db: int
) -> ManagedProcess:
    fsync = durability == "fsync"
    return ManagedProcess(
        f"xstream-server ({durability})",
        [
            str(VENV_BIN / "xstream-server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--redis-url",
            f"{run.redis_url}/{db}",
            "--fsync" if fsync else "--no-fsync",
            "--checkpoint-bytes",
            str(run.checkpoint_bytes),
            "--checkpoint-seconds",
            str(run.checkpoint_seconds),
        ],
        run.work / f"xstream-{durability}-{port}.log",
        "listening on",
    )


def baseline_process(run: Run, durability: str, port: int, data_dir: Path) -> ManagedProcess:
    return ManagedProcess(
        f"baseline ({durability})",
        [
            sys.executable,
            "-m",
            "benchmarks.baseline_server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--fsync" if durability == "fsync" else "--no-fsync",
            "--checkpoint-bytes",
            str(run.checkpoint_bytes),
            "--checkpoint-seconds",
            str(run.checkpoint_seconds),
            "--buffer-size",
            str(run.plan.buffer),
        ],
        run.work / f"baseline-{durability}.log",
        "listening on",
    )


def start_server(run: Run, kind: str, durability: str, db: int = 0, tag: str = "") -> Server:
    """Start one server; each xstream server gets a Redis database number of its own."""
    port = free_port()
    data_dir = run.work / f"data-{kind}-{durability}{tag}"
    data_dir.mkdir()
    if kind == "xstream":
        process = xstream_process(run, durability, port, data_dir, db)
    else:
        process = baseline_process(run, durability, port, data_dir)
    process.start()
    return Server(kind, durability, port, data_dir, process)


# --------------------------------------------------------------------------- measuring


def record(
    run: Run, server: Server, scenario: str, repetition: int, result: LoadResult
) -> dict[str, Any]:
    failure = result.failure or "; ".join(result.data.get("errors", [])[:3])
    entry: dict[str, Any] = {
        "scenario": scenario,
        "server": server.kind,
        "durability": server.durability,
        "repetition": repetition,
        "result": result.data,
        "server_rss_before": result.server_rss_before,
        "server_rss_peak": result.server_rss_peak,
        "server_cpu_s": result.server_cpu_s,
        "failure": failure,
    }
    run.measurements.append(entry)
    values = result.data.get("values", {})
    shown = {k: round(v, 2) for k, v in values.items() if isinstance(v, float)}
    print(
        f"  {scenario:<24} {server.label:<18} rep {repetition}: {shown}"
        + (f"  FAILED: {failure[:300]}" if failure else ""),
        flush=True,
    )
    return entry


def measure_upload(
    run: Run,
    server: Server,
    scenario: str,
    repetition: int,
    size: int,
    concurrency: int,
    total: int,
) -> None:
    args = ["upload", "--size", str(size), "--concurrency", str(concurrency), "--total", str(total)]
    with removing_new_files(server.data_dir):
        result = run_loadgen(
            server.process.pid,
            server.port,
            server.kind,
            ["--buffer", str(run.plan.buffer), *args],
            upload_timeout(size * total),
        )
    record(run, server, scenario, repetition, result)


def upload_scenarios(plan: Plan) -> list[tuple[str, int, int, int]]:
    """(name, size, concurrency, uploads in all) of every upload scenario."""
    items = [("single", plan.single_size, 1, 1)]
    for concurrency in plan.concurrencies:
        total = max(concurrency, -(-plan.min_concurrent_bytes // plan.concurrent_size))
        items.append((f"concurrent-{concurrency}", plan.concurrent_size, concurrency, total))
    items.append(("many-small", plan.many_size, plan.many_count, plan.many_count))
    return items


def run_upload_pairs(run: Run, repetition: int, kinds: list[str]) -> None:
    """Each upload scenario against xstream and the baseline of the same durability, back to
    back, alternating which of the two goes first."""
    for index, (scenario, size, concurrency, total) in enumerate(upload_scenarios(run.plan)):
        for durability in DURABILITIES:
            order = kinds if (repetition + index) % 2 == 0 else kinds[::-1]
            for kind in order:
                server = run.servers[(kind, durability)]
                measure_upload(run, server, scenario, repetition, size, concurrency, total)


def measure_resume(run: Run, repetition: int) -> None:
    server = run.servers[("xstream", "fsync")]
    plan = run.plan
    args = ["resume", "--count", str(plan.resume_count), "--size", str(plan.resume_size)]
    with removing_new_files(server.data_dir):
        result = run_loadgen(server.process.pid, server.port, "xstream", args, 300.0)
    record(run, server, "resume", repetition, result)


def measure_echo(run: Run, repetition: int) -> None:
    server = run.servers[("xstream", "fsync")]
    plan = run.plan
    args = [
        "echo",
        "--clients",
        str(plan.echo_clients),
        "--depth",
        str(plan.echo_depth),
        "--seconds",
        str(plan.echo_seconds),
    ]
    result = run_loadgen(server.process.pid, server.port, "xstream", args, plan.echo_seconds + 60)
    record(run, server, "echo", repetition, result)


def read_line(stream: Any, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no line within {timeout} s")
    line: str = stream.readline()
    return line


def measure_idle(run: Run, repetition: int) -> None:
    """RSS growth per idle connection, on a freshly started server that has served one
    upload and one echo (so lazy imports and first-use allocations are already paid)."""
    server = start_server(run, "xstream", "fsync", db=10 + repetition, tag=f"-idle{repetition}")
    try:
        warm_up = [
            ["upload", "--size", str(MiB), "--concurrency", "1"],
            ["echo", "--clients", "1", "--depth", "1", "--seconds", "0.2"],
        ]
        for args in warm_up:
            run_loadgen(server.process.pid, server.port, "xstream", args, 60.0)
        time.sleep(0.5)
        count = run.plan.idle_count
        process = psutil.Process(server.process.pid)
        fds_before = process.num_fds()
        rss_before = server_rss(server.process.pid)
        command = loadgen_command(
            server.port, "xstream", ["idle", "--count", str(count), "--hold", "120"], 180.0
        )
        loadgen = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = json.loads(read_line(loadgen.stdout, 120.0))
            opened = int(ready["open"])
            deadline = time.monotonic() + 20
            while process.num_fds() < fds_before + opened and time.monotonic() < deadline:
                time.sleep(0.05)
            accepted = process.num_fds() - fds_before
            time.sleep(0.5)
            rss_after = max(server_rss(server.process.pid) for _ in range(3))
            assert loadgen.stdin is not None
            loadgen.stdin.write("\n")
            loadgen.stdin.flush()
            out, err = loadgen.communicate(timeout=60)
        finally:
            if loadgen.poll() is None:
                loadgen.kill()
                loadgen.wait()
        data = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        data.setdefault("values", {}).update(
            {
                "accepted_by_server": accepted,
                "rss_before": rss_before,
                "rss_after": rss_after,
                "bytes_per_connection": (rss_after - rss_before) / max(opened, 1),
            }
        )
        failure = "" if loadgen.returncode == 0 else err[-500:]
        record(
            run, server, "idle", repetition, LoadResult(data, rss_before, rss_after, 0.0, failure)
        )
    finally:
        server.process.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- entry


def execute(run: Run, with_xstream: bool) -> None:
    kinds = ["baseline", "xstream"] if with_xstream else ["baseline"]
    for kind in kinds:
        for db, durability in enumerate(DURABILITIES):
            run.servers[(kind, durability)] = start_server(run, kind, durability, db)
    for repetition in range(run.plan.repetitions):
        print(f"repetition {repetition + 1} of {run.plan.repetitions}", flush=True)
        run_upload_pairs(run, repetition, kinds)
        if with_xstream:
            measure_resume(run, repetition)
            measure_echo(run, repetition)
            measure_idle(run, repetition)
        for server in run.servers.values():
            if not server.process.alive():
                raise RuntimeError(f"{server.label} died:\n{server.process.log_tail()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the xstream benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--repetitions", type=int, help="override the plan's repetitions")
    parser.add_argument("--baseline-only", action="store_true", help="skip the xstream server")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and data dirs")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only rewrite the report of a saved run"
    )
    args = parser.parse_args(argv)
    if args.render:
        render(json.loads(args.render.read_text()), args.render.parent, args.render.stem)
        return

    plan = QUICK if args.quick else FULL
    if args.repetitions:
        plan = Plan(**{**asdict(plan), "repetitions": args.repetitions})
    why_not = "skipped on request" if args.baseline_only else xstream_available()
    if why_not:
        print(f"xstream server not measured: {why_not}", file=sys.stderr)
    needed = 2 * max(plan.single_size, max(plan.concurrencies) * plan.concurrent_size)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < needed + 2 * GiB:
        raise SystemExit(f"need {needed / GiB:.1f} GiB free in {tempfile.gettempdir()}")

    checkpoint_bytes, checkpoint_seconds = server_checkpoint_defaults()
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="xstream-bench-"))
    run = Run(plan, work, checkpoint_bytes, checkpoint_seconds)
    if why_not:
        run.notes.append(f"xstream server not measured: {why_not}")
    redis: ManagedProcess | None = None
    try:
        if not why_not:
            redis, run.redis_url = start_redis(run.work)
        execute(run, with_xstream=not why_not)
    finally:
        for server in run.servers.values():
            server.process.stop()
        if redis is not None:
            redis.stop()
        if args.keep_work:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    finished = dt.datetime.now(dt.UTC)
    document = {
        "mode": "quick" if args.quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "plan": asdict(plan),
        "checkpoint": {"bytes": checkpoint_bytes, "seconds": checkpoint_seconds},
        "notes": run.notes,
        "measurements": run.measurements,
    }
    stem = started.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    render(document, args.out, stem)


def render(document: dict[str, Any], out: Path, stem: str) -> None:
    """Summarise, save the JSON, write the Markdown report and plots, print the table."""
    document["summary"] = report.summarise(document)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    written = report.write(document, out, stem)
    print()
    print(report.table(document))
    print()
    for path in (json_path, *written):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
