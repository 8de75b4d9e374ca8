"""Aggregate throughput of ``xstream-server --workers 1`` against ``--workers 2``, fsync on
and off, in one interleaved run.

    python -m benchmarks.workers [--rounds 3] [--set fleet|smoke] [--out DIR]

Four servers are started at once on free loopback ports (1 and 2 workers, each with fsync on
and off; one ``redis-server`` without persistence, a database each; a data folder each).
Every scenario is measured on the four back to back, in an order that rotates from round to
round, with ``benchmarks.peers.measure`` (the files a measurement wrote are deleted and the
page cache synced before the next one; a measurement taken while other processes kept the
machine busy is repeated). Writes ``<date>-workers.json`` and ``.md`` (medians, min–max, and
the ratio of 2 workers to 1). Run it through ``bench-run`` on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from .peers import HERE, ROOT, Running, Scenario, cell, cells, measure, wait_port
from .processes import LOOPBACK, ManagedProcess, free_port, machine_facts, start_redis

MiB: Final = 1024 * 1024
SETS: Final = {
    "fleet": [
        Scenario("16 x 32 MiB", 32 * MiB, 16, 32),
        Scenario("64 x 32 MiB", 32 * MiB, 64, 64),
        Scenario("500 x 1 MiB, 64 in flight", MiB, 64, 500),
    ],
    "smoke": [  # checks the script; its figures mean nothing
        Scenario("4 x 8 MiB", 8 * MiB, 4, 4),
    ],
}
SERVERS: Final = [(1, True), (2, True), (1, False), (2, False)]


def name_of(workers: int, fsync: bool) -> str:
    return f"workers={workers} fsync={'on' if fsync else 'off'}"


def start(work: Path, redis_url: str, workers: int, fsync: bool, database: int) -> Running:
    name = name_of(workers, fsync)
    data = work / f"data-{workers}-{int(fsync)}"
    data.mkdir()
    port = free_port()
    process = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "xstream_server.cli.server",
            *("--host", LOOPBACK, "--port", str(port), "--no-http", "--data-dir", str(data)),
            *("--redis-url", f"{redis_url}/{database}", "--workers", str(workers)),
            "--fsync" if fsync else "--no-fsync",
        ],
        work / f"server-{workers}-{int(fsync)}.log",
        "listening on",
        cwd=ROOT,
    )
    process.start()
    wait_port(port, process)
    return Running(name, port, "xstream", "", data, process)


def run(args: argparse.Namespace) -> Path:
    scenarios = SETS[args.set]
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="xstream-workers-"))
    redis, redis_url = start_redis(work)
    servers: list[Running] = []
    measurements: list[dict[str, Any]] = []
    try:
        for database, (workers, fsync) in enumerate(SERVERS):
            servers.append(start(work, redis_url, workers, fsync, database))
        for server in servers:  # warm up every worker: a few small uploads each
            measure(server, Scenario("warm-up", MiB, 8, 32))
        for round_number in range(1, args.rounds + 1):
            for index, scenario in enumerate(scenarios):
                shift = (round_number - 1 + index) % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    result = measure(server, scenario, redis.pid)
                    result.update(server=server.name, scenario=scenario.label, round=round_number)
                    measurements.append(result)
                    print(
                        f"round {round_number} {scenario.label:<26} {server.name:<20}"
                        f" {result.get('mb_per_s', 0):8.1f} MB/s"
                        f" {result.get('uploads_per_s', 0):7.1f} up/s"
                        f" others {result.get('other_cores', 0):4.2f} cores"
                        + (f"  FAILED: {result['failure']}" if "failure" in result else ""),
                        flush=True,
                    )
    finally:
        for server in servers:
            server.process.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    document = {
        "kind": "workers",
        "set": args.set,
        "command": " ".join(["python -m benchmarks.workers", *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "rounds": args.rounds,
        "scenarios": [vars(s) for s in scenarios],
        "servers": [s.name for s in servers],
        "measurements": measurements,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem: Path = (
        args.out / f"{started.date()}-workers{'' if args.set == 'fleet' else '-' + args.set}"
    )
    stem.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    write_report(document, stem.with_suffix(".md"))
    return stem


def write_report(document: dict[str, Any], path: Path) -> None:
    table = cells(document["measurements"])
    scenarios = [s["label"] for s in document["scenarios"]]
    machine = document["machine"]
    lines = [
        f"# xstream --workers 1 and 2: {document['started'][:10]}",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']}"
        f" GiB, Linux {machine['kernel']}, Python {machine['python']}; xstream at"
        f" {machine['commit']}. `{document['command']}` ({document['started']} –"
        f" {document['finished']}). Packet protocol over TCP, sha256 always; the load"
        " generator shares the 2 cores. Cells: median (min–max) over"
        f" {document['rounds']} rounds, MB/s (10⁶ B/s) or completed uploads/s.",
        "",
        "| server | " + " | ".join(scenarios) + " |",
        "|---|" + "---|" * len(scenarios),
    ]
    for server in document["servers"]:
        lines.append(
            f"| {server} | "
            + " | ".join(cell(table.get((s, server), [])) for s in scenarios)
            + " |"
        )
    lines += ["", "| 2 workers / 1 | " + " | ".join(scenarios) + " |"]
    lines.append("|---|" + "---|" * len(scenarios))
    for fsync in (True, False):
        row = []
        for scenario in scenarios:
            two = table.get((scenario, name_of(2, fsync)), [])
            one = table.get((scenario, name_of(1, fsync)), [])
            value = statistics.median(two) / statistics.median(one) if two and one else 0.0
            row.append(f"{value:.2f}×")
        lines.append(f"| fsync {'on' if fsync else 'off'} | " + " | ".join(row) + " |")
    repeated = sum(1 for m in document["measurements"] if m.get("attempt", 1) > 1)
    failed = [m for m in document["measurements"] if "failure" in m]
    lines += ["", f"Measurements repeated because the machine was busy: {repeated}."]
    if failed:
        lines += [f"Failed: {len(failed)}"]
        lines += [f"* {m['server']} {m['scenario']}: {m['failure'][:200]}" for m in failed]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=sorted(SETS), default="fleet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    print(f"wrote {run(args)}.md and .json")


if __name__ == "__main__":
    main()
