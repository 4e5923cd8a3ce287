"""bench/results/*.json -> the markdown tables and the plot of the docs' benchmarks page (and `make bench`'s report)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, BinaryIO

from bench.servers import TELEMETRY_OFF

TARGET_CONCURRENCY = 32


def _points(result: dict[str, Any], shape: str, server: str) -> dict[int, dict[str, Any]]:
    return {
        point["concurrency"]: point
        for point in result["points"]
        if point["shape"] == shape and point["server"] == server
    }


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    servers = list(result["servers"])
    lines = [
        f"Run {result['date']} at commit {result['commit']}; model {result['model']['name']} "
        f"v{result['model']['version']} (quantization {result['model']['quantization']}); "
        f"{machine['usable_cpus']} usable CPUs ({machine['cpu_model']}); load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}; "
        f"wrk, {result['seconds_per_point']:.0f} s per point after 1 s of warm-up.",
        "",
        "**In-process ceiling** (items/s, ONNX Runtime alone on pre-tokenized items; each way's best of "
        f"{result.get('ceiling_rounds', 1)} interleaved rounds):",
        "",
        "| shape | serial (1 run, all CPUs) | parallel (1 item per run, 1 run per CPU) "
        "| batched (16 by length, 1 run per CPU) |",
        "|---|---|---|---|",
    ]
    for shape, ways in result["ceiling_items_per_s"].items():
        lines.append(f"| {shape} | {ways['serial']:.0f} | {ways['parallel']:.0f} | {ways['batched']:.0f} |")
    concurrencies = result["concurrencies"]
    for shape, about in result["shapes"].items():
        best = max(result["ceiling_items_per_s"][shape].values())
        lines += [
            "",
            f"**{shape}**: {about['description']}; {about['requests']} requests, "
            f"{about['items_per_request']:.1f} items each. Ceiling {best:.0f} items/s.",
            "",
            "| server | " + " | ".join(f"items/s c={c}" for c in concurrencies) + " | peak / ceiling | "
            f"p50 / p95 / p99 ms at c={TARGET_CONCURRENCY} (or the highest run) | padding efficiency | non-2xx |",
            "|---|" + "---|" * (len(concurrencies) + 4),
        ]
        for server in servers:
            points = _points(result, shape, server)
            if not points:
                continue
            rates = [f"{points[c]['items_per_s']:.0f}" if c in points else "-" for c in concurrencies]
            peak = max(point["items_per_s"] for point in points.values())
            at = points.get(TARGET_CONCURRENCY) or points[max(points)]
            efficiency = [p["padding_efficiency"] for p in points.values() if p["padding_efficiency"] is not None]
            lines.append(
                f"| {server} | "
                + " | ".join(rates)
                + f" | {peak / best:.2f} | {at['p50_ms']:.0f} / {at['p95_ms']:.0f} / {at['p99_ms']:.0f} | "
                + (f"{min(efficiency):.2f}-{max(efficiency):.2f}" if efficiency else "n/a")
                + f" | {sum(p['non_2xx'] + p['socket_errors'] for p in points.values())} |"
            )
    telemetry = telemetry_cost(result)
    if telemetry:
        lines += ["", telemetry]
    lines += [
        "",
        "| server | configuration | cold start to ready | RSS idle | RSS peak under load |",
        "|---|---|---|---|---|",
    ]
    for server, about in result["servers"].items():
        lines.append(
            f"| {server} | {about['configuration']} | {about['cold_start_s']:.1f} s | "
            f"{about['rss_idle_mb']:.0f} MB | {about['rss_peak_mb']:.0f} MB |"
        )
    for server, why in result["failed_servers"].items():
        lines.append(f"| {server} | not measured: {why} | | | |")
    return "\n".join(lines) + "\n"


def telemetry_cost(result: dict[str, Any]) -> str | None:
    """rmserve's items/s over its telemetry-off variant's, at every point both were measured in."""
    ratios = {}
    for shape in result["shapes"]:
        on, off = _points(result, shape, "rmserve"), _points(result, shape, TELEMETRY_OFF)
        for concurrency in sorted(on.keys() & off.keys()):
            if off[concurrency]["items_per_s"] > 0:
                ratios[f"{shape} c={concurrency}"] = on[concurrency]["items_per_s"] / off[concurrency]["items_per_s"]
    if not ratios:
        return None
    each = ", ".join(f"{point} {ratio:.2f}" for point, ratio in ratios.items())
    return (
        f"**Telemetry on / off** (rmserve's items/s over `{TELEMETRY_OFF}`'s in the same point): {each}; "
        f"median {statistics.median(ratios.values()):.3f}."
    )


def plot(result: dict[str, Any], path: Path | BinaryIO) -> None:
    """Throughput and p99 against concurrency, one column per shape, one line per server; a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(result["shapes"])
    figure, axes = plt.subplots(2, len(shapes), figsize=(5 * len(shapes), 7), squeeze=False)
    for column, shape in enumerate(shapes):
        throughput, latency = axes[0][column], axes[1][column]
        for server in result["servers"]:
            points = _points(result, shape, server)
            concurrencies = sorted(points)
            throughput.plot(concurrencies, [points[c]["items_per_s"] for c in concurrencies], marker="o", label=server)
            latency.plot(concurrencies, [points[c]["p99_ms"] for c in concurrencies], marker="o", label=server)
        throughput.axhline(
            max(result["ceiling_items_per_s"][shape].values()), color="grey", linestyle="--", label="in-process ceiling"
        )
        throughput.set_title(f"{shape}: items/s")
        latency.set_title(f"{shape}: p99 latency (ms)")
        for axis in (throughput, latency):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("concurrent clients")
            axis.grid(alpha=0.3)
        latency.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(
        f"{result['model']['name']} v{result['model']['version']}, "
        f"{result['machine']['usable_cpus']} CPUs, {result['date']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90, format="png")
    plt.close(figure)
