"""Run ONNX Runtime with the kernels of an older x86 CPU: `cpuid_mask.c`, preloaded, hides instruction sets from
CPUID (Linux's CPUID faulting), so one machine runs the AVX2, AVX-512 and VNNI kernels in turn.

ONNX Runtime reads CPUID once, when it loads, so each run is a child process with the shim in place first.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rmserve.training.cpu_isa import INT8_KERNELS, cpu_flags

SHIM = Path(__file__).with_name("cpuid_mask.c")
FORCEABLE = ("avx2", "avx512_core", "avx512_vnni")  # what the shim can make a newer CPU look like
# graph, outputs.npy, then name=inputs.npy per input: the graph's first output, loaded as OnnxScorer loads a model.
SCORE = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
inputs = {name: np.load(path) for name, path in (argument.split("=", 1) for argument in sys.argv[3:])}
np.save(sys.argv[2], session.run(None, inputs)[0])
"""


@dataclass(frozen=True)
class ForcedKernels:
    """The compiled shim and the instruction sets it can force on this CPU, oldest first."""

    library: Path
    isas: tuple[str, ...]

    def run(self, isa: str | None, graph: Path, inputs: dict[str, np.ndarray], scratch: Path) -> np.ndarray:
        """The graph's first output with ONNX Runtime's kernels for `isa` (None: this CPU's own)."""
        outputs = scratch / f"{graph.stem}.{isa or 'native'}.npy"
        command = [sys.executable, "-c", SCORE, str(graph), str(outputs)]
        for name, values in inputs.items():
            np.save(scratch / f"{name}.npy", values)
            command.append(f"{name}={scratch / f'{name}.npy'}")
        subprocess.run(command, env=_env(self.library, isa), check=True)
        return np.load(outputs)


def _env(library: Path, isa: str | None) -> dict[str, str]:
    return os.environ | ({} if isa is None else {"LD_PRELOAD": str(library), "CPUID_MASK_ISA": isa})


def force_kernels(scratch: Path) -> ForcedKernels:
    """Compile the shim into `scratch`; skips where forcing cannot work (not x86-64 Linux, no CPUID faulting)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("forcing ONNX Runtime's x86 kernels needs Linux on x86-64")
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("forcing ONNX Runtime's x86 kernels needs a C compiler, cc (.ci/install-tools.sh installs gcc)")
    library = scratch / "cpuid_mask.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(SHIM)], check=True)
    command = [sys.executable, "-c", "import numpy"]
    probe = subprocess.run(command, env=_env(library, "avx2"), capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"this kernel or VM has no CPUID faulting (arch_prctl ARCH_SET_CPUID): {probe.stderr[-200:]!r}")
    flags = cpu_flags()
    return ForcedKernels(library, tuple(isa for isa in FORCEABLE if dict(INT8_KERNELS)[isa] <= flags))
