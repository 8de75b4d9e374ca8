"""xstream beside the servers a user would pick instead, in one interleaved run.

``python -m benchmarks.peers --set issue9|issue15 [--rounds 3] [--out DIR]`` runs one set of
scenarios against every server below and writes ``<date>-peers-<set>.json``;
``python -m benchmarks.peers --report A.json B.json ...`` writes the report of one or more
such runs (``<date>-peers.md`` and ``.json``). ``benchmarks/setup-peers`` installs the peers
first. Run each set through ``bench-run``.

Servers (each started here on a free port of 127.0.0.1, data in a fresh temporary folder):

* ``xstream-tcp``: xstream, packet protocol over TCP, fsync at checkpoints, sha256;
* ``xstream-http``: the same server's HTTP face, tus 1.0 (creation POST, one PATCH);
* ``xstream-nofsync``: xstream over TCP with ``--no-fsync`` (sha256 still computed);
* ``tuspyserver``: tuspyserver (FastAPI) under uvicorn with uvloop and httptools, one
  worker, from its own venv; neither fsyncs nor hashes;
* ``tus-node``: @tus/server with @tus/file-store on Node; neither fsyncs nor hashes;
* ``nginx-put``: nginx (Debian, ``worker_processes auto``) WebDAV ``PUT``: the body goes to a
  temporary file, then is renamed; no fsync, no hash;
* ``sink-fsync8``, ``sink-nofsync``: ``baseline_server.py``, a bare uvloop socket-to-file
  sink, fsync every 8 MiB (and at the end) or never.

Every scenario is measured on every server back to back, in an order that rotates from round
to round; the files a measurement wrote are deleted and the page cache synced (``sync``)
before the next one. Uploads are checked: xstream's completion carries the sha256 of what
was sent; tus PATCHes must answer 204 with the final ``Upload-Offset``; PUT 201/204. A
measurement during which other processes kept the machine busy is taken again (see
``BUSY_CORES``). The report has the tables, the ratios to the issue's targets and one plot
per set (``<stem>-<set>.png``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil

from .processes import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    last_json_line,
    machine_facts,
    removing_new_files,
    start_redis,
    upload_timeout,
)

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB
HERE: Final = Path(__file__).resolve().parent
PEERS: Final = HERE / "peers"
ROOT: Final = HERE.parent


@dataclass(frozen=True)
class Scenario:
    label: str
    size: int
    concurrency: int
    total: int

    @property
    def bytes(self) -> int:
        return self.size * self.total


SETS: Final = {
    # Issue 9: one 1 GiB upload, 16 concurrent x 64 MiB, 500 x 1 MiB.
    "issue9": [
        Scenario("1 x 1 GiB", GiB, 1, 1),
        Scenario("16 x 64 MiB", 64 * MiB, 16, 16),
        Scenario("500 x 1 MiB, 64 in flight", MiB, 64, 500),
    ],
    # Issue 15: 256 MiB single, 16 and 64 x 32 MiB, 500 x 1 MiB with 64 in flight.
    "issue15": [
        Scenario("1 x 256 MiB", 256 * MiB, 1, 1),
        Scenario("16 x 32 MiB", 32 * MiB, 16, 32),
        Scenario("64 x 32 MiB", 32 * MiB, 64, 64),
        Scenario("500 x 1 MiB, 64 in flight", MiB, 64, 500),
    ],
}
SETS["smoke"] = [  # checks the script; its figures mean nothing
    Scenario("1 x 8 MiB", 8 * MiB, 1, 1),
    Scenario("500 x 1 MiB, 64 in flight", MiB, 8, 16),
]
SERVERS: Final = [
    "xstream-tcp",
    "xstream-http",
    "xstream-nofsync",
    "tuspyserver",
    "tus-node",
    "nginx-put",
    "sink-fsync8",
    "sink-nofsync",
]


@dataclass
class Running:
    name: str
    port: int
    target: str  # the load generator's --target
    path: str  # --path for tus / put
    data: Path
    process: ManagedProcess


def wait_port(port: int, process: ManagedProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        if not process.alive():
            break
        time.sleep(0.05)
    process.stop()
    raise RuntimeError(f"{process.name} does not listen on {port}:\n{process.log_tail()}")


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise SystemExit("nginx is not installed: run benchmarks/setup-peers")
    return found


def start_servers(work: Path, redis_url: str) -> list[Running]:
    servers: list[Running] = []

    def data_dir(name: str) -> Path:
        path = work / f"data-{name}"
        path.mkdir()
        return path

    # One xstream server (fsync on) serves both the TCP and the HTTP face.
    data = data_dir("xstream")
    port, http_port = free_port(), free_port()
    xstream = ManagedProcess(
        "xstream",
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
            "--no-page",
            "--data-dir",
            str(data),
            "--redis-url",
            f"{redis_url}/0",
            "--fsync",
        ],
        work / "xstream.log",
        "listening on",
        cwd=ROOT,
    )
    xstream.start()
    wait_port(http_port, xstream)
    servers.append(Running("xstream-tcp", port, "xstream", "", data, xstream))
    servers.append(Running("xstream-http", http_port, "tus", "/upload-file", data, xstream))

    data = data_dir("xstream-nofsync")
    port = free_port()
    nofsync = ManagedProcess(
        "xstream --no-fsync",
        [
            sys.executable,
            "-m",
            "xstream_server.cli.server",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--no-http",
            "--data-dir",
            str(data),
            "--redis-url",
            f"{redis_url}/1",
            "--no-fsync",
        ],
        work / "xstream-nofsync.log",
        "listening on",
        cwd=ROOT,
    )
    nofsync.start()
    servers.append(Running("xstream-nofsync", port, "xstream", "", data, nofsync))

    data = data_dir("tuspyserver")
    port = free_port()
    tuspy = ManagedProcess(
        "tuspyserver",
        [
            str(PEERS / ".venv-tuspyserver" / "bin" / "python"),
            "-m",
            "uvicorn",
            "tuspy_app:app",
            "--app-dir",
            str(PEERS),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ],
        work / "tuspyserver.log",
        "Uvicorn running on",
        env={"TUSPY_FILES_DIR": str(data)},
    )
    tuspy.start()
    servers.append(Running("tuspyserver", port, "tus", "/files", data, tuspy))

    data = data_dir("tus-node")
    port = free_port()
    node = ManagedProcess(
        "@tus/server",
        ["node", str(PEERS / "tus-node-server.mjs"), str(data), str(port)],
        work / "tus-node.log",
        "listening on",
        cwd=PEERS,
    )
    node.start()
    servers.append(Running("tus-node", port, "tus", "/files", data, node))

    data = data_dir("nginx")
    (data / "up").mkdir()
    temp = work / "nginx-temp"  # same file system as the data: the body is renamed in place
    temp.mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.getuid() == 0 else "")  # workers write where this run does
        + f"""daemon off;
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 0;
    server {{
        listen {LOOPBACK}:{port};
        root {data};
        location /up/ {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
"""
    )
    nginx = ManagedProcess(
        "nginx", [nginx_binary(), "-c", str(conf), "-p", str(work)], work / "nginx.log", ""
    )
    nginx.start()
    wait_port(port, nginx)
    servers.append(Running("nginx-put", port, "put", "/up", data, nginx))

    for name, fsync in (("sink-fsync8", True), ("sink-nofsync", False)):
        data = data_dir(name)
        port = free_port()
        sink = ManagedProcess(
            name,
            [
                sys.executable,
                "-m",
                "benchmarks.baseline_server",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--fsync" if fsync else "--no-fsync",
                "--checkpoint-bytes",
                str(8 * MiB),
            ],
            work / f"{name}.log",
            "",
            cwd=ROOT,
        )
        sink.start()
        wait_port(port, sink)
        servers.append(Running(name, port, "baseline", "", data, sink))
    return servers


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (nginx's workers)."""
    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return 0.0
    return float(total)


# A measurement during which processes other than the server, its Redis and the load
# generator kept more than this many cores busy on average is repeated (at most
# BUSY_RETRIES times; runs shorter than a second are not judged); each measurement keeps
# how busy the rest of the machine was (``other_cores``) and which attempt it is.
BUSY_CORES: Final = 0.3
BUSY_RETRIES: Final = 2


def busy_seconds() -> float:
    """CPU seconds the whole machine spent in user and kernel code since boot."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system)


def children_seconds() -> float:
    """CPU seconds of this process's reaped children (the load generator runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(server: Running, scenario: Scenario, redis_pid: int | None = None) -> dict[str, Any]:
    """One measurement, repeated while the rest of the machine was busy during it."""
    result: dict[str, Any] = {}
    for attempt in range(1 + BUSY_RETRIES):
        result = measure_once(server, scenario, redis_pid)
        result["attempt"] = attempt + 1
        # Shorter runs than a second are below what the kernel's tick counts can tell.
        if "failure" in result or result["other_cores"] <= BUSY_CORES or result["wall_s"] < 1:
            break
        print(
            f"  {server.name} {scenario.label}: other processes kept"
            f" {result['other_cores']:.2f} cores busy; measuring again",
            flush=True,
        )
    return result


def measure_once(server: Running, scenario: Scenario, redis_pid: int | None) -> dict[str, Any]:
    timeout = upload_timeout(scenario.bytes)
    command = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--port",
        str(server.port),
        "--target",
        server.target,
        "--path",
        server.path or "/files",
        "--timeout",
        str(timeout),
        "upload",
        "--size",
        str(scenario.size),
        "--concurrency",
        str(scenario.concurrency),
        "--total",
        str(scenario.total),
    ]
    uses_redis = server.name.startswith("xstream") and redis_pid is not None
    with removing_new_files(server.data):
        cpu = tree_cpu(server.process.pid)
        redis_cpu = tree_cpu(redis_pid) if uses_redis and redis_pid else 0.0
        machine, client, own = busy_seconds(), children_seconds(), own_seconds()
        started = time.monotonic()
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout + 30, check=False, cwd=ROOT
        )
        wall = time.monotonic() - started
        machine = busy_seconds() - machine
        client, own = children_seconds() - client, own_seconds() - own
        cpu = tree_cpu(server.process.pid) - cpu
        redis_cpu = (tree_cpu(redis_pid) if uses_redis and redis_pid else 0.0) - redis_cpu
    if done.returncode != 0:
        return {"failure": done.stderr.strip()[-600:]}
    values = last_json_line(done.stdout)
    result: dict[str, Any] = dict(values["values"])
    result["server_cpu_s"] = cpu
    result["client_cpu_s"] = client
    result["redis_cpu_s"] = redis_cpu
    # What the rest of the machine did meanwhile: whole-machine busy time less what the
    # measured processes and this script used (kernel work for loopback traffic that is not
    # charged to a process lands here too, so the threshold leaves room for it).
    other = max(0.0, machine - cpu - client - own - redis_cpu)
    result["other_cores"] = other / wall if wall > 0 else 0.0
    result["wall_s"] = wall
    if values.get("errors"):
        result["failure"] = "; ".join(values["errors"][:3])
    return result


def run_set(args: argparse.Namespace) -> None:
    scenarios = SETS[args.set]
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="xstream-peers-"))
    redis, redis_url = start_redis(work)
    servers: list[Running] = []
    measurements: list[dict[str, Any]] = []
    try:
        servers = start_servers(work, redis_url)
        for server in servers:  # warm up: a few small uploads each
            measure(server, Scenario("warm-up", MiB, 4, 16))
        for round_number in range(1, args.rounds + 1):
            for index, scenario in enumerate(scenarios):
                shift = (round_number - 1 + index) % len(servers)
                order = servers[shift:] + servers[:shift]
                for server in order:
                    result = measure(server, scenario, redis.pid)
                    result.update(server=server.name, scenario=scenario.label, round=round_number)
                    measurements.append(result)
                    figure = (
                        f"{result.get('mb_per_s', 0):8.1f} MB/s"
                        f" {result.get('uploads_per_s', 0):7.1f} up/s"
                        f" cpu {result.get('server_cpu_s', 0):5.2f} s"
                        f" others {result.get('other_cores', 0):4.2f} cores"
                    )
                    print(
                        f"round {round_number} {scenario.label:<26} {server.name:<16} {figure}"
                        + (f"  FAILED: {result['failure']}" if "failure" in result else ""),
                        flush=True,
                    )
    finally:
        stopped = set()
        for server in servers:
            if id(server.process) not in stopped:
                stopped.add(id(server.process))
                server.process.stop()
        redis.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    document = {
        "kind": "peers",
        "set": args.set,
        "command": " ".join(["python -m benchmarks.peers", *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "versions": peer_versions(),
        "rounds": args.rounds,
        "scenarios": [vars(s) for s in scenarios],
        "servers": [s.name for s in servers],
        "measurements": measurements,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.date()}-peers-{args.set}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {path}")


def peer_versions() -> dict[str, str]:
    def run(command: Sequence[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError:
            return ""
        lines = (done.stdout + done.stderr).strip().splitlines()
        return lines[-1] if lines else ""

    tuspy = PEERS / ".venv-tuspyserver" / "bin" / "python"
    versions = {
        "tuspyserver": run(
            [str(tuspy), "-c", "import importlib.metadata as m; print(m.version('tuspyserver'))"]
        ),
        "@tus/server": run(
            ["node", "-p", f"require('{PEERS}/node_modules/@tus/server/package.json').version"]
        ),
        "@tus/file-store": run(
            ["node", "-p", f"require('{PEERS}/node_modules/@tus/file-store/package.json').version"]
        ),
        "node": run(["node", "--version"]),
    }
    versions["nginx"] = run([nginx_binary(), "-v"]).rpartition("/")[2]
    return versions


# --------------------------------------------------------------------------- report

HIGHER: Final = "higher is better"


def figure_of(scenario: str) -> str:
    return "uploads_per_s" if scenario.startswith("500 x") else "mb_per_s"


def cells(measurements: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    table: dict[tuple[str, str], list[float]] = {}
    for entry in measurements:
        if "failure" in entry:
            continue
        key = (entry["scenario"], entry["server"])
        table.setdefault(key, []).append(float(entry[figure_of(entry["scenario"])]))
    return table


def cell(values: Sequence[float]) -> str:
    if not values:
        return "failed"
    return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"


def ratio(table: dict[tuple[str, str], list[float]], scenario: str, a: str, b: str) -> float:
    first, second = table.get((scenario, a)), table.get((scenario, b))
    if not first or not second:
        return float("nan")
    return statistics.median(first) / statistics.median(second)


# (label, numerator, denominator, target or None, scenarios it applies to: None = all)
ISSUE9_RATIOS: Final = [
    ("@tus/server / xstream HTTP", "tus-node", "xstream-http", None),
    ("tuspyserver / xstream HTTP", "tuspyserver", "xstream-http", None),
    ("xstream HTTP / @tus/server (target ≥ 1.5)", "xstream-http", "tus-node", 1.5),
    ("xstream HTTP / tuspyserver (target ≥ 2)", "xstream-http", "tuspyserver", 2.0),
    ("xstream HTTP / xstream TCP", "xstream-http", "xstream-tcp", None),
]
ISSUE15_RATIOS: Final = [
    ("xstream / tuspyserver (target ≥ 1.3)", "xstream-tcp", "tuspyserver", 1.3),
    ("xstream / @tus/server (target ≥ 1.5; 500 x 1 MiB: ≥ 2)", "xstream-tcp", "tus-node", 1.5),
    ("xstream / sink fsync 8 MiB (target ≥ 0.95)", "xstream-tcp", "sink-fsync8", 0.95),
    (
        "xstream --no-fsync / sink no-fsync (target ≥ 0.6, one stream)",
        "xstream-nofsync",
        "sink-nofsync",
        0.6,
    ),
    ("xstream / nginx PUT (target ≥ 0.9 for 500 x 1 MiB)", "xstream-tcp", "nginx-put", 0.9),
    ("xstream HTTP / xstream TCP", "xstream-http", "xstream-tcp", None),
]


def target_for(label: str, scenario: str, target: float | None) -> float | None:
    """The issue's target for this ratio in this scenario (None: reported only)."""
    if target is None:
        return None
    small = scenario.startswith("500 x")
    if "nginx" in label:
        return target if small else None
    if "no-fsync" in label:
        return target if scenario.startswith("1 x") else None
    if "@tus/server (target ≥ 1.5; 500" in label and small:
        return 2.0
    if "sink" in label and small:
        return None
    return target


def plot(document: dict[str, Any], path: Path) -> None:
    """One panel per scenario: each server's median as a bar, min–max as its error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = cells(document["measurements"])
    scenarios = [s["label"] for s in document["scenarios"]]
    servers = document["servers"]
    figure, axes = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 4.6))
    for axis, scenario in zip(axes if len(scenarios) > 1 else [axes], scenarios, strict=True):
        medians, lows, highs, colours = [], [], [], []
        for server in servers:
            values = table.get((scenario, server), [])
            middle = statistics.median(values) if values else 0.0
            medians.append(middle)
            lows.append(middle - min(values) if values else 0.0)
            highs.append(max(values) - middle if values else 0.0)
            colours.append("tab:blue" if server.startswith("xstream") else "tab:gray")
        axis.bar(range(len(servers)), medians, yerr=[lows, highs], color=colours, capsize=3)
        axis.set_xticks(range(len(servers)), servers, rotation=60, ha="right", fontsize=8)
        axis.set_title(scenario, fontsize=10)
        axis.set_ylabel("uploads/s" if figure_of(scenario) == "uploads_per_s" else "MB/s")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(
        f"xstream (blue) and peers, set {document['set']}: median, min–max over"
        f" {document['rounds']} rounds"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(paths: Sequence[Path], out: Path) -> None:
    documents = [json.loads(path.read_text()) for path in paths]
    lines = ["# xstream and its peers: " + documents[0]["started"][:10], ""]
    machine = documents[0]["machine"]
    lines += [
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}; "
        f"xstream at {machine['commit']}. Peers: "
        + ", ".join(f"{k} {v}" for k, v in documents[0]["versions"].items()),
        "",
        "Client and servers share the machine's 2 cores. Cells: median (min–max) over the"
        " rounds, MB/s (10⁶ B/s) or completed uploads/s for 500 x 1 MiB; ratios are of the"
        " medians. Only xstream fsyncs (at its checkpoints and before completing) and hashes"
        " (sha256); the sinks fsync as named; the other peers do neither.",
        "",
    ]
    summary: list[dict[str, Any]] = []
    for document in documents:
        table = cells(document["measurements"])
        scenarios = [s["label"] for s in document["scenarios"]]
        servers = document["servers"]
        picture = out.parent / f"{out.name}-{document['set']}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        plot(document, picture)
        repeated = [m for m in document["measurements"] if m.get("attempt", 1) > 1]
        lines += [
            f"## {document['set']}: {document['rounds']} rounds",
            "",
            f"`{document['command']}` ({document['started']} – {document['finished']})",
            "",
            f"![{document['set']}]({picture.name})",
            "",
        ]
        if any("other_cores" in m for m in document["measurements"]):
            lines += [
                f"Measurements repeated because other processes kept more than {BUSY_CORES}"
                f" cores busy: {len(repeated)}.",
                "",
            ]
        lines += [
            "| server | " + " | ".join(scenarios) + " |",
            "|---|" + "---|" * len(scenarios),
        ]
        for server in servers:
            lines.append(
                f"| {server} | "
                + " | ".join(cell(table.get((s, server), [])) for s in scenarios)
                + " |"
            )
        ratios = ISSUE9_RATIOS if document["set"] == "issue9" else ISSUE15_RATIOS
        lines += [
            "",
            "| ratio | " + " | ".join(scenarios) + " |",
            "|---|" + "---|" * len(scenarios),
        ]
        for label, a, b, target in ratios:
            row = []
            for scenario in scenarios:
                value = ratio(table, scenario, a, b)
                goal = target_for(label, scenario, target)
                mark = "" if goal is None else (" ✓" if value >= goal else " ✗")
                row.append(f"{value:.2f}×{mark}")
                summary.append(
                    {
                        "set": document["set"],
                        "scenario": scenario,
                        "ratio": label,
                        "value": value,
                        "target": goal,
                    }
                )
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        failures = [m for m in document["measurements"] if "failure" in m]
        if failures:
            lines += ["", f"{len(failures)} measurements failed:"]
            lines += [
                f"* {m['server']} {m['scenario']} round {m['round']}: {m['failure'][:200]}"
                for m in failures
            ]
        lines.append("")
    lines += ["✓ / ✗: the issue's target for that ratio met / missed; no mark: reported only.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(
        json.dumps({"runs": documents, "ratios": summary}, indent=1) + "\n"
    )
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')} and .json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=sorted(SETS), default="issue15")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep-work", action="store_true")
    parser.add_argument("--report", type=Path, nargs="+", help="runs' JSON files to report")
    parser.add_argument("--report-out", type=Path, help="report stem (default: out/<date>-peers)")
    args = parser.parse_args()
    if args.report:
        stem = args.report_out or args.out / f"{dt.date.today()}-peers"
        report(args.report, stem)
        return
    run_set(args)


if __name__ == "__main__":
    main()
