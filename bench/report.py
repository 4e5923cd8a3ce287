"""bench/results/*.json -> the markdown tables and the plot of the docs' benchmarks page (and `make bench`'s report)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, BinaryIO

from bench.servers import NAIVE, NAIVE_ONE_THREAD, TELEMETRY_OFF

TARGET_CONCURRENCY = 32


def model_runs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model's part of a run, by name (runs before 2026-12-06 measured one model, at the top level)."""
    return result["models"] if "models" in result else {result["model"]["name"]: result}


def _points(run: dict[str, Any], shape: str, server: str) -> dict[int, dict[str, Any]]:
    return {
        point["concurrency"]: point for point in run["points"] if point["shape"] == shape and point["server"] == server
    }


def _ceiling(run: dict[str, Any], shape: str) -> float:
    return max(run["ceiling_items_per_s"][shape].values())


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    minutes = f" {result['minutes']:.0f} minutes in all;" if "minutes" in result else ""
    lines = [
        f"Run {result['date']} at commit {result['commit']}; {machine['usable_cpus']} usable CPUs "
        f"({machine['cpu_model']}); load average before {machine['load_average_before'][0]:.2f}, after "
        f"{machine['load_average_after'][0]:.2f};{minutes} wrk, {result['seconds_per_point']:.0f} s per point "
        "(longer where many items are in flight) after 1 s of warm-up. The models ran one after another, "
        "each against its own ceiling and its own servers.",
    ]
    for run in model_runs(result).values():
        lines += ["", *_model_section(result, run)]
    return "\n".join(lines) + "\n"


def _model_section(result: dict[str, Any], run: dict[str, Any]) -> list[str]:
    model = run["model"]
    loads = ""
    if "load_average_before" in run:
        loads = (
            f" Load average when its ceiling started {run['load_average_before'][0]:.2f}, when its last point "
            f"ended {run['load_average_after'][0]:.2f}."
        )
    lines = [
        f"#### {model['name']} v{model['version']} (quantization {model['quantization']})",
        "",
        f"**In-process ceiling** (items/s, ONNX Runtime alone on pre-tokenized items; each way's best of "
        f"{result.get('ceiling_rounds', 1)} interleaved rounds).{loads}",
        "",
        "| shape | serial (1 run, all CPUs) | parallel (1 item per run, 1 run per CPU) "
        "| batched (16 by length, 1 run per CPU) |",
        "|---|---|---|---|",
    ]
    for shape, ways in run["ceiling_items_per_s"].items():
        lines.append(f"| {shape} | {ways['serial']:.0f} | {ways['parallel']:.0f} | {ways['batched']:.0f} |")
    concurrencies = result["concurrencies"]
    for shape, about in run["shapes"].items():
        best = _ceiling(run, shape)
        lines += [
            "",
            f"**{shape}**: {about['description']}; {about['requests']} requests, "
            f"{about['items_per_request']:.1f} items each. Ceiling {best:.0f} items/s.",
            "",
            "| server | " + " | ".join(f"items/s c={c}" for c in concurrencies) + " | peak / ceiling | "
            f"p50 / p95 / p99 ms at c={TARGET_CONCURRENCY} (or the highest run) | server CPU ms per item there "
            "| padding efficiency | non-2xx |",
            "|---|" + "---|" * (len(concurrencies) + 5),
        ]
        for server in run["servers"]:
            points = _points(run, shape, server)
            if not points:
                continue
            rates = [f"{points[c]['items_per_s']:.0f}" if c in points else "-" for c in concurrencies]
            peak = max(point["items_per_s"] for point in points.values())
            at = points.get(TARGET_CONCURRENCY) or points[max(points)]
            cpu = f"{at['cpu_ms_per_item']:.1f}" if at.get("cpu_ms_per_item") is not None else "-"
            efficiency = [p["padding_efficiency"] for p in points.values() if p["padding_efficiency"] is not None]
            lines.append(
                f"| {server} | "
                + " | ".join(rates)
                + f" | {peak / best:.2f} | {at['p50_ms']:.0f} / {at['p95_ms']:.0f} / {at['p99_ms']:.0f} | {cpu} | "
                + (f"{min(efficiency):.2f}-{max(efficiency):.2f}" if efficiency else "n/a")
                + f" | {sum(p['non_2xx'] + p['socket_errors'] for p in points.values())} |"
            )
    measured = ratios(run)
    if measured:
        lines += [
            "",
            "**rmserve's ratios** (this run): " + "; ".join(f"{k} {v:.2f}x" for k, v in measured.items()) + ".",
        ]
    telemetry = telemetry_cost(run)
    if telemetry:
        lines += ["", telemetry]
    lines += [
        "",
        "| server | configuration | cold start to ready | RSS idle | RSS peak under load |",
        "|---|---|---|---|---|",
    ]
    for server, about in run["servers"].items():
        lines.append(
            f"| {server} | {about['configuration']} | {about['cold_start_s']:.1f} s | "
            f"{about['rss_idle_mb']:.0f} MB | {about['rss_peak_mb']:.0f} MB |"
        )
    for server, why in run["failed_servers"].items():
        lines.append(f"| {server} | not measured: {why} | | | |")
    return lines


def ratios(run: dict[str, Any]) -> dict[str, float]:
    """rmserve against the ceiling and the naive server, as the targets state them (what was measured of them)."""
    found: dict[str, float] = {}
    single = _points(run, "single", "rmserve").get(TARGET_CONCURRENCY)
    if single is not None:
        found[f"single c={TARGET_CONCURRENCY} / ceiling"] = single["items_per_s"] / _ceiling(run, "single")
        naive = [
            point["items_per_s"]
            for server in (NAIVE, NAIVE_ONE_THREAD)
            if (point := _points(run, "single", server).get(TARGET_CONCURRENCY)) is not None
        ]
        if naive:
            found[f"single c={TARGET_CONCURRENCY} / the naive server's better setting"] = single["items_per_s"] / max(
                naive
            )
    for shape in ("grpo", "batch64"):
        points = _points(run, shape, "rmserve") if shape in run["shapes"] else {}
        if points:
            found[f"{shape} peak / ceiling"] = max(p["items_per_s"] for p in points.values()) / _ceiling(run, shape)
    return found


def telemetry_cost(run: dict[str, Any]) -> str | None:
    """rmserve's items/s over its telemetry-off variant's, at every point both were measured in."""
    by_point = {}
    for shape in run["shapes"]:
        on, off = _points(run, shape, "rmserve"), _points(run, shape, TELEMETRY_OFF)
        for concurrency in sorted(on.keys() & off.keys()):
            if off[concurrency]["items_per_s"] > 0:
                by_point[f"{shape} c={concurrency}"] = on[concurrency]["items_per_s"] / off[concurrency]["items_per_s"]
    if not by_point:
        return None
    each = ", ".join(f"{point} {ratio:.2f}" for point, ratio in by_point.items())
    return (
        f"**Telemetry on / off** (rmserve's items/s over `{TELEMETRY_OFF}`'s in the same point): {each}; "
        f"median {statistics.median(by_point.values()):.3f}."
    )


def plot(result: dict[str, Any], path: Path | BinaryIO) -> None:
    """Throughput and p99 against concurrency: per model two rows, one column per shape, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(model_runs(result).values())
    shapes = list(runs[0]["shapes"])
    figure, axes = plt.subplots(
        2 * len(runs), len(shapes), figsize=(5 * len(shapes), 3.6 * 2 * len(runs)), squeeze=False
    )
    for row, run in enumerate(runs):
        name = run["model"]["name"]
        for column, shape in enumerate(shapes):
            throughput, latency = axes[2 * row][column], axes[2 * row + 1][column]
            for server in run["servers"]:
                points = _points(run, shape, server)
                concurrencies = sorted(points)
                throughput.plot(
                    concurrencies, [points[c]["items_per_s"] for c in concurrencies], marker="o", label=server
                )
                latency.plot(concurrencies, [points[c]["p99_ms"] for c in concurrencies], marker="o", label=server)
            throughput.axhline(_ceiling(run, shape), color="grey", linestyle="--", label="in-process ceiling")
            throughput.set_title(f"{name}, {shape}: items/s")
            latency.set_title(f"{name}, {shape}: p99 latency (ms)")
            for axis in (throughput, latency):
                axis.set_xscale("log", base=2)
                axis.set_xlabel("concurrent clients")
                axis.grid(alpha=0.3)
            latency.set_yscale("log")
        axes[2 * row][0].legend(fontsize=8)
    figure.suptitle(f"{result['machine']['usable_cpus']} CPUs, {result['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=80, format="png")
    plt.close(figure)
