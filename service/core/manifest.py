"""`manifest.json`: what a model version is, how to feed it, and how good it was (SPEC §2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from rmserve.core.formats import InputFormat
from rmserve.core.tokenizer import SpecialTokens

# A model name is one plain path component: no `..`, no `/`, no dot-dirs, no `lost+found`.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class Normalization(_Frozen):
    """Mean and std of raw scores on training responses; served scores are (raw - mean) / std.

    Both finite: a NaN here would be served as NaN, which is not JSON and poisons a trainer.
    """

    mean: float = Field(0.0, allow_inf_nan=False)
    std: float = Field(1.0, gt=0.0, allow_inf_nan=False)


class Evaluation(_Frozen):
    """Held-out pairwise accuracy, next to the trivial baselines on the same pairs."""

    pairwise_accuracy: float | None = None
    n: int = 0
    data: str | None = None
    baselines: dict[str, float] = Field(default_factory=dict)


class Manifest(_Frozen):
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: PositiveInt
    created: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # sha256 of every other file the version serves from (tokenizer.json, external weights), by name;
    # empty in manifests written before it existed, whose other files are then not verified.
    files: dict[str, str] = Field(default_factory=dict)
    architecture: dict[str, Any]
    max_length: PositiveInt
    truncation: Literal["prompt_left"] = "prompt_left"
    input_format: dict[str, Any] = Field(default_factory=lambda: InputFormat().to_manifest())
    tokens: SpecialTokens
    normalization: Normalization = Normalization()
    quantization: str | None = None
    evaluation: Evaluation = Evaluation()
    parity: dict[str, Any] | None = None
    training: dict[str, Any] | None = None  # data, split, seed and dev results of the run that made it

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        return cls.model_validate(json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8")))

    def write(self, version_dir: Path) -> None:
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
        (version_dir / MANIFEST_FILE).write_text(text, encoding="utf-8")

    @property
    def format(self) -> InputFormat:
        return InputFormat.from_manifest(self.input_format)


def file_digests(version_dir: Path) -> dict[str, str]:
    """sha256 of every file of a version besides model.onnx and the manifest (for `Manifest.files`)."""
    return {
        path.name: sha256_of(path)
        for path in sorted(version_dir.iterdir())
        if path.is_file() and path.name not in (MODEL_FILE, MANIFEST_FILE)
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
