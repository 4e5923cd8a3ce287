"""An int8 graph scores the same on every x86 CPU and in every batch, near its fp32 graph.

ONNX Runtime's uint8 x int8 kernels without VNNI (AVX2, AVX-512 before Cascade Lake) add each pair of products in
saturating int16, and its dynamic quantization scales a batch's activations together: rmserve's int8 did both
before it kept fp32 arithmetic. `forced_kernels` runs the kernels of older CPUs on this one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rmserve.core.tokenizer import pad_batch
from rmserve.engine.session import OnnxScorer
from rmserve.training.checkpoint import load_run
from rmserve.training.data import read_comparisons
from rmserve.training.evaluate import encode_comparisons
from rmserve.training.export import export_onnx
from rmserve.training.onnx_files import quantize_int8
from tests.training.forced_kernels import ForcedKernels, force_kernels

# Operators whose results depend on the CPU's int8 kernels or on the batch (a dynamic activation scale).
INT8_ARITHMETIC = {
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "MatMulNBits",
    "QLinearMatMul",
    "QuantizeLinear",
}
rng = np.random.default_rng(0)
# Weights near each column's largest and positive activations near the batch's largest: as int8 x uint8, two
# neighbouring products pass 32,767 together, where AVX2 and AVX-512 without VNNI saturate (MiniLM's outliers do).
LARGE_WEIGHTS = rng.uniform(0.8, 1.0, size=(64, 16)).astype(np.float32)
LARGE_ACTIVATIONS = rng.uniform(0.8, 1.0, size=(8, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def int8_model(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the tiny trained reward model's fp32 graph, its int8 graph)."""
    directory = tmp_path_factory.mktemp("int8")
    export_onnx(load_run(run).network, directory / "fp32.onnx")
    quantize_int8(directory / "fp32.onnx", directory / "int8.onnx")
    return directory / "fp32.onnx", directory / "int8.onnx"


@pytest.fixture(scope="module")
def int8_matmul(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph of one fp32 matrix multiply by LARGE_WEIGHTS, quantized: x [batch, 64] -> y [batch, 16]."""
    directory = tmp_path_factory.mktemp("matmul")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        [numpy_helper.from_array(LARGE_WEIGHTS, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(directory / "fp32.onnx"))
    quantize_int8(directory / "fp32.onnx", directory / "int8.onnx")
    return directory / "int8.onnx"


@pytest.fixture(scope="module")
def forced(tmp_path_factory: pytest.TempPathFactory) -> ForcedKernels:
    return force_kernels(tmp_path_factory.mktemp("shim"))


def token_batches(run: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input_ids, attention_mask) of the run's held-out responses, laid out as served, in batches of 1, 3 and 16."""
    trained = load_run(run)
    input_format = trained.input_format()
    comparisons = read_comparisons(run.parent / "held_out.jsonl", layouts=input_format.layouts)
    sequences = [ids for group in encode_comparisons(input_format, comparisons) for ids in group]
    return [pad_batch(sequences[start:end], 0) for start, end in [(0, 1), (1, 4), (4, 20)]]


def test_the_int8_graph_stores_int8_and_runs_no_int8_arithmetic(int8_model: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = int8_model

    def matrices(graph: Path, kind: int) -> int:
        return sum(
            len(tensor.dims) >= 2 and tensor.data_type == kind for tensor in onnx.load(str(graph)).graph.initializer
        )

    # Every fp32 weight matrix and table is stored int8 ([channels, blocks, block]), none left fp32.
    assert matrices(int8, TensorProto.INT8) == matrices(fp32, TensorProto.FLOAT) > 0
    stored = onnx.load(str(int8)).graph.initializer
    assert not any(len(tensor.dims) == 2 and tensor.data_type == TensorProto.FLOAT for tensor in stored)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as OnnxScorer loads it
    options.optimized_model_filepath = str(tmp_path / "as_loaded.onnx")
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    loaded = onnx.load(str(tmp_path / "as_loaded.onnx"))
    assert {node.op_type for node in loaded.graph.node} & INT8_ARITHMETIC == set()
    assert all(tensor.data_type != TensorProto.INT8 for tensor in loaded.graph.initializer)  # fp32 weights in memory


def test_int8_scores_stay_within_weight_rounding_of_fp32(run: Path, int8_model: tuple[Path, Path]) -> None:
    fp32, int8 = (OnnxScorer(path, intra_op_threads=1) for path in int8_model)
    for input_ids, attention_mask in token_batches(run):
        expected = fp32(input_ids, attention_mask)
        np.testing.assert_allclose(int8(input_ids, attention_mask), expected, atol=0.02 * np.abs(expected).max())


def test_an_items_int8_score_does_not_depend_on_its_batch(int8_matmul: Path) -> None:
    session = ort.InferenceSession(str(int8_matmul), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        (y,) = session.run(None, {"x": x})
        assert isinstance(y, np.ndarray)
        return y

    small = LARGE_ACTIVATIONS[:1] / 100  # alone, or beside rows a hundred times larger
    np.testing.assert_allclose(run(np.concatenate([small, LARGE_ACTIVATIONS]))[:1], run(small), rtol=1e-6)


def test_int8_scores_are_the_same_under_every_x86_kernel(
    forced: ForcedKernels, int8_matmul: Path, tmp_path: Path
) -> None:
    inputs = {"x": LARGE_ACTIVATIONS}
    native = forced.run(None, int8_matmul, inputs, tmp_path)
    np.testing.assert_allclose(native, LARGE_ACTIVATIONS @ LARGE_WEIGHTS, rtol=0.02)
    for isa in forced.isas:  # fp32 kernels may differ in the last bit, no more
        np.testing.assert_allclose(forced.run(isa, int8_matmul, inputs, tmp_path), native, rtol=1e-6, err_msg=isa)


def test_the_forced_kernels_saturate_full_range_int8_arithmetic(forced: ForcedKernels, tmp_path: Path) -> None:
    """The shim works: uint8 activations near 255 against int8 weights near 127, whose pairs pass int16, give
    AVX2 and AVX-512 answers that VNNI does not, from one file."""
    weights = numpy_helper.from_array(rng.integers(100, 128, size=(64, 16)).astype(np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 16])],
        [weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "matmul.onnx"))
    activations = rng.integers(200, 256, size=(8, 64)).astype(np.uint8)
    exact = activations.astype(np.int64) @ numpy_helper.to_array(weights).astype(np.int64)
    assert "avx2" in forced.isas  # every x86-64 CPU that can run the tests has it
    for isa in forced.isas:
        output = forced.run(isa, tmp_path / "matmul.onnx", {"a": activations}, tmp_path)
        assert np.array_equal(output, exact) == (isa == "avx512_vnni"), isa
