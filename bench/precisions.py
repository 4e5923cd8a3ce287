"""Precisions and runtimes for one model, in process: speed, agreement with fp32, and batch dependence.

`python -m bench.precisions hh-harmless-minilm` (in `.venv-bench`, which has OpenVINO) builds every
variant from one fp32 graph and measures them side by side:

- `fp32`: ONNX Runtime's CPU provider, the graph as exported;
- `int8-weights`: what `rmserve quantize` writes (int8 weights, fp32 arithmetic: the same on every CPU);
- `int8-dynamic`: ONNX Runtime's dynamic quantization (int8 weights per channel, uint8 activations with one
  scale per run);
- `int8-static`: ONNX Runtime's static QDQ quantization (per-channel weights, uint8 activations whose scales
  are calibrated once on training responses), of the matrix multiplies;
- `openvino-fp32`, `openvino-bf16`: OpenVINO's CPU plugin, fp32 and bf16 inference precision (bf16 runs on
  AMX or AVX512_BF16; OpenVINO falls back to fp32 on a CPU with neither).

Speed is the in-process ceiling's way (bench/ceiling.py): two threads sharing the server's own scorer for
the variant (ONNX Runtime: one session of single-threaded runs; OpenVINO: what `RMSERVE_RUNTIME=openvino-bf16`
serves with, one single-threaded stream per thread), one item per run and sorted runs of 16, best of
interleaved rounds, on the model's short GRPO-like completions and natural HH lengths. Agreement is
pairwise ranking agreement with fp32 on training lines (the decision needs no held-out data), and batch
dependence the largest change in an item's raw score between running it alone and in a run of 16.

The fp32 graph is the version's own, or (`hh-harmless-minilm`, committed as ONNX Runtime's dynamic int8)
its int8 weights dequantized: an fp32 graph with the weights rounded as stored, which is what the other
variants are compared against then. `--fp32 DIR` names an fp32 export instead (`make minilm` leaves one in
runs/model-build/fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from bench.harness import DATA
from rmserve.arguments import model_name, positive_int
from rmserve.core.manifest import MODEL_FILE
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.session import OnnxScorer
from rmserve.engine.version import ModelVersion, load_model
from rmserve.training.console import line_range
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.evaluate import (
    encode_comparisons,
    pairwise_accuracy,
    ranking_agreement,
    regroup,
    score_comparisons,
)
from rmserve.training.onnx_files import quantize_int8

Sequences = Sequence[list[int]]
ScoreRun = Callable[[np.ndarray, np.ndarray], np.ndarray]  # padded ids, mask -> raw scores
CALIBRATION_LINES = LineRange(1, 64)  # static int8's activation ranges
AGREEMENT_LINES = LineRange(1001, 1512)  # training lines, none of them calibration's
SPEED_LINES = LineRange(1, 200)
SHORT_WORDS = 30  # a GRPO completion's length
ROWS = 16  # a sorted run's rows
THREADS = 2  # one single-threaded run per CPU of the 2-CPU machine the page measures


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    score: ScoreRun  # the server's own scorer for it, shared by the threads as its executors share one


def onnx_runtime(path: Path) -> ScoreRun:
    """One session of single-threaded runs, as the server's executors share one."""
    return OnnxScorer(path, 1)


def openvino(path: Path, precision: str) -> ScoreRun:
    """What `RMSERVE_RUNTIME=openvino-bf16` serves with: a stream per thread, an infer request each."""
    from rmserve.engine.openvino_session import OpenVinoScorer

    return OpenVinoScorer(path, runs=THREADS, threads=1, precision=precision)


def dequantized(graph: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's dynamic int8 graph back to fp32 matrix multiplies of its int8 weights times their scales.

    Each quantized product is DynamicQuantizeLinear(x) -> MatMulInteger(x_q, w_q, x_zero, w_zero) -> Cast ->
    Mul(x_scale * w_scale); it becomes MatMul(x, (w_q - w_zero) * w_scale), and what only it used goes.
    """
    nodes = list(graph.graph.node)
    produced = {output: node for node in nodes for output in node.output}
    read_by: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            read_by.setdefault(name, []).append(node)
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.graph.initializer}
    values |= {
        node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in nodes if node.op_type == "Constant"
    }
    replaced: dict[str, onnx.NodeProto] = {}  # the output of each product's final Mul -> its fp32 MatMul
    for node in nodes:
        if node.op_type != "MatMulInteger":
            continue
        x_quantized, w_quantized, _, w_zero = node.input
        quantize = produced[x_quantized]
        (cast,) = read_by[node.output[0]]
        (rescale,) = read_by[cast.output[0]]
        scales = produced[next(name for name in rescale.input if name != cast.output[0])]
        w_scale = next(name for name in scales.input if name != quantize.output[1])
        weights = (values[w_quantized].astype(np.float32) - values[w_zero].astype(np.float32)) * values[w_scale]
        graph.graph.initializer.append(numpy_helper.from_array(weights.astype(np.float32), f"{w_quantized}_fp32"))
        replaced[rescale.output[0]] = onnx.helper.make_node(
            "MatMul", [quantize.input[0], f"{w_quantized}_fp32"], [rescale.output[0]], name=f"{node.name}_fp32"
        )
    rewired = [replaced.get(node.output[0], node) if node.output else node for node in nodes]
    needed = {output.name for output in graph.graph.output}
    alive: list[onnx.NodeProto] = []
    for node in reversed(rewired):
        if any(output in needed for output in node.output):
            alive.append(node)
            needed.update(node.input)
    del graph.graph.node[:]
    graph.graph.node.extend(reversed(alive))
    unused = [tensor for tensor in graph.graph.initializer if tensor.name not in needed]
    for tensor in unused:
        graph.graph.initializer.remove(tensor)
    return graph


class Calibration(CalibrationDataReader):
    """Static int8's calibration feed: one training response per run."""

    def __init__(self, sequences: Sequences, pad_id: int):
        self.feeds = iter(sequences)
        self.pad_id = pad_id

    def get_next(self) -> dict[str, np.ndarray] | None:
        sequence = next(self.feeds, None)
        if sequence is None:
            return None
        input_ids, attention_mask = pad_batch([sequence], self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def build(fp32: Path, scratch: Path, calibration: Sequences, pad_id: int) -> list[Variant]:
    """Every variant's graph in `scratch`, from the fp32 graph."""
    int8_weights, dynamic, static = scratch / "int8-weights.onnx", scratch / "dynamic.onnx", scratch / "static.onnx"
    quantize_int8(fp32, int8_weights)
    quantize_dynamic(fp32, dynamic, per_channel=True, weight_type=QuantType.QInt8)
    quantize_static(
        fp32,
        static,
        Calibration(calibration, pad_id),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )
    variants = [
        Variant("fp32", onnx_runtime(fp32)),
        Variant("int8-weights", onnx_runtime(int8_weights)),
        Variant("int8-dynamic", onnx_runtime(dynamic)),
        Variant("int8-static", onnx_runtime(static)),
    ]
    try:
        importlib.import_module("openvino")
    except ImportError:
        print("OpenVINO is not installed (the bench extra has it): its variants are left out", file=sys.stderr)
        return variants
    return [
        *variants,
        Variant("openvino-fp32", openvino(fp32, "f32")),
        Variant("openvino-bf16", openvino(fp32, "bf16")),
    ]


def fp32_graph(model: ModelVersion, fp32: Path | None, scratch: Path) -> Path:
    """The fp32 graph the variants are built from (see the module's docstring)."""
    if fp32 is not None:
        return fp32 / MODEL_FILE
    graph = onnx.load(str(model.directory / MODEL_FILE))
    if not any(node.op_type == "MatMulInteger" for node in graph.graph.node):
        return model.directory / MODEL_FILE
    onnx.save(dequantized(graph), str(scratch / "fp32.onnx"))
    return scratch / "fp32.onnx"


def scores(runner: ScoreRun, sequences: Sequences, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores of each sequence run alone, and in sorted runs of ROWS."""
    alone = np.array([runner(*pad_batch([sequence], pad_id))[0] for sequence in sequences])
    order = sorted(range(len(sequences)), key=lambda index: len(sequences[index]))
    batched = np.zeros(len(sequences))
    for start in range(0, len(order), ROWS):
        rows = order[start : start + ROWS]
        batched[rows] = runner(*pad_batch([sequences[index] for index in rows], pad_id))
    return alone, batched


def items_per_second(variant: Variant, units: Sequence[Sequences], pad_id: int) -> float:
    def run(unit: Sequences) -> None:
        variant.score(*pad_batch(unit, pad_id))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, units[:THREADS]))  # warm each thread's runner
        started = time.perf_counter()
        list(pool.map(run, units))
    return sum(map(len, units)) / (time.perf_counter() - started)


def workloads(model: ModelVersion, data: Path) -> dict[str, list[list[int]]]:
    comparisons = read_comparisons(data, SPEED_LINES, model.format.layouts)
    exchanges = [exchange for comparison in comparisons for exchange in comparison.exchanges()]
    short = [dataclasses.replace(e, response=" ".join(e.response.split()[:SHORT_WORDS])) for e in exchanges]
    return {
        "short": [encoding.input_ids for encoding in model.format.encode(short)],
        "natural": [encoding.input_ids for encoding in model.format.encode(exchanges)],
    }


def shapes(sequences: dict[str, list[list[int]]]) -> Iterator[tuple[str, list[list[list[int]]]]]:
    for name, items in sequences.items():
        by_length = sorted(items, key=len)
        yield f"{name}, one item per run", [[item] for item in items]
        yield (
            f"{name}, sorted runs of {ROWS}",
            [by_length[start : start + ROWS] for start in range(0, len(items), ROWS)],
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.precisions", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("model", type=model_name, help="a model of the repository, e.g. hh-harmless-minilm")
    parser.add_argument("--model-repository", type=Path, default=Path("models"), help="model repository (models)")
    parser.add_argument("--fp32", type=Path, help="an fp32 export of the same model, to build the variants from")
    parser.add_argument("--data", type=Path, default=DATA, help=f"HH-RLHF JSONL.gz, training lines read ({DATA})")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds; each keeps its best (3)")
    parser.add_argument(
        "--held-out-lines",
        type=line_range,
        help="also each variant's pairwise accuracy on these held-out lines of --data, once a choice is made "
        "(the choice itself rests on training lines)",
    )
    args = parser.parse_args(argv)
    model = load_model(args.model_repository, args.model, 1)
    pad_id = model.manifest.tokens.pad_id
    agreement_comparisons = encode_comparisons(
        model.format, read_comparisons(args.data, AGREEMENT_LINES, model.format.layouts)
    )
    calibration = [
        sequence
        for group in encode_comparisons(
            model.format, read_comparisons(args.data, CALIBRATION_LINES, model.format.layouts)
        )
        for sequence in group
    ]
    with tempfile.TemporaryDirectory(prefix="rmserve-precisions-") as scratch:
        fp32 = fp32_graph(model, args.fp32, Path(scratch))
        variants = build(fp32, Path(scratch), calibration, pad_id)
        flat = [sequence for group in agreement_comparisons for sequence in group]
        measured = {variant.name: scores(variant.score, flat, pad_id) for variant in variants}
        reference = regroup(measured["fp32"][0], agreement_comparisons)
        held_out = {}
        if args.held_out_lines is not None:
            encoded = encode_comparisons(
                model.format, read_comparisons(args.data, args.held_out_lines, model.format.layouts)
            )
            for variant in variants:
                held_out[variant.name] = pairwise_accuracy(score_comparisons(variant.score, encoded, pad_id))
        speed_shapes = list(shapes(workloads(model, args.data)))
        best = {(variant.name, shape): 0.0 for variant in variants for shape, _ in speed_shapes}
        for _ in range(args.rounds):
            for shape, units in speed_shapes:
                for variant in variants:
                    best[variant.name, shape] = max(best[variant.name, shape], items_per_second(variant, units, pad_id))
    print(
        f"`{model.name}` v{model.manifest.version}, {os.cpu_count()} CPUs; items/s are the best of {args.rounds} "
        f"interleaved rounds, {THREADS} threads with a single-threaded run each; agreement with fp32 on "
        f"{len(agreement_comparisons)} training comparisons (lines {AGREEMENT_LINES}); batch dependence: the "
        f"largest |raw score alone - in a sorted run of {ROWS}|.\n"
    )
    header = ["variant", *(shape for shape, _ in speed_shapes), "agreement with fp32", "batch dependence"]
    if held_out:
        header.append(f"held-out accuracy (lines {args.held_out_lines})")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for variant in variants:
        alone, batched = measured[variant.name]
        agreement = ranking_agreement(regroup(alone, agreement_comparisons), reference)
        speeds = [f"{best[variant.name, shape]:.0f}" for shape, _ in speed_shapes]
        cells = [variant.name, *speeds, f"{agreement:.3f}", f"{np.abs(alone - batched).max():.2g}"]
        if held_out:
            cells.append(f"{held_out[variant.name]:.4f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
