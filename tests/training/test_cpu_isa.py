"""The CPU's int8 instruction set, named as ONNX Runtime's kernel choice would name it, from /proc/cpuinfo."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from rmserve.training.cpu_isa import int8_isa, isa_of

HASWELL = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 bmi2"
SKYLAKE_X = f"{HASWELL} avx512f avx512dq avx512cd avx512bw avx512vl"
CASCADE_LAKE = f"{SKYLAKE_X} avx512_vnni"
SAPPHIRE_RAPIDS = f"{CASCADE_LAKE} avx_vnni amx_bf16 amx_tile amx_int8"
ALDER_LAKE = f"{HASWELL} avx_vnni"


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        (SAPPHIRE_RAPIDS, "amx"),
        (CASCADE_LAKE, "avx512_vnni"),
        (SKYLAKE_X, "avx512_core"),
        (ALDER_LAKE, "avx_vnni"),
        (HASWELL, "avx2"),
        ("fpu sse sse2 sse4_1", "sse"),
    ],
)
def test_each_cpu_generation_names_the_int8_kernel_it_gets(flags: str, isa: str) -> None:
    assert isa_of(frozenset(flags.split())) == isa


def test_the_isa_is_read_from_the_first_processors_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Xeon\nflags\t\t: {CASCADE_LAKE}\n\nprocessor\t: 1\n")
    assert int8_isa(cpuinfo) == "avx512_vnni"


def test_off_x86_the_machine_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert int8_isa(tmp_path / "absent") == "aarch64"
