"""`rmserve bench` runs end to end and reports every policy it compares (tiny model, no HTTP)."""

from __future__ import annotations

from pathlib import Path

from rmserve.cli import main


def test_bench_reports_each_policy_for_each_workload(tiny_repository: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    assert (
        main(
            [
                "bench",
                "--model-repository",
                str(tiny_repository),
                "--data",
                str(tmp_path / "none.jsonl.gz"),
                "--items",
                "24",
                "--rounds",
                "1",
                "--no-http",
                "--padding-ratios",
                "1.25",
                "2.0",
                "-o",
                str(report),
            ]
        )
        == 0
    )
    text = report.read_text()
    for workload in ("rl-groups", "hh-mixed"):
        assert f"**{workload}**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 2 * 4  # alone, FIFO, and two padding ratios, per workload
    assert all(float(row.split("|")[4]) <= 1.0 for row in rows)  # padding efficiency is a share
