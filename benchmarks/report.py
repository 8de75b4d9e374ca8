"""Turn a run's raw measurements into a summary, a console table, Markdown and PNG plots."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ["summarise", "table", "write"]

KiB: Final = 1024
MiB: Final = 1024 * 1024
RATIO_TARGET: Final = 0.9
IDLE_TARGET_BYTES: Final = 16 * KiB
RESUME_P99_TARGET_MS: Final = 10.0
ECHO_TARGET: Final = 15_000.0
RSS_ALLOWANCE: Final = 64 * MiB
UPLOAD_METRIC: Final = {"single": "mb_per_s", "many-small": "uploads_per_s"}


def spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def metric_of(scenario: str) -> str:
    return UPLOAD_METRIC.get(scenario, "mb_per_s")


def measured(entry: dict[str, Any]) -> bool:
    """The load generator ran to the end and at least one upload completed."""
    return bool(entry["result"].get("values", {}).get("completed", 0))


def failed_uploads(entries: Sequence[dict[str, Any]]) -> int:
    return sum(int(m["result"].get("values", {}).get("failed", 0)) for m in entries)


def ok(entry: dict[str, Any]) -> bool:
    values = entry["result"].get("values", {})
    return not entry["failure"] and bool(values) and not values.get("failed", 0)


def select(
    measurements: Sequence[dict[str, Any]],
    scenario: str,
    server: str,
    durability: str | None = None,
) -> list[dict[str, Any]]:
    return [
        m
        for m in measurements
        if m["scenario"] == scenario
        and m["server"] == server
        and (durability is None or m["durability"] == durability)
    ]


def upload_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    measurements = document["measurements"]
    scenarios = list(dict.fromkeys(m["scenario"] for m in measurements))
    rows = []
    for scenario in scenarios:
        if scenario in ("resume", "echo", "idle"):
            continue
        metric = metric_of(scenario)
        for durability in ("no-fsync", "fsync"):
            xs = select(measurements, scenario, "xstream", durability)
            bs = select(measurements, scenario, "baseline", durability)
            # Throughput counts completed uploads only; failed ones are reported beside it.
            x_by_rep = {m["repetition"]: m for m in xs if measured(m)}
            b_by_rep = {m["repetition"]: m for m in bs if measured(m)}
            ratios = [
                x_by_rep[r]["result"]["values"][metric] / b_by_rep[r]["result"]["values"][metric]
                for r in sorted(x_by_rep.keys() & b_by_rep.keys())
            ]
            ratio = spread(ratios)
            params = (xs or bs)[0]["result"].get("params", {}) if xs or bs else {}
            row: dict[str, Any] = {
                "scenario": scenario,
                "durability": durability,
                "metric": metric,
                "size": params.get("size"),
                "concurrency": params.get("concurrency"),
                "xstream": spread([m["result"]["values"][metric] for m in x_by_rep.values()]),
                "baseline": spread([m["result"]["values"][metric] for m in b_by_rep.values()]),
                "ratio": ratio,
                "failures": [m["failure"] for m in (*xs, *bs) if not ok(m)][:3],
                "xstream_failed_uploads": failed_uploads(xs),
                "baseline_failed_uploads": failed_uploads(bs),
                "xstream_server_cpu": spread(
                    [
                        m["server_cpu_s"] / m["result"]["values"]["seconds"]
                        for m in x_by_rep.values()
                    ]
                ),
                "baseline_server_cpu": spread(
                    [
                        m["server_cpu_s"] / m["result"]["values"]["seconds"]
                        for m in b_by_rep.values()
                    ]
                ),
                "xstream_peak_rss": spread(
                    [float(m["server_rss_peak"]) for m in x_by_rep.values()]
                ),
                "granted_buffer": max(
                    (m["result"]["values"].get("granted_buffer", 0) for m in x_by_rep.values()),
                    default=0,
                ),
            }
            if scenario != "many-small" and xs:
                row["target"] = f"≥ {RATIO_TARGET}× baseline"
                row["met"] = (
                    ratio is not None and ratio["median"] >= RATIO_TARGET and not row["failures"]
                )
            rows.append(row)
    return rows


def summarise(document: dict[str, Any]) -> dict[str, Any]:
    measurements = document["measurements"]
    summary: dict[str, Any] = {"uploads": upload_rows(document), "targets": []}
    targets = summary["targets"]

    def add(name: str, value: float | None, target: str, met: bool | None, detail: str) -> None:
        targets.append(
            {"name": name, "value": value, "target": target, "met": met, "detail": detail}
        )

    for row in summary["uploads"]:
        if "target" in row:
            value = row["ratio"]["median"] if row["ratio"] else None
            detail = spread_text(row["ratio"], "{:.2f}×")
            failed = row["xstream_failed_uploads"]
            if failed:
                detail += f"; {failed} uploads failed, " + brief_failures(row["failures"])
            add(f"{label(row)} ({row['durability']})", value, row["target"], row["met"], detail)

    concurrent = [r for r in summary["uploads"] if r["scenario"].startswith("concurrent-")]
    if concurrent:
        top = max(r["concurrency"] for r in concurrent)
        for row in (r for r in concurrent if r["concurrency"] == top and r["xstream_peak_rss"]):
            bound = top * 2 * row["granted_buffer"] + RSS_ALLOWANCE
            peak = row["xstream_peak_rss"]["max"]
            add(
                f"peak server RSS, {top} streams ({row['durability']})",
                peak / MiB,
                f"≤ {bound / MiB:.0f} MiB "
                f"({top} × 2 × {row['granted_buffer'] // KiB} KiB + 64 MiB)",
                peak <= bound,
                f"{peak / MiB:.0f} MiB (max over repetitions)",
            )

    resumes = [m for m in select(measurements, "resume", "xstream") if has(m, "resumed")]
    if select(measurements, "resume", "xstream"):
        p50 = spread([m["result"]["values"]["p50_ms"] for m in resumes])
        p99 = spread([m["result"]["values"]["p99_ms"] for m in resumes])
        summary["resume"] = {"p50_ms": p50, "p99_ms": p99}
        add(
            "resume latency p50",
            p50["median"] if p50 else None,
            "—",
            None,
            spread_text(p50, "{:.2f} ms"),
        )
        add(
            "resume latency p99",
            p99["median"] if p99 else None,
            f"≤ {RESUME_P99_TARGET_MS:.0f} ms",
            p99 is not None and p99["median"] <= RESUME_P99_TARGET_MS,
            spread_text(p99, "{:.2f} ms") + failures_text(measurements, "resume"),
        )

    idles = [m for m in select(measurements, "idle", "xstream") if has(m, "open")]
    if select(measurements, "idle", "xstream"):
        per = spread([m["result"]["values"]["bytes_per_connection"] for m in idles])
        summary["idle"] = {"bytes_per_connection": per}
        add(
            "server RSS per idle connection",
            per["median"] / KiB if per else None,
            "≤ 16 KiB",
            per is not None and per["median"] <= IDLE_TARGET_BYTES,
            spread_text(per, "{:.0f} B") + failures_text(measurements, "idle"),
        )

    echoes = [m for m in select(measurements, "echo", "xstream") if has(m, "round_trips")]
    if select(measurements, "echo", "xstream"):
        rate = spread([m["result"]["values"]["round_trips_per_s"] for m in echoes])
        summary["echo"] = {"round_trips_per_s": rate}
        add(
            "/echo round trips per second",
            rate["median"] if rate else None,
            f"≥ {ECHO_TARGET:,.0f}/s",
            rate is not None and rate["median"] >= ECHO_TARGET,
            spread_text(rate, "{:,.0f}/s") + failures_text(measurements, "echo"),
        )
    return summary


def has(entry: dict[str, Any], count: str) -> bool:
    """The measurement produced figures (some of its requests may still have failed)."""
    return bool(entry["result"].get("values", {}).get(count, 0))


def failures_text(measurements: Sequence[dict[str, Any]], scenario: str) -> str:
    failed = [m["failure"] for m in select(measurements, scenario, "xstream") if not ok(m)]
    return "; " + brief_failures(failed) if failed else ""


def brief_failures(failures: Sequence[str]) -> str:
    """Distinct failure messages, shortened, for a table cell."""
    distinct = list(dict.fromkeys(f[:110] for f in failures if f))
    return "failures: " + " / ".join(distinct[:2]).replace("|", "/")


def spread_text(values: dict[str, float] | None, form: str) -> str:
    if values is None:
        return "no valid measurement"
    median = form.format(values["median"])
    if values["n"] == 1:
        return median
    return f"{median} [{form.format(values['min'])} – {form.format(values['max'])}]"


def label(row: dict[str, Any]) -> str:
    size = f"{row['size'] / MiB:g} MiB" if row.get("size") else "?"
    if row["scenario"] == "single":
        return f"1 × {size} upload"
    if row["scenario"] == "many-small":
        return f"{row['concurrency']} × {size} uploads"
    return f"{row['concurrency']} × {size} concurrent"


def unit(row: dict[str, Any]) -> Callable[[float], str]:
    if row["metric"] == "uploads_per_s":
        return lambda v: f"{v:,.0f} up/s"
    return lambda v: f"{v:,.0f} MB/s"


def cell(values: dict[str, float] | None, fmt: Callable[[float], str]) -> str:
    if values is None:
        return "—"
    if values["n"] == 1:
        return fmt(values["median"])
    return f"{fmt(values['median'])} ({fmt(values['min'])}–{fmt(values['max'])})"


def failed_text(count: int) -> str:
    return f" ⚠ {count} failed" if count else ""


def met_text(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[met]


def table(document: dict[str, Any]) -> str:
    summary = document["summary"]
    lines = [
        "| upload scenario | durability | xstream | baseline | ratio | server CPU x / b |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["uploads"]:
        fmt = unit(row)
        ratio = cell(row["ratio"], lambda v: f"{v:.2f}×")
        cpu = "{} / {}".format(
            cell(row["xstream_server_cpu"], lambda v: f"{v:.2f}"),
            cell(row["baseline_server_cpu"], lambda v: f"{v:.2f}"),
        )
        xstream = cell(row["xstream"], fmt) + failed_text(row["xstream_failed_uploads"])
        baseline = cell(row["baseline"], fmt) + failed_text(row["baseline_failed_uploads"])
        lines.append(
            f"| {label(row)} | {row['durability']} | {xstream} | {baseline} | {ratio} | {cpu} |"
        )
    lines += ["", "| target | measured | goal | verdict |", "|---|---|---|---|"]
    for target in summary["targets"]:
        verdict = met_text(target["met"])
        lines.append(f"| {target['name']} | {target['detail']} | {target['target']} | {verdict} |")
    return "\n".join(lines)


def write(document: dict[str, Any], out: Path, stem: str) -> list[Path]:
    written = []
    throughput = plot_throughput(document, out / f"{stem}-throughput.png")
    if throughput:
        written.append(throughput)
    resume = plot_resume(document, out / f"{stem}-resume.png")
    if resume:
        written.append(resume)
    markdown = out / f"{stem}.md"
    markdown.write_text(markdown_report(document, stem, [p.name for p in written]))
    return [markdown, *written]


def _spread_line(axis: Any, points: Sequence[tuple[int, dict[str, float]]], **style: Any) -> None:
    """A line through the medians with min–max error bars."""
    medians = [s["median"] for _, s in points]
    axis.errorbar(
        [x for x, _ in points],
        medians,
        yerr=[
            [s["median"] - s["min"] for _, s in points],
            [s["max"] - s["median"] for _, s in points],
        ],
        capsize=3,
        marker="o",
        **style,
    )


def markdown_report(document: dict[str, Any], stem: str, images: Sequence[str]) -> str:
    machine = document["machine"]
    plan = document["plan"]
    checkpoint = document["checkpoint"]
    lines = [
        f"# xstream benchmark, {document['mode']} run of {document['started'][:10]}",
        "",
        f"Started {document['started']}, finished {document['finished']} (UTC). "
        f"Commit `{machine['commit']}`; {machine['cpus']} × {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}.",
        "",
        f"**The load generator and the servers share these {machine['cpus']} cores**: every "
        "figure here is what the server reaches while a client on the same machine drives it, "
        "over loopback. Ratios to the baseline are fair (the baseline pays the same client "
        "cost), absolute numbers are lower than a server would reach with the client elsewhere.",
        "",
        f"Each upload scenario was run {plan['repetitions']} time(s) against xstream and "
        "against the bare baseline of the same durability, back to back, alternating which "
        "went first. Cells give the median, and (min–max) when there were several "
        "repetitions; a ratio is the median of the per-repetition ratios. "
        f"fsync: both servers fsync every {checkpoint['bytes'] // MiB} MiB or "
        f"{checkpoint['seconds']:g} s and once at the end of each upload, before answering. "
        "no-fsync: bytes reach the page cache only. MB = 10⁶ bytes. Server CPU is the "
        "server process's CPU seconds per second of wall time (1.00 = one core busy).",
        "",
    ]
    if document["notes"]:
        lines += [f"> {note}" for note in document["notes"]] + [""]
    lines += [table(document), ""]
    for image in images:
        lines += [f"![{image}]({image})", ""]
    lines += [
        "## Parameters",
        "",
        f"* single upload: {plan['single_size'] / MiB:g} MiB; concurrent uploads: "
        f"{', '.join(map(str, plan['concurrencies']))} × {plan['concurrent_size'] / MiB:g} MiB; "
        f"many small: {plan['many_count']} × {plan['many_size'] / MiB:g} MiB, all at once.",
        f"* client buffer `B` asked for: {plan['buffer'] // KiB} KiB "
        "(the baseline reads with a buffer of the same size).",
        f"* resume: {plan['resume_count']} streams of {plan['resume_size'] / MiB:g} MiB, half "
        "sent, connection dropped; then one resume request at a time on a connection opened "
        "beforehand, timed from writing the request to reading the whole accept reply.",
        f"* idle: {plan['idle_count']} connections that send nothing, on a freshly started "
        "server warmed up by one upload and one echo; RSS after minus RSS before, divided by "
        "the number of connections.",
        f"* echo: {plan['echo_clients']} clients, each keeping {plan['echo_depth']} pipelined "
        f"`/echo` JSON requests in flight, for {plan['echo_seconds']:g} s.",
        "",
        f"Raw data: `{stem}.json`.",
        "",
    ]
    return "\n".join(lines)


def plot_throughput(document: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in document["summary"]["uploads"] if r["scenario"].startswith("concurrent-")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"no-fsync": "-", "fsync": "--"}
    colours = {"xstream": "tab:blue", "baseline": "tab:gray"}
    for durability in ("no-fsync", "fsync"):
        mine = sorted(
            (r for r in rows if r["durability"] == durability), key=lambda r: r["concurrency"]
        )
        for server in ("xstream", "baseline"):
            points = [(r["concurrency"], r[server]) for r in mine if r[server]]
            if not points:
                continue
            _spread_line(
                left,
                points,
                linestyle=styles[durability],
                color=colours[server],
                label=f"{server} {durability}",
            )
        ratios = [(r["concurrency"], r["ratio"]) for r in mine if r["ratio"]]
        if ratios:
            _spread_line(
                right,
                ratios,
                linestyle=styles[durability],
                color="tab:blue",
                label=f"xstream / baseline, {durability}",
            )
    size = rows[0]["size"] / MiB
    concurrencies = sorted({r["concurrency"] for r in rows})
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, labels=[str(c) for c in concurrencies])
        axis.set_xlabel("concurrent uploads")
        axis.grid(True, alpha=0.3)
    left.set_ylabel("aggregate MB/s")
    left.set_title(f"Upload throughput, {size:g} MiB per upload (median, min–max)")
    left.set_ylim(bottom=0)
    left.legend()
    right.axhline(RATIO_TARGET, color="tab:red", linewidth=1, label=f"target {RATIO_TARGET}×")
    right.set_ylabel("ratio to baseline of the same durability")
    right.set_title("xstream as a fraction of the bare baseline")
    right.set_ylim(bottom=0)
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_resume(document: dict[str, Any], path: Path) -> Path | None:
    samples = [
        s
        for m in select(document["measurements"], "resume", "xstream")
        for s in m["result"].get("values", {}).get("samples_ms", [])
    ]
    if not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1) + 0.5))]
    figure, (histogram, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    # The tail is shown by the CDF; the histogram keeps to where most resumes are.
    limit = max(2 * RESUME_P99_TARGET_MS, 1.2 * ordered[int(0.95 * (len(ordered) - 1))])
    beyond = sum(s > limit for s in ordered)
    histogram.hist(ordered, bins=60, range=(0, limit), color="tab:blue", alpha=0.8)
    histogram.set_xlabel(
        "resume request → accept reply (ms)"
        + (f"; {beyond} beyond {limit:.0f} ms" if beyond else "")
    )
    histogram.set_ylabel("resumes")
    histogram.set_title(f"Resume latency, {len(ordered)} resumes (all repetitions)")
    cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], color="tab:blue")
    cdf.set_xscale("log")
    cdf.set_xlabel("ms (log scale)")
    cdf.set_ylabel("fraction of resumes at or below")
    cdf.set_title("Cumulative distribution")
    for axis in (histogram, cdf):
        axis.axvline(p50, color="tab:green", linestyle="--", label=f"p50 {p50:.2f} ms")
        axis.axvline(p99, color="tab:orange", linestyle="--", label=f"p99 {p99:.2f} ms")
        axis.axvline(RESUME_P99_TARGET_MS, color="tab:red", label="p99 target 10 ms")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
