"""`rmserve bench`: batching policies and the HTTP server, measured side by side in one run.

Every comparison runs on the same workload, the same model and the same machine, with the
policies interleaved over several rounds, and is reported as a ratio to running each item
alone: absolute numbers on shared machines move, ratios measured together hold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.texts import prompt_of, synthetic_text
from rmserve.arguments import at_least_one, model_name, positive_float, positive_int
from rmserve.config import Settings, usable_cpus
from rmserve.core.repository import model_names
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.batcher import Batcher
from rmserve.engine.served_model import wait_all
from rmserve.engine.version import ModelVersion, load_model
from rmserve.training.data import LineRange, read_comparisons
from rmserve.usage import require_model

DATA = Path("../shared/data/hh-rlhf-harmless-test.jsonl.gz")
RESULTS = Path("bench/results")
TRAIN_LINES = 1800  # the data's training split
# The tiny default model, whose cost is mostly the Python around each run, and a pretrained encoder
# (MiniLM, int8), whose cost is the network: a change that helps one and hurts the other shows.
DEFAULT_MODELS = ("hh-harmless", "hh-harmless-minilm")


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    prompts: list[str]
    responses: list[str]
    sequences: list[list[int]]  # the same pairs, tokenized


@dataclass(frozen=True)
class Measurement:
    policy: str
    seconds: list[float]  # one per round
    items: int
    real_tokens: int
    padded_tokens: int

    @property
    def items_per_second(self) -> float:
        return self.items / statistics.median(self.seconds)

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens


def workloads(model: ModelVersion, data: Path, items: int, seed: int) -> list[Workload]:
    rng = np.random.default_rng(seed)
    if data.is_file():
        # Training lines only, so held-out lines stay untouched; any supported preference format.
        comparisons = read_comparisons(data, LineRange(1, min(items, TRAIN_LINES)), model.format.layouts)
        pairs = [(prompt_of(comparison), response) for comparison in comparisons for response in comparison.responses]
    else:
        pairs = [(synthetic_text(rng, 30, 31), synthetic_text(rng, 5, 150)) for _ in range(items)]
    prompts, responses = (list(side) for side in zip(*pairs[:items], strict=True))
    # RL rollouts: one prompt, many sampled completions of similar length (GRPO groups).
    group_prompts = ["Explain how to bake bread at home."] * len(responses)
    completions = [" ".join(response.split()[: int(rng.integers(20, 40))]) for response in responses]
    return [
        tokenized(
            model, "rl-groups", "one prompt, completions of 20-40 words (GRPO-style)", group_prompts, completions
        ),
        tokenized(model, "hh-mixed", "HH-RLHF prompt+response pairs, natural lengths", prompts, responses),
    ]


def tokenized(model: ModelVersion, name: str, description: str, prompts: list[str], responses: list[str]) -> Workload:
    sequences = [encoding.input_ids for encoding in model.format.encode_texts(prompts, responses)]
    return Workload(name, description, prompts, responses, sequences)


def run_alone(model: ModelVersion, sequences: Sequence[list[int]]) -> tuple[int, int]:
    for sequence in sequences:
        model.scorer(*pad_batch([sequence], model.manifest.tokens.pad_id))
    total = sum(map(len, sequences))
    return total, total


def run_fifo(model: ModelVersion, sequences: Sequence[list[int]], size: int = 32) -> tuple[int, int]:
    padded = 0
    for start in range(0, len(sequences), size):
        input_ids, attention_mask = pad_batch(sequences[start : start + size], model.manifest.tokens.pad_id)
        model.scorer(input_ids, attention_mask)
        padded += input_ids.size
    return sum(map(len, sequences)), padded


def run_batcher(model: ModelVersion, sequences: Sequence[list[int]], settings: Settings) -> tuple[int, int]:
    padded = 0

    def counting_score(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[float]:
        nonlocal padded
        padded += input_ids.size
        return model.scorer(input_ids, attention_mask).tolist()

    batcher = Batcher(
        "bench",
        counting_score,
        model.manifest.tokens.pad_id,
        settings.batch_tokens(model.manifest.batch_tokens),
        max(settings.max_queue_tokens, sum(map(len, sequences))),
        settings.max_padding_ratio,
        settings.max_batch_size,
    ).start()
    deadline = time.monotonic() + 3600
    wait_all(batcher.submit(list(sequences), deadline), deadline)
    batcher.stop()
    return sum(map(len, sequences)), padded


def measure_policies(
    model: ModelVersion, workload: Workload, settings: Settings, rounds: int, padding_ratios: Sequence[float]
) -> list[Measurement]:
    policies: dict[str, Callable[[], tuple[int, int]]] = {
        "each item alone": lambda: run_alone(model, workload.sequences),
        "FIFO batches of 32": lambda: run_fifo(model, workload.sequences),
    }
    for ratio in padding_ratios:
        label = f"rmserve batcher, max_padding_ratio {ratio}" + (
            " (default)" if ratio == settings.max_padding_ratio else ""
        )
        variant = settings.replace(max_padding_ratio=ratio)
        policies[label] = lambda variant=variant: run_batcher(model, workload.sequences, variant)
    seconds: dict[str, list[float]] = {name: [] for name in policies}
    tokens: dict[str, tuple[int, int]] = {}
    for _ in tqdm(range(rounds), desc=workload.name, unit="round", file=sys.stderr):
        for name, policy in policies.items():  # interleaved, so drift in machine load hits all alike
            started = time.perf_counter()
            tokens[name] = policy()
            seconds[name].append(time.perf_counter() - started)
    return [Measurement(name, seconds[name], len(workload.sequences), *tokens[name]) for name in policies]


def policy_table(workload: Workload, measured: list[Measurement]) -> str:
    baseline = measured[0].items_per_second
    lengths = [len(sequence) for sequence in workload.sequences]
    lines = [
        f"**{workload.name}**: {workload.description}; {len(lengths)} items, tokens median "
        f"{int(np.median(lengths))}, min {min(lengths)}, max {max(lengths)}.",
        "",
        "| policy | items/s (median of rounds) | vs each item alone | padding efficiency |",
        "|---|---|---|---|",
    ]
    for measurement in measured:
        lines.append(
            f"| {measurement.policy} | {measurement.items_per_second:.1f} | "
            f"{measurement.items_per_second / baseline:.2f}x | {measurement.padding_efficiency:.2f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=Path("models"), help="model repository (models)")
    parser.add_argument(
        "--models",
        type=model_name,
        nargs="+",
        help=f"models to measure, one after another (default: those of {', '.join(DEFAULT_MODELS)} in the "
        "repository, or its first model)",
    )
    parser.add_argument("--data", type=Path, default=DATA, help=f"HH-RLHF JSONL.gz for realistic texts ({DATA})")
    parser.add_argument("--items", type=positive_int, default=256, help="items per workload (default 256)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds per policy (default 3)")
    parser.add_argument(
        "--http",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also compare the HTTP servers (rmserve and the baselines) under wrk (default on)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        help="HTTP servers to compare (default all: rmserve, 'rmserve, telemetry off' (single and GRPO shapes), "
        "'rmserve, batching off', 'rmserve, int8' when <model>-int8 is in the repository, 'naive Flask + ORT', "
        "'naive Flask + ORT, 1-thread runs', LitServe, PyTriton)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        nargs="+",
        default=[1, 8, 32, 128],
        help="concurrent clients (default 1 8 32 128)",
    )
    parser.add_argument(
        "--seconds", type=positive_float, default=5.0, help="measured seconds per HTTP point (default 5)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help=f"directory for the comparison's JSON and plot (default {RESULTS})",
    )
    parser.add_argument(
        "--padding-ratios",
        type=at_least_one,
        nargs="+",
        default=[1.1, 1.25, 1.5, 2.0],
        help="max_padding_ratio values to compare (default 1.1 1.25 1.5 2.0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling the workloads (default 0)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the markdown report to this file instead of stdout (make bench: bench/results.md)",
    )


def default_models(repository: Path) -> list[str]:
    """The models `rmserve bench` measures unless told: the default pair where the repository has them."""
    held = model_names(repository)
    return [name for name in DEFAULT_MODELS if name in held] or held[:1]


def run(args: argparse.Namespace) -> int:
    for name in args.models or [None]:
        require_model(args.model_repository, name, "--model-repository")
    settings = Settings.from_env({}, model_repository=args.model_repository)
    threads = usable_cpus()  # the policies compare batching on one run at a time, with every CPU
    models = [
        load_model(args.model_repository, name, threads)
        for name in args.models or default_models(args.model_repository)
    ]
    sections = []
    for model in models:
        sections.append(
            f"Model `{model.name}` v{model.manifest.version} ({model.manifest.architecture.get('type', '?')}, "
            f"max_length {model.manifest.max_length}, quantization {model.manifest.quantization}); one run at a "
            f"time with {threads} ONNX Runtime threads; max_batch_tokens "
            f"{settings.batch_tokens(model.manifest.batch_tokens)}, "
            f"max_padding_ratio {settings.max_padding_ratio}."
        )
        for workload in workloads(model, args.data, args.items, args.seed):
            measured = measure_policies(model, workload, settings, args.rounds, args.padding_ratios)
            sections.append(policy_table(workload, measured))
    if args.http:
        from bench.compare import Plan, compare
        from bench.report import markdown, plot

        plan = Plan(args.model_repository, args.data, args.servers, args.concurrency, args.seconds, args.seed)
        result = compare(models, plan)
        args.results.mkdir(parents=True, exist_ok=True)
        stamp = result["date"].replace(":", "").replace("-", "")[:13]
        json_path = args.results / f"{stamp}-{result['commit']}.json"
        json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        plot(result, args.results / "http.png")
        sections.append(f"**HTTP servers side by side** (`{json_path}`):\n\n" + markdown(result))
    report = "\n\n".join(sections) + "\n"
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    else:
        print(report)
    return 0
