"""`rmserve bench` runs end to end: batching policies, and a smoke-sized HTTP comparison under wrk (tiny model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.baselines.common import load, raw_scores, session
from bench.harness import default_models
from bench.report import ratios
from bench.servers import NAIVE, NAIVE_ONE_THREAD, TELEMETRY_OFF
from rmserve.cli import main
from tests.conftest import SHARED_DATA
from tests.tiny_model import expected_raw_scores, write_version


def bench(tiny_repository: Path, tmp_path: Path, *flags: str) -> str:
    report = tmp_path / "bench.md"
    common = ["--model-repository", str(tiny_repository), "--data", str(tmp_path / "none.jsonl.gz")]
    assert main(["bench", *common, "--items", "24", "--rounds", "1", *flags, "-o", str(report)]) == 0
    return report.read_text()


def test_bench_reads_a_preference_file_in_the_models_format(tiny_repository: Path, tmp_path: Path) -> None:
    from bench.compare import shapes
    from bench.harness import workloads
    from rmserve.engine.version import load_model

    pair = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello there.", "rejected": "\n\nHuman: Hi?\n\nAssistant: No."}
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(pair) + "\n" for _ in range(2400)), encoding="utf-8")
    model = load_model(tiny_repository, "tiny", 1)
    assert [workload.name for workload in workloads(model, data, 24, seed=0)] == ["rl-groups", "hh-mixed"]
    single = next(shape for shape in shapes(model, data, seed=0) if shape.name == "single")
    assert single.requests[0][0] in {  # prompt + response is the transcript as written
        ("\n\nHuman: Hi?\n\nAssistant: ", "Hello there."),
        ("\n\nHuman: Hi?\n\nAssistant: ", "No."),
    }


def test_bench_reports_each_policy_for_each_workload(tiny_repository: Path, tmp_path: Path) -> None:
    text = bench(tiny_repository, tmp_path, "--no-http", "--padding-ratios", "1.25", "2.0")
    for workload in ("rl-groups", "hh-mixed"):
        assert f"**{workload}**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 2 * 4  # alone, FIFO, and two padding ratios, per workload
    assert all(float(row.split("|")[4]) <= 1.0 for row in rows)  # padding efficiency is a share


WRK = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (.ci/install-tools.sh installs it)")


@WRK
@pytest.mark.parametrize(
    ("servers", "concurrencies"),
    [
        pytest.param(["rmserve"], [2], id="smoke"),
        pytest.param(
            ["rmserve", TELEMETRY_OFF, NAIVE, NAIVE_ONE_THREAD], [1, 4], id="four-servers", marks=pytest.mark.slow
        ),
    ],
)
def test_http_comparison_writes_json_table_and_plot(
    tiny_repository: Path, tmp_path: Path, servers: list[str], concurrencies: list[int]
) -> None:
    results = tmp_path / "results"
    flags = ["--padding-ratios", "1.25", "--servers", *servers, "--seconds", "1"]
    text = bench(
        tiny_repository, tmp_path, *flags, "--concurrency", *map(str, concurrencies), "--results", str(results)
    )
    (saved,) = results.glob("*.json")
    result = json.loads(saved.read_text())
    (run,) = result["models"].values()
    assert set(run["servers"]) == set(servers) and not run["failed_servers"]
    measured = {(point["server"], point["shape"], point["concurrency"]) for point in run["points"]}
    # The telemetry-off variant only sits beside rmserve where RL traffic is: single items and GRPO groups.
    shapes = dict.fromkeys(servers, ("single", "grpo", "batch64")) | {TELEMETRY_OFF: ("single", "grpo")}
    assert measured == {(s, shape, c) for s in servers for shape in shapes[s] for c in concurrencies}
    assert all(point["items_per_s"] > 0 and point["non_2xx"] == 0 for point in run["points"])
    assert all(point["cpu_ms_per_item"] > 0 and point["load_average"] >= 0 for point in run["points"])
    assert all(about["rss_idle_mb"] > 0 and about["cold_start_s"] > 0 for about in run["servers"].values())
    assert (results / "http.png").stat().st_size > 0
    assert "**single**" in text and "| rmserve |" in text
    if TELEMETRY_OFF in servers:
        (line,) = [line for line in text.splitlines() if line.startswith("**Telemetry on / off**")]
        assert all(f"{shape} c={c} " in line for shape in ("single", "grpo") for c in concurrencies)
        assert float(line.rsplit("median ", 1)[1].rstrip(".")) > 0


@WRK
def test_every_model_gets_its_ceiling_policies_and_servers_in_one_run(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    for name in ("tiny", "tiny-copy"):
        write_version(repository / name / "1", name=name)
    results = tmp_path / "results"
    flags = ["--models", "tiny", "tiny-copy", "--servers", "rmserve", "--padding-ratios", "1.25", "--seconds", "1"]
    text = bench(repository, tmp_path, *flags, "--concurrency", "2", "--results", str(results))
    (saved,) = results.glob("*.json")
    result = json.loads(saved.read_text())
    assert list(result["models"]) == ["tiny", "tiny-copy"]
    for name, run in result["models"].items():
        assert run["model"]["name"] == name and set(run["ceiling_items_per_s"]) == {"single", "grpo", "batch64"}
        assert {point["shape"] for point in run["points"]} == {"single", "grpo", "batch64"}
        assert f"#### {name} v1" in text and f"Model `{name}` v1" in text
    assert text.count("**rl-groups**") == 2


def test_the_default_models_are_the_tiny_default_and_minilm_where_the_repository_has_them(tmp_path: Path) -> None:
    for name in ("a-model", "hh-harmless", "hh-harmless-minilm"):
        (tmp_path / name / "1").mkdir(parents=True)
    assert default_models(tmp_path) == ["hh-harmless", "hh-harmless-minilm"]
    shutil.rmtree(tmp_path / "hh-harmless")
    assert default_models(tmp_path) == ["hh-harmless-minilm"]
    shutil.rmtree(tmp_path / "hh-harmless-minilm")
    assert default_models(tmp_path) == ["a-model"]


def test_report_states_rmserves_ratios_to_the_ceiling_and_the_better_naive_setting() -> None:
    def point(server: str, shape: str, concurrency: int, items_per_s: float) -> dict[str, object]:
        return {"server": server, "shape": shape, "concurrency": concurrency, "items_per_s": items_per_s}

    run = {
        "shapes": {"single": {}, "grpo": {}},
        "ceiling_items_per_s": {
            "single": {"serial": 100.0, "parallel": 200.0, "batched": 150.0},
            "grpo": {"serial": 300.0, "parallel": 200.0, "batched": 400.0},
        },
        "points": [
            point("rmserve", "single", 32, 170.0),
            point("rmserve", "single", 8, 190.0),  # not the target's concurrency
            point(NAIVE, "single", 32, 100.0),
            point(NAIVE_ONE_THREAD, "single", 32, 136.0),
            point("rmserve", "grpo", 1, 200.0),
            point("rmserve", "grpo", 8, 360.0),
        ],
    }
    assert ratios(run) == {
        "single c=32 / ceiling": 0.85,
        "single c=32 / the naive server's better setting": 1.25,
        "grpo peak / ceiling": 0.9,
    }


def test_report_gives_telemetrys_cost_where_rmserve_ran_beside_its_telemetry_off_variant() -> None:
    from bench.report import telemetry_cost

    def point(server: str, shape: str, items_per_s: float) -> dict[str, object]:
        return {"server": server, "shape": shape, "concurrency": 8, "items_per_s": items_per_s}

    result = {
        "shapes": {"single": {}, "grpo": {}, "batch64": {}},
        "points": [
            point("rmserve", "single", 100.0),
            point(TELEMETRY_OFF, "single", 98.0),
            point("rmserve", "grpo", 48.0),
            point(TELEMETRY_OFF, "grpo", 50.0),
            point("rmserve", "batch64", 30.0),  # the variant does not run this shape
        ],
    }
    line = telemetry_cost(result)
    assert line is not None and line.endswith("single c=8 1.02, grpo c=8 0.96; median 0.990.")
    assert telemetry_cost({**result, "points": result["points"][::2]}) is None


@pytest.mark.skipif(not (SHARED_DATA / "hh-rlhf-harmless-test.jsonl.gz").exists(), reason="needs ../shared/data")
def test_ood_bench_measures_cost_and_false_positives_of_an_embedding_version(
    embedding_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import ood

    ood.main([str(embedding_repository), "tiny"])
    printed = capsys.readouterr().out
    assert "| session run + distances, batch 64 | 16 |" in printed
    assert "| ServedModel.score (batcher, flags), 8 per call | 64 |" in printed
    assert "5-fold CV on the 3600 training responses" in printed and "held-out lines 1801-2312" in printed
    assert printed.count("(cut ") == len(ood.STRANGE)


def test_the_baselines_score_a_graph_that_also_exports_its_embedding(embedding_repository: Path) -> None:
    # The committed models have a second output; a baseline that unpacked one output failed every request.
    model = load(embedding_repository, "tiny")
    prompts, responses = ["Hi?", "Hi?"], ["Mix flour and water.", "No."]
    raw = raw_scores(model, session(model), prompts, responses)
    encoded = [encoding.input_ids for encoding in model.format.encode_texts(prompts, responses)]
    assert np.allclose(raw, expected_raw_scores(model.directory, encoded), atol=1e-5)
