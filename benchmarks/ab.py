"""Interleaved A/B comparison of the xstream server at two source trees.

``python -m benchmarks.ab --before DIR --after DIR [--rounds N] [--quick | --smoke]``

Each tree is a plain source checkout: its server runs with this interpreter as
``python -m xstream_server.cli.server`` with the tree as working directory and as
``PYTHONPATH``, so that the tree's own ``xstream_server`` and ``handlers`` are imported and
not the editable install of the checkout that runs the harness. Before a server starts, the
same interpreter, environment and directory import every module of the tree; the run stops
if any ``xstream_server`` or ``handlers`` module comes from elsewhere.

Both servers share one redis-server (a database each), have a data directory each in a
temporary work directory, fsync on and the tree's defaults otherwise. The load generator
(always this checkout's) measures each scenario on both servers back to back; the order
alternates between rounds (A,B then B,A ...), so drift hits both alike. The files a
measurement uploaded are deleted right after it.

Prints a table and writes ``<out>/<date>-ab[-quick|-smoke].json`` (every raw figure) and a
Markdown table beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

from . import report
from .processes import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    machine_facts,
    removing_new_files,
    run_loadgen,
    start_redis,
    upload_timeout,
)

__all__ = ["FULL", "QUICK", "SMOKE", "Plan", "Scenario", "main"]

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
LABELS: Final = ("before", "after")
PACKAGES: Final = ("xstream_server", "handlers")

# Run in a tree's environment: imports what ``python -m xstream_server.cli.server`` imports,
# then every other module of both packages, and reports where each module came from and the
# server's setting defaults.
PROBE: Final = """
import importlib, json, pkgutil, sys
import xstream_server, xstream_server.cli.server, handlers
errors = {}
def failed(name):
    errors[name] = repr(sys.exc_info()[1])
for package in (xstream_server, handlers):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".", failed):
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            errors[info.name] = repr(exc)
modules = {
    name: [module.__file__] if getattr(module, "__file__", None)
    else list(getattr(module, "__path__", []))
    for name, module in sorted(sys.modules.items())
    if name.split(".")[0] in ("xstream_server", "handlers")
}
try:
    from xstream_server.settings import ServerSettings
    defaults = {k: repr(f.default) for k, f in ServerSettings.model_fields.items()}
except Exception as exc:
    defaults = {"?": repr(exc)}
print(json.dumps({"modules": modules, "import_errors": errors, "defaults": defaults}))
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int
    concurrency: int
    total: int

    @property
    def bytes(self) -> int:
        return self.size * self.total

    @property
    def label(self) -> str:
        size = f"{self.size / MiB:g} MiB"
        if self.total == 1:
            return f"1 × {size}"
        if self.total == self.concurrency:
            return f"{self.total} × {size}"
        return f"{self.total} × {size}, {self.concurrency} in flight"


def until(size: int, concurrency: int, min_bytes: int, name: str) -> Scenario:
    """``concurrency`` uploads of ``size`` in flight until at least ``min_bytes`` are sent."""
    return Scenario(name, size, concurrency, max(concurrency, -(-min_bytes // size)))


@dataclass(frozen=True)
class Plan:
    mode: str
    scenarios: tuple[Scenario, ...]
    buffer: int = 256 * KiB


FULL: Final = Plan(
    "full",
    (
        Scenario("single", GiB, 1, 1),
        until(32 * MiB, 64, 2 * GiB, "concurrent-64"),
        Scenario("many-small", MiB, 64, 500),
    ),
)
QUICK: Final = Plan(
    "quick",
    (
        Scenario("single", 256 * MiB, 1, 1),
        until(8 * MiB, 64, 512 * MiB, "concurrent-64"),
        Scenario("many-small", MiB, 64, 500),
    ),
)
# Only to check that the script works: figures from it mean nothing.
SMOKE: Final = Plan(
    "smoke",
    (
        Scenario("single", 8 * MiB, 1, 1),
        until(MiB, 8, 16 * MiB, "concurrent-8"),
        Scenario("many-small", 256 * KiB, 8, 40),
    ),
)


def custom_scenario(text: str) -> Scenario:
    """``MIB:CONCURRENCY:TOTAL`` (``--scenario``)."""
    size, concurrency, total = (float(part) for part in text.split(":"))
    if size <= 0 or concurrency < 1 or total < concurrency:
        raise ValueError(f"{text}: needs size > 0 and 1 <= concurrency <= total")
    return Scenario(f"custom-{text}", int(size * MiB), int(concurrency), int(total))


@dataclass
class Tree:
    label: str
    path: Path
    revision: dict[str, Any] = field(default_factory=dict)
    imports: dict[str, Any] = field(default_factory=dict)


@dataclass
class Server:
    tree: Tree
    port: int
    data_dir: Path
    process: ManagedProcess


# --------------------------------------------------------------------------- trees


def source_tree(label: str, given: Path) -> Tree:
    path = given.resolve()
    missing = [p for p in PACKAGES if not (path / p / "__init__.py").is_file()]
    if missing:
        raise SystemExit(f"--{label} {given}: no {', '.join(missing)} package in {path}")
    return Tree(label, path, git_revision(path))


def git_revision(path: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no", "--", *PACKAGES)
    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        # Uncommitted changes to the server's code: the tree is not just its commit.
        "modified_files": len(changed.splitlines()),
    }


def tree_environment(tree: Tree, work: Path) -> dict[str, str]:
    """Import the tree's code; compiled files go to the work directory, not into the tree."""
    return {"PYTHONPATH": str(tree.path), "PYTHONPYCACHEPREFIX": str(work / "pycache")}


def check_imports(tree: Tree, work: Path) -> None:
    """Fail loudly unless this interpreter, in the tree's environment, imports every
    ``xstream_server`` and ``handlers`` module from the tree itself."""
    environment = {**os.environ, **tree_environment(tree, work)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree.path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree.label}: importing {tree.path} failed:\n{done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    modules: dict[str, list[str]] = found["modules"]
    outside = {
        name: files
        for name, files in modules.items()
        if not files or not all(Path(f).resolve().is_relative_to(tree.path) for f in files)
    }
    if outside:
        shown = "\n".join(f"  {name}: {files}" for name, files in list(outside.items())[:20])
        raise SystemExit(f"{tree.label}: modules imported from outside {tree.path}:\n{shown}")
    tree.imports = {
        "xstream_server": modules["xstream_server"][0],
        "handlers": modules["handlers"][0],
        "modules": len(modules),
        "import_errors": found["import_errors"],
        "defaults": found["defaults"],
    }
    print(
        f"{tree.label:<6} {tree.path} @ {tree.revision.get('commit', '')[:10] or 'no git'}:"
        f" xstream_server from {tree.imports['xstream_server']},"
        f" handlers from {tree.imports['handlers']}; {len(modules)} modules, all in the tree",
        flush=True,
    )
    for name, error in found["import_errors"].items():
        print(f"  warning: {tree.label}: {name} does not import: {error}", flush=True)


def start_server(
    tree: Tree,
    work: Path,
    redis_url: str,
    db: int,
    env: dict[str, str] | None = None,
    fsync: bool = True,
) -> Server:
    check_imports(tree, work)
    port = free_port()
    data_dir = work / f"data-{tree.label}"
    data_dir.mkdir()
    process = ManagedProcess(
        f"xstream-server ({tree.label})",
        [
            sys.executable,
            "-m",
            "xstream_server.cli.server",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--redis-url",
            f"{redis_url}/{db}",
            "--fsync" if fsync else "--no-fsync",
        ],
        work / f"xstream-{tree.label}.log",
        "listening on",
        # Two trees side by side: an HTTP face (where a tree has one) on a free port each.
        env={**tree_environment(tree, work), "XSTREAM_HTTP_PORT": "0", **(env or {})},
        cwd=tree.path,
    )
    process.start()
    # The process that serves is the one that was checked: same directory, same path.
    running = psutil.Process(process.pid)
    seen = (Path(running.cwd()), running.environ().get("PYTHONPATH"))
    listening = [line for line in process.log_tail(200).splitlines() if "listening on" in line]
    if seen != (tree.path, str(tree.path)) or "embedded" in "".join(listening):
        process.stop()
        raise SystemExit(f"{tree.label}: server runs as {seen}, {listening}; not as planned")
    return Server(tree, port, data_dir, process)


# --------------------------------------------------------------------------- measuring


def upload(server: Server, plan: Plan, scenario: Scenario) -> tuple[dict[str, Any], float, str]:
    """One load-generator run; (its JSON, server CPU seconds, failure or "")."""
    args = [
        "--buffer",
        str(plan.buffer),
        "upload",
        "--size",
        str(scenario.size),
        "--concurrency",
        str(scenario.concurrency),
        "--total",
        str(scenario.total),
    ]
    with removing_new_files(server.data_dir):
        result = run_loadgen(
            server.process.pid, server.port, "xstream", args, upload_timeout(scenario.bytes)
        )
    failure = result.failure or "; ".join(result.data.get("errors", [])[:3])
    return result.data, result.server_cpu_s, failure


def warm_up(server: Server, plan: Plan) -> None:
    """A few small uploads, so lazy imports and first-use costs are not measured."""
    _, _, failure = upload(server, plan, Scenario("warm-up", MiB, 4, 8))
    if failure:
        raise SystemExit(f"{server.tree.label}: warm-up failed: {failure}")


def measure(
    server: Server, plan: Plan, scenario: Scenario, round_: int, position: int
) -> dict[str, Any]:
    data, cpu, failure = upload(server, plan, scenario)
    values = data.get("values", {})
    seconds = float(values.get("seconds") or 0.0)
    entry = {
        "scenario": scenario.name,
        "tree": server.tree.label,
        "round": round_,
        "position": position,
        "result": data,
        "server_cpu_s": cpu,
        "server_cpu_per_s": cpu / seconds if seconds else None,
        "server_cpu_s_per_gib": cpu / (values["bytes"] / GiB) if values.get("bytes") else None,
        "failure": failure,
    }
    shown = (
        f"{values.get('mb_per_s', 0.0):8.1f} MB/s {values.get('uploads_per_s', 0.0):7.1f} up/s"
        f"  server CPU {entry['server_cpu_per_s'] or 0.0:.2f}"
    )
    print(
        f"  {scenario.name:<14} {server.tree.label:<6} {shown}"
        + (f"  FAILED: {failure[:300]}" if failure else ""),
        flush=True,
    )
    return entry


def execute(servers: Sequence[Server], plan: Plan, rounds: int) -> list[dict[str, Any]]:
    measurements = []
    for round_ in range(rounds):
        order = servers if round_ % 2 == 0 else servers[::-1]
        print(f"round {round_ + 1} of {rounds}: {', '.join(s.tree.label for s in order)}")
        for scenario in plan.scenarios:
            for position, server in enumerate(order):
                measurements.append(measure(server, plan, scenario, round_ + 1, position))
        for server in servers:
            if not server.process.alive():
                raise RuntimeError(f"{server.tree.label} died:\n{server.process.log_tail()}")
    return measurements


# --------------------------------------------------------------------------- summary

METRICS: Final[dict[str, tuple[str, Callable[[float], str]]]] = {
    "mb_per_s": ("MB/s", lambda v: f"{v:,.1f}"),
    "uploads_per_s": ("uploads/s", lambda v: f"{v:,.1f}"),
    "server_cpu_s_per_gib": ("server CPU s/GiB (lower is better)", lambda v: f"{v:.2f}"),
}


def metric_values(entries: Sequence[dict[str, Any]], metric: str) -> list[float]:
    if metric == "server_cpu_s_per_gib":
        return [e[metric] for e in entries if e[metric] is not None]
    return [float(e["result"]["values"][metric]) for e in entries]


def paired_ratios(entries: dict[str, list[dict[str, Any]]], metric: str) -> list[float]:
    """after / before of each round in which both trees were measured."""
    before, after = (
        {m["round"]: metric_values([m], metric) for m in entries[label]} for label in LABELS
    )
    return [
        a[0] / b[0]
        for r in sorted(before.keys() & after.keys())
        if (b := before[r]) and (a := after[r]) and b[0]
    ]


def summarise(measurements: Sequence[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """Per scenario and metric: spread of each tree, ratio of the medians (after / before)
    and the spread of the per-round ratios."""
    rows = []
    for scenario in plan.scenarios:
        entries = {
            label: [
                m
                for m in measurements
                if m["scenario"] == scenario.name and m["tree"] == label and report.measured(m)
            ]
            for label in LABELS
        }
        failed = {
            label: [
                m["failure"]
                for m in measurements
                if m["scenario"] == scenario.name and m["tree"] == label and not report.ok(m)
            ]
            for label in LABELS
        }
        metrics = ["mb_per_s", "uploads_per_s"] if scenario.total > 1 else ["mb_per_s"]
        for metric in [*metrics, "server_cpu_s_per_gib"]:
            spreads = {
                label: report.spread(metric_values(entries[label], metric)) for label in LABELS
            }
            before, after = spreads["before"], spreads["after"]
            paired = paired_ratios(entries, metric)
            rows.append(
                {
                    "scenario": scenario.name,
                    "label": scenario.label,
                    "metric": metric,
                    "before": before,
                    "after": after,
                    "ratio_of_medians": (
                        after["median"] / before["median"]
                        if before and after and before["median"]
                        else None
                    ),
                    "per_round_ratios": report.spread(paired),
                    "failures": failed,
                }
            )
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| scenario | figure | before | after | after / before |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        unit, fmt = METRICS[row["metric"]]
        cells = []
        for label in LABELS:
            text = report.cell(row[label], fmt)
            if row["failures"][label]:
                text += f" ⚠ {len(row['failures'][label])} failed"
            cells.append(text)
        ratio = row["ratio_of_medians"]
        ratio_text = "—" if ratio is None else f"{ratio:.3f}×"
        lines.append(f"| {row['label']} | {unit} | {cells[0]} | {cells[1]} | {ratio_text} |")
    return "\n".join(lines)


def settings_differences(trees: Sequence[Tree]) -> dict[str, list[str]]:
    before, after = (t.imports.get("defaults", {}) for t in trees)
    return {
        name: [before.get(name, "(none)"), after.get(name, "(none)")]
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def markdown(document: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    trees = document["trees"]
    lines = [
        f"# xstream A/B: {document['started'][:10]} ({document['plan']['mode']})",
        "",
        f"`{document['command']}`",
        "",
        "| | tree | commit | modified files |",
        "|---|---|---|---|",
    ]
    for label in LABELS:
        tree = trees[label]
        revision = tree["revision"]
        commit = f"{revision.get('commit', '')[:10]} {revision.get('subject', '')[:60]}"
        lines.append(
            f"| {label} | `{tree['path']}` | {commit} | {revision.get('modified_files')} |"
        )
    machine = document["machine"]
    lines += [
        "",
        f"{document['rounds']} rounds, order alternating (before first in odd rounds);"
        f" fsync {'off' if document.get('no_fsync') else 'on'}, each tree's defaults otherwise;"
        f" {machine['cpus']} CPUs"
        f" ({machine['cpu_model']}), Python {machine['python']}.",
        "Cells: median (min–max) over the rounds; the ratio is of the medians.",
        "",
        table(rows),
    ]
    if document["notes"]:
        lines += ["", *(f"* {note}" for note in document["notes"])]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare the xstream server at two trees.")
    parser.add_argument("--before", type=Path, required=True, help="source tree A")
    parser.add_argument("--after", type=Path, required=True, help="source tree B")
    parser.add_argument("--rounds", type=int, default=5)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller uploads")
    sizes.add_argument("--smoke", action="store_true", help="tiny uploads: checks the script")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and data dirs")
    parser.add_argument("--no-fsync", action="store_true", help="both servers with --no-fsync")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="MIB:CONCURRENCY:TOTAL",
        help="measure only these uploads (repeatable), e.g. 256:1:1 and 32:16:16",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    overriding = sorted(name for name in os.environ if name.startswith("XSTREAM_"))
    if overriding:
        raise SystemExit(f"unset {', '.join(overriding)}: they would change both servers")
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.scenario:
        try:
            plan = Plan("custom", tuple(custom_scenario(text) for text in args.scenario))
        except ValueError as exc:
            parser.error(f"--scenario: {exc}")
    trees = [source_tree("before", args.before), source_tree("after", args.after)]
    if trees[0].path == trees[1].path:
        print(f"note: both trees are {trees[0].path}", flush=True)
    needed = max(s.bytes for s in plan.scenarios) + GiB
    if shutil.disk_usage(tempfile.gettempdir()).free < needed:
        raise SystemExit(f"need {needed / GiB:.1f} GiB free in {tempfile.gettempdir()}")

    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="xstream-ab-"))
    redis: ManagedProcess | None = None
    servers: list[Server] = []
    try:
        redis, redis_url = start_redis(work)
        for db, tree in enumerate(trees):
            servers.append(start_server(tree, work, redis_url, db, fsync=not args.no_fsync))
        for server in servers:
            warm_up(server, plan)
        measurements = execute(servers, plan, args.rounds)
    finally:
        for server in servers:
            server.process.stop()
        if redis is not None:
            redis.stop()
        if args.keep_work:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    notes = []
    differences = settings_differences(trees)
    if differences:
        notes.append(f"server defaults differ (before, after): {differences}")
    failed = [m for m in measurements if not report.ok(m)]
    if failed:
        notes.append(f"{len(failed)} measurements had failures: see the JSON")
    if plan is SMOKE:
        notes.append("smoke run: tiny uploads, the figures mean nothing")
    rows = summarise(measurements, plan)
    document = {
        "kind": "ab",
        "command": " ".join(["python -m benchmarks.ab", *(argv or sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "plan": asdict(plan),
        "rounds": args.rounds,
        "no_fsync": args.no_fsync,
        "trees": {tree.label: asdict(tree) | {"path": str(tree.path)} for tree in trees},
        "notes": notes,
        "measurements": measurements,
        "summary": rows,
    }
    stem = started.strftime("%Y-%m-%d") + "-ab" + ("" if plan is FULL else f"-{plan.mode}")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    md_path = args.out / f"{stem}.md"
    md_path.write_text(markdown(document, rows))
    print()
    print(table(rows))
    for note in notes:
        print(f"note: {note}")
    print()
    print(f"wrote {json_path}\nwrote {md_path}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
