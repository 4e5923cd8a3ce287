"""`manifest.json`: what a model version is, how to feed it, and how good it was."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, field_validator

from rmserve.core.embedding import EMBEDDING_FILE, EMBEDDING_OUTPUT
from rmserve.core.tokenizer import SpecialTokens

# A model name is one plain path component: no `..`, no `/`, no dot-dirs, no `lost+found`.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


def _is_none(value: object) -> bool:
    return value is None


_T = TypeVar("_T")
# A field only some publishers measure: absent from the file rather than written as null.
MaybeAbsent = Annotated[_T | None, Field(exclude_if=_is_none)]


class Normalization(_Frozen):
    """Mean and std of raw scores on training responses; served scores are (raw - mean) / std.

    Both finite: a NaN here would be served as NaN, which is not JSON and poisons a trainer. The std is a
    normal number: a subnormal one (5e-324) turns every raw score into an infinite served score.
    """

    mean: float = Field(default=0.0, allow_inf_nan=False)
    std: float = Field(default=1.0, allow_inf_nan=False)

    @field_validator("std")
    @classmethod
    def _normal_positive(cls, std: float) -> float:
        if std < sys.float_info.min:
            raise ValueError(f"must be a normal positive number (at least {sys.float_info.min:.4g}), got {std!r}")
        return std


class Evaluation(_Frozen):
    """Held-out pairwise accuracy, next to the trivial baselines on the same pairs."""

    pairwise_accuracy: float | None = None
    n: int = 0
    # The x86 instruction set whose kernels measured it (rmserve.training.cpu_isa): amx ... avx2, or the machine.
    isa: MaybeAbsent[str] = None
    data: str | None = None
    baselines: dict[str, float] = Field(default_factory=dict)


class Quantiles(_Frozen):
    """Quantiles of one quantity over the training responses (the grid `QUANTILES` names)."""

    min: float = Field(allow_inf_nan=False)
    p01: float = Field(allow_inf_nan=False)
    p05: float = Field(allow_inf_nan=False)
    p25: float = Field(allow_inf_nan=False)
    p50: float = Field(allow_inf_nan=False)
    p75: float = Field(allow_inf_nan=False)
    p95: float = Field(allow_inf_nan=False)
    p99: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)

    @classmethod
    def of(cls, values: Sequence[float]) -> Quantiles:
        points = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
        return cls(**{name: float(point) for name, point in zip(cls.model_fields, points, strict=True)})

    def grid(self) -> list[tuple[float, float]]:
        """(probability, value) pairs: P(training value <= value) = probability."""
        return [
            (probability, getattr(self, name))
            for probability, name in zip(QUANTILES, type(self).model_fields, strict=True)
        ]


# The probabilities of Quantiles' fields, in order.
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


class EmbeddingStats(_Frozen):
    """Where the version's pooled embedding is and how far training responses lay from their own mean.

    The Gaussian itself (`rmserve.core.embedding`) is the file `file` beside model.onnx; `distance`
    holds its Mahalanobis distances' quantiles over the training responses, whose p99 is the cut of
    the `out_of_distribution` flag.
    """

    output: str = EMBEDDING_OUTPUT
    file: str = EMBEDDING_FILE
    dim: PositiveInt
    rank: PositiveInt
    distance: Quantiles


class TrainingStats(_Frozen):
    """What the training responses looked like to the served graph: the cuts of the per-item flags.

    Optional: a version exported before these existed has none, and then serves no flag that
    needs them (never a guessed threshold).
    """

    responses: PositiveInt
    raw_score: Quantiles
    response_tokens: Quantiles
    data: str | None = None
    embedding: EmbeddingStats | None = None  # absent: the graph has no embedding output, no OOD flag


class QuantizedFrom(_Frozen):
    """The served fp32 version an int8 copy was made from (`rmserve quantize`)."""

    name: str
    version: PositiveInt
    sha256: str = Field(pattern=SHA256_PATTERN)


class Parity(_Frozen):
    """How closely the served graph reproduces the model it came from, measured when it was published.

    `max_abs_diff` and `ranking_agreement`: the fp32 graph against its reference (the trained torch model,
    or transformers for an import) on `data`; the int8 fields: the served int8 graph against that fp32 graph.
    """

    data: MaybeAbsent[str] = None
    items: MaybeAbsent[int] = None
    reference: MaybeAbsent[str] = None
    max_abs_diff: MaybeAbsent[float] = None
    ranking_agreement: MaybeAbsent[float] = None
    embedding_max_abs_diff: MaybeAbsent[float] = None
    tokenization_matches_transformers: MaybeAbsent[float] = None
    quantized_from: MaybeAbsent[QuantizedFrom] = None
    int8_agreement_with_fp32: MaybeAbsent[float] = None
    int8_max_abs_diff: MaybeAbsent[float] = None
    int8_isa: MaybeAbsent[str] = None  # as Evaluation.isa, for the int8 fields


class TrainingRecord(_Frozen):
    """The run that made a version: its data and dev split by name; the run's own results (config, dev accuracy
    per epoch, seconds) ride along as it wrote them."""

    data: str
    lines: MaybeAbsent[str] = None
    seed: MaybeAbsent[int] = None
    dev_seed: MaybeAbsent[int] = None  # absent from runs before --dev-seed: the split used `seed`
    dev_fraction: MaybeAbsent[float] = None

    @property
    def split_seed(self) -> int | None:
        """The seed the dev split was drawn with."""
        return self.seed if self.dev_seed is None else self.dev_seed


class ImportSource(_Frozen):
    """What `rmserve import` read: the checkpoint, and the calibration responses normalization came from."""

    checkpoint: str
    calibration: str
    calibration_comparisons: int
    calibration_pairwise_accuracy: float
    normalization: str
    layout: str | None = None  # how input_format was chosen: `--layout text`, the checkpoint's chat template, a guess


class Serving(_Frozen):
    """How the version is best served, measured on the CPUs it was benchmarked on; each setting here gives way to
    the operator's own (`RMSERVE_*`), as Triton's model configuration does to its command line.

    `max_batch_tokens`: the padded-token budget of one inference run. A model whose cost per row grows with the
    rows of a run (MiniLM's activations outgrow a core's cache past about 512 tokens) serves more items per
    second with a smaller budget than the server's default; the docs' benchmarks page has the measurement.
    """

    max_batch_tokens: MaybeAbsent[PositiveInt] = None


class Manifest(_Frozen):
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: PositiveInt
    created: str
    sha256: str = Field(pattern=SHA256_PATTERN)
    architecture: dict[str, Any]
    max_length: PositiveInt
    truncation: Literal["prompt_left"] = "prompt_left"
    input_format: dict[str, Any] = Field(default_factory=lambda: {"style": "transcript"})  # rmserve.core.formats
    tokens: SpecialTokens
    normalization: Normalization = Normalization()
    quantization: str | None = None
    evaluation: Evaluation = Evaluation()
    parity: Parity | None = None
    training: TrainingRecord | None = None
    source: ImportSource | None = None
    # sha256 of every file the version serves from (model.onnx, its external data, tokenizer.json), by
    # relative path; a manifest written before it existed covers model.onnx only (`sha256`).
    files: dict[str, Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]] = Field(default_factory=dict)
    training_stats: TrainingStats | None = None  # score and length quantiles of the training responses
    serving: MaybeAbsent[Serving] = None

    @property
    def batch_tokens(self) -> int | None:
        """The run budget this version was measured best with, if any (`serving.max_batch_tokens`)."""
        return None if self.serving is None else self.serving.max_batch_tokens

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        return cls.model_validate(json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8")))

    def write(self, version_dir: Path) -> None:
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
        (version_dir / MANIFEST_FILE).write_text(text, encoding="utf-8")


def served_files(version_dir: Path) -> list[str]:
    """Relative paths of every file in a version directory but the manifest."""
    return sorted(
        path.relative_to(version_dir).as_posix()
        for path in version_dir.rglob("*")
        if path.is_file() and path.name != MANIFEST_FILE
    )


def file_digests(version_dir: Path) -> dict[str, str]:
    """sha256 of every file in a version directory but the manifest, by relative path."""
    return {relative: sha256_of(version_dir / relative) for relative in served_files(version_dir)}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
