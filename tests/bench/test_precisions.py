"""bench/precisions.py: the fp32 graph it rebuilds from a dynamic-int8 one scores as the int8 weights do in fp32,
and every ONNX Runtime variant scores the same items (the benchmarks page's precision table rests on both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from bench.precisions import build, dequantized, onnx_runtime

WIDTH, CHANNELS = 32, 8


def matmul_graph(path: Path, weights: np.ndarray) -> None:
    """y = relu(x @ weights): one product for dynamic quantization to rewrite."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CHANNELS])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_dynamic_int8_graph_comes_back_as_fp32_products_of_its_rounded_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(WIDTH, CHANNELS)).astype(np.float32)
    matmul_graph(tmp_path / "fp32.onnx", weights)
    quantize_dynamic(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", per_channel=True, weight_type=QuantType.QInt8)
    restored = dequantized(onnx.load(str(tmp_path / "int8.onnx")))
    assert {node.op_type for node in restored.graph.node} == {"MatMul", "Relu"}  # nothing of the int8 path is left
    onnx.save(restored, str(tmp_path / "restored.onnx"))
    (stored,) = [numpy_helper.to_array(t) for t in restored.graph.initializer]
    scale = np.abs(weights).max(axis=0) / 127  # per output channel, symmetric
    assert np.allclose(stored, np.round(weights / scale) * scale, atol=1e-6)  # the int8 weights, as stored
    x = rng.normal(size=(5, WIDTH)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "restored.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    assert np.allclose(np.asarray(y), np.maximum(x @ stored, 0), atol=1e-5)  # fp32 arithmetic: no activation rounding


def test_every_onnx_runtime_variant_scores_the_same_items_close_to_fp32(tiny_repository: Path, tmp_path: Path) -> None:
    from rmserve.core.tokenizer import pad_batch

    fp32 = tiny_repository / "tiny" / "1" / "model.onnx"
    sequences = [[2, 5, 9, 14, 3], [2, 7, 3], [2, 11, 12, 13, 4, 6, 3]]
    variants = [variant for variant in build(fp32, tmp_path, sequences, 0) if not variant.name.startswith("openvino")]
    assert [variant.name for variant in variants] == ["fp32", "int8-weights", "int8-dynamic", "int8-static"]
    batch = pad_batch(sequences, 0)
    expected = onnx_runtime(fp32)(*batch)
    for variant in variants:
        assert np.allclose(variant.score(*batch), expected, atol=0.05), variant.name
