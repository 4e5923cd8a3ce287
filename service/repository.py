"""The model repository: `<repository>/<name>/<version>/{model.onnx,tokenizer.json,manifest.json}`.

A version is served only if its manifest parses, its sha256 matches model.onnx, and its
graph has the inputs and output the manifest promises. A version that fails is logged
and skipped; the highest good version (or the pinned one) is served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service.formatting import InputFormat
from service.manifest import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, Manifest, sha256_of
from service.scorer import OnnxScorer, pad_batch
from service.tokenizer import PairEncoder

log = logging.getLogger(__name__)


class InvalidModel(Exception):
    """A version directory that must not be served."""


@dataclass(frozen=True)
class ModelVersion:
    """One loaded, verified model version: how to format, tokenize and score its inputs."""

    manifest: Manifest
    directory: Path
    format: InputFormat
    encoder: PairEncoder
    scorer: OnnxScorer

    @property
    def name(self) -> str:
        return self.manifest.name

    def normalize(self, raw_scores: np.ndarray) -> np.ndarray:
        normalization = self.manifest.normalization
        return (raw_scores - normalization.mean) / normalization.std


def load_version(directory: Path, intra_op_threads: int) -> ModelVersion:
    """Verify and load one version directory, or raise InvalidModel saying why."""
    try:
        manifest = Manifest.read(directory)
    except FileNotFoundError:
        raise InvalidModel(f"{directory}: no {MANIFEST_FILE}") from None
    except (ValueError, ValidationError) as error:
        raise InvalidModel(f"{directory}/{MANIFEST_FILE} is invalid: {error}") from None
    if directory.name != str(manifest.version) or directory.parent.name != manifest.name:
        raise InvalidModel(
            f"{directory}: manifest says {manifest.name}/{manifest.version}, directory is "
            f"{directory.parent.name}/{directory.name}"
        )
    for required in (MODEL_FILE, TOKENIZER_FILE):
        if not (directory / required).is_file():
            raise InvalidModel(f"{directory}: no {required}")
    actual = sha256_of(directory / MODEL_FILE)
    if actual != manifest.sha256:
        raise InvalidModel(f"{directory}/{MODEL_FILE}: sha256 {actual} does not match manifest {manifest.sha256}")
    try:
        input_format = manifest.format
        encoder = PairEncoder.from_file(directory / TOKENIZER_FILE, manifest.max_length, manifest.tokens)
        scorer = OnnxScorer(directory / MODEL_FILE, intra_op_threads)
    except Exception as error:  # onnxruntime and tokenizers raise their own types; all mean "unusable"
        raise InvalidModel(f"{directory}: cannot load: {error}") from None
    model = ModelVersion(manifest, directory, input_format, encoder, scorer)
    _check_graph(model)
    return model


def _check_graph(model: ModelVersion) -> None:
    """Run one tiny batch (this also warms the session): one finite score per row."""
    (encoding,) = model.encoder.encode(["warm-up"], ["warm-up"])
    input_ids, attention_mask = pad_batch([encoding.input_ids] * 2, model.manifest.tokens.pad_id)
    try:
        raw = model.scorer(input_ids, attention_mask)
    except Exception as error:
        raise InvalidModel(f"{model.directory}/{MODEL_FILE}: graph fails on a test batch: {error}") from None
    if not np.all(np.isfinite(raw)):
        raise InvalidModel(f"{model.directory}/{MODEL_FILE}: non-finite scores on a test batch: {raw}")


def version_dirs(repository: Path, name: str) -> list[Path]:
    """Numeric version directories of one model, highest first."""
    model_dir = repository / name
    versions = [path for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(versions, key=lambda path: int(path.name), reverse=True)


def load_model(repository: Path, name: str, intra_op_threads: int, pinned: int | None = None) -> ModelVersion:
    """The pinned version, or the highest version that verifies; log every version skipped."""
    candidates = version_dirs(repository, name)
    if pinned is not None:
        candidates = [path for path in candidates if int(path.name) == pinned]
    for directory in candidates:
        try:
            model = load_version(directory, intra_op_threads)
        except InvalidModel as error:
            log.error("refusing model version: %s", error)
            continue
        log.info("loaded model %s version %s (sha256 %s)", name, model.manifest.version, model.manifest.sha256[:12])
        return model
    wanted = f"version {pinned}" if pinned is not None else "any version"
    raise InvalidModel(f"{repository / name}: no valid {wanted}")


def model_names(repository: Path) -> list[str]:
    if not repository.is_dir():
        raise InvalidModel(f"model repository {repository} does not exist")
    return sorted(path.name for path in repository.iterdir() if path.is_dir() and not path.name.startswith("."))
