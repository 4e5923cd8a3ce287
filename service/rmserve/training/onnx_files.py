"""Writing a version's ONNX files: the int8 graph, and weights past protobuf's 2 GB in a file beside the graph."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rmserve.core.manifest import MODEL_FILE

EXTERNAL_DATA_FILE = "model.onnx.data"
# The manifest's `quantization` of a graph `quantize_int8` wrote.
INT8 = "int8-weights"
# Values of a weight matrix's output channel per scale: 32 reordered one of MiniLM's first 600 training pairs
# against fp32, one scale per channel four (a table's rows need no blocks: one scale per row, one pair too).
BLOCK = 32


def quantize_int8(source: Path, target: Path) -> None:
    """int8 weights, fp32 arithmetic: weight matrices stored as int8 with one scale per `BLOCK` values of an output
    channel, embedding tables with one per row, turned back into fp32 when a session loads the graph.

    Why not int8 arithmetic (ONNX Runtime's dynamic quantization, as before): its scores depended on the CPU
    (AVX2 and AVX-512 kernels add pairs of uint8 x int8 products in saturating int16, VNNI does not; with 7-bit
    weights, fp32 kernels' last-bit differences still flip activations' rounding, layer after layer) and on the
    batch an item rode in (one activation scale per batch). Here every CPU computes what fp32 computes.
    """
    graph = onnx.load(str(source))
    initializers = {tensor.name: tensor for tensor in graph.graph.initializer}
    layouts: dict[str, set[Layout | None]] = {}
    for node in graph.graph.node:
        for name in node.input:
            if name in initializers:
                layouts.setdefault(name, set()).add(_layout(node, name))
    dequantize: list[onnx.NodeProto] = []
    for name, found in layouts.items():
        tensor = initializers[name]
        if len(found) != 1 or None in found or tensor.data_type != TensorProto.FLOAT or len(tensor.dims) != 2:
            continue  # not only a weight matrix or a table, or read along different axes: stays fp32
        (layout,) = found
        assert layout is not None  # skipped above
        graph.graph.initializer.remove(tensor)
        graph.graph.initializer.extend(_int8_blocks(numpy_helper.to_array(tensor), layout, name))
        dequantize += _dequantize(name, transposed=layout.axis == 1)
    nodes = [*dequantize, *graph.graph.node]  # the weights before everything that reads them
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    onnx.save_model(graph, str(target))


class Layout(NamedTuple):
    """How a node reads a 2-D initializer: the axis that indexes its channels (rows of a table), and how many
    values of a channel share a scale (None: all of them)."""

    axis: int
    block: int | None


def _layout(node: onnx.NodeProto, name: str) -> Layout | None:
    """How `node` reads initializer `name` if it is a weight matrix or a table; else None."""
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    position = list(node.input).index(name)
    if node.op_type == "MatMul" and position == 1:
        return Layout(1, BLOCK)  # [in, out]
    if node.op_type == "Gemm" and position == 1:
        return Layout(0 if attributes.get("transB", 0) else 1, BLOCK)
    if node.op_type == "Gather" and position == 0 and attributes.get("axis", 0) == 0:
        return Layout(0, None)  # [vocabulary, width]: a token reads one row
    return None


def _int8_blocks(weights: np.ndarray, layout: Layout, name: str) -> list[onnx.TensorProto]:
    """`weights` [rows, columns] as int8 [channels, blocks, block] in [-127, 127], a scale [channels, blocks, 1]
    (symmetric) and the [channels, length] shape to put them back in."""
    channels = weights if layout.axis == 0 else weights.T  # [channels, length]
    length = channels.shape[1]
    block = layout.block if layout.block and length % layout.block == 0 else length  # else one per channel
    blocks = channels.reshape(channels.shape[0], length // block, block)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / 127.0
    scale[scale == 0.0] = 1.0  # an all-zero block stays zero
    return [
        numpy_helper.from_array(np.rint(blocks / scale).astype(np.int8), f"{name}_int8"),
        numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
        numpy_helper.from_array(np.array(channels.shape, dtype=np.int64), f"{name}_shape"),
    ]


def _dequantize(name: str, transposed: bool) -> list[onnx.NodeProto]:
    """Nodes that compute fp32 initializer `name` from its int8 blocks and scales.

    Cast and Mul, not DequantizeLinear: ONNX Runtime fuses DequantizeLinear -> MatMul into an int8 kernel, while
    these only read initializers, so a session folds them into fp32 weights when it loads the graph.
    """
    channels = f"{name}_channels" if transposed else name
    nodes = [
        helper.make_node("Cast", [f"{name}_int8"], [f"{name}_int8_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{name}_int8_float", f"{name}_scale"], [f"{name}_blocks"]),
        helper.make_node("Reshape", [f"{name}_blocks", f"{name}_shape"], [channels]),
    ]
    if transposed:
        nodes.append(helper.make_node("Transpose", [channels], [name], perm=[1, 0]))
    return nodes


def save_graph(graph: onnx.ModelProto, version_dir: Path, external_data_above: int) -> None:
    """model.onnx, its weights in model.onnx.data when they would pass `external_data_above` bytes (protobuf: 2 GB)."""
    weights = sum(tensor.ByteSize() for tensor in graph.graph.initializer)
    if weights <= external_data_above:
        onnx.save_model(graph, str(version_dir / MODEL_FILE))
        return
    onnx.save_model(
        graph,
        str(version_dir / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA_FILE,
        size_threshold=1024,
    )
