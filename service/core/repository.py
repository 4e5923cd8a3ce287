"""The model repository: `<repository>/<name>/<version>/{model.onnx,tokenizer.json,manifest.json}`.

What serving and training both need before a graph runs: finding versions and verifying
one (its manifest parses, names match the directory, sha256 matches model.onnx, the
tokenizer loads). Running the graph is the engine's part (`rmserve.engine.version`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from rmserve.core.formats import InputFormat
from rmserve.core.manifest import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, Manifest, sha256_of
from rmserve.core.tokenizer import PairEncoder


class InvalidModel(Exception):
    """A version directory that must not be served."""


@dataclass(frozen=True)
class VerifiedVersion:
    """A version directory whose manifest, files and tokenizer check out."""

    manifest: Manifest
    directory: Path
    format: InputFormat
    encoder: PairEncoder

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE


def verify_version(directory: Path) -> VerifiedVersion:
    """Check one version directory, or raise InvalidModel saying why."""
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
    except Exception as error:  # tokenizers raises its own types; all mean "unusable"
        raise InvalidModel(f"{directory}: cannot load: {error}") from None
    return VerifiedVersion(manifest, directory, input_format, encoder)


def version_dirs(repository: Path, name: str) -> list[Path]:
    """Numeric version directories of one model, highest first."""
    model_dir = repository / name
    versions = [path for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(versions, key=lambda path: int(path.name), reverse=True)


def model_names(repository: Path) -> list[str]:
    if not repository.is_dir():
        raise InvalidModel(f"model repository {repository} does not exist")
    return sorted(path.name for path in repository.iterdir() if path.is_dir() and not path.name.startswith("."))
