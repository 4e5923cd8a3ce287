"""The committed int8 models score real text the same under ONNX Runtime's AVX2, AVX-512 and VNNI kernels.

ONNX Runtime's dynamic int8 (rmserve's before) moved `hh-harmless-minilm`'s scores by up to 0.28 between kernels and
reordered 11 of its 180 dev pairs, so its manifest's accuracy held only on a CPU like the one that measured it. That
member is still dynamic int8: rebuilt with int8 weights it scored 0.59 held-out points below fp32, past the 0.5 the
default ensemble's rebuild waited for (docs/benchmarks.md, "The default ensemble"). Its test says so where it differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rmserve.core.manifest import MODEL_FILE, Manifest
from rmserve.core.repository import model_names, version_dirs
from rmserve.core.tokenizer import pad_batch
from rmserve.engine.version import load_version
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.evaluate import encode_comparisons
from rmserve.training.onnx_files import INT8
from tests.conftest import DEFAULT_REPOSITORY, SHARED_DATA
from tests.training.forced_kernels import ForcedKernels, force_kernels

QUANTIZED = [
    version
    for name in model_names(DEFAULT_REPOSITORY)
    for version in version_dirs(DEFAULT_REPOSITORY, name)
    if Manifest.read(version).quantization
]
TRAINING_LINES = LineRange.parse("1-60")  # training lines: the held-out ones stay untouched


@pytest.mark.slow
@pytest.mark.parametrize("version", QUANTIZED, ids=lambda version: f"{version.parent.name}/{version.name}")
def test_a_committed_int8_model_scores_the_same_under_every_x86_kernel(
    version: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    forced: ForcedKernels = force_kernels(tmp_path_factory.mktemp("shim"))
    served = load_version(version, intra_op_threads=1)
    data = SHARED_DATA / "hh-rlhf-harmless-test.jsonl.gz"
    comparisons = read_comparisons(data, TRAINING_LINES, served.format.layouts)
    sequences = [ids for group in encode_comparisons(served.format, comparisons) for ids in group]
    input_ids, attention_mask = pad_batch(sequences, served.manifest.tokens.pad_id)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    native = forced.run(None, version / MODEL_FILE, inputs, tmp_path).reshape(-1)
    for isa in forced.isas:  # fp32 kernels may differ in the last bits, no more
        scores = forced.run(isa, version / MODEL_FILE, inputs, tmp_path).reshape(-1)
        if Manifest.read(version).quantization != INT8 and not np.allclose(scores, native, atol=1e-5):
            moved = float(np.abs(scores - native).max())
            pytest.xfail(f"ONNX Runtime's dynamic int8: {isa} kernels move scores by up to {moved:.2f}")
        np.testing.assert_allclose(scores, native, atol=1e-5, err_msg=isa)
