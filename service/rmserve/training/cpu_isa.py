"""The instruction set ONNX Runtime's int8 kernels use on this CPU, recorded beside every accuracy a manifest holds.

ONNX Runtime (MLAS) picks its uint8 x int8 matrix kernel by the CPU: AMX, AVX512-VNNI and AVX-VNNI add the
products in int32; AVX-512 without VNNI and AVX2 first add each pair of them in saturating int16
(VPMADDUBSW), so a graph whose weights let a pair overflow scores differently on them; its fp32 kernels differ
between AVX-512 and AVX2 in the last bits. rmserve's int8 keeps fp32 arithmetic (onnx_files.quantize_int8); the
name beside each accuracy tells a number measured on another kind of CPU, or with another runtime, apart.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# Linux's /proc/cpuinfo flags each kernel needs, in the order MLAS prefers them (the first match wins).
INT8_KERNELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("amx", frozenset({"amx_tile", "amx_int8"})),
    ("avx512_vnni", frozenset({"avx512_vnni", "avx512bw", "avx512dq", "avx512vl"})),
    ("avx512_core", frozenset({"avx512bw", "avx512dq", "avx512vl"})),
    ("avx_vnni", frozenset({"avx_vnni", "avx2"})),
    ("avx2", frozenset({"avx2", "fma"})),
)


def int8_isa(cpuinfo: Path = CPUINFO) -> str:
    """`amx`, `avx512_vnni`, `avx512_core`, `avx_vnni`, `avx2` or `sse` on x86 Linux; elsewhere the machine's name."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64") or not cpuinfo.is_file():
        return machine or "unknown"
    return isa_of(cpu_flags(cpuinfo))


def isa_of(flags: frozenset[str]) -> str:
    """The best int8 kernel a CPU with these flags gets."""
    return next((name for name, needed in INT8_KERNELS if needed <= flags), "sse")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's flags in a /proc/cpuinfo file (every core of one machine has the same)."""
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()
