"""The model repository: `<repository>/<name>/<version>/{model.onnx,tokenizer.json,manifest.json}`.

What serving and training both need before a graph runs: finding versions and verifying
one (its manifest parses, names match the directory, sha256 matches model.onnx, the
tokenizer loads). Running the graph is the engine's part (`rmserve.engine.version`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from rmserve.core.formats import InputFormat
from rmserve.core.manifest import MANIFEST_FILE, MODEL_FILE, MODEL_NAME_PATTERN, TOKENIZER_FILE, Manifest, sha256_of
from rmserve.core.tokenizer import PairEncoder, SpecialTokens


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
    _check_files(directory, manifest)
    try:
        input_format = manifest.format
        encoder = PairEncoder.from_file(directory / TOKENIZER_FILE, manifest.max_length, manifest.tokens)
    except Exception as error:  # tokenizers raises its own types; all mean "unusable"
        raise InvalidModel(f"{directory}: cannot load: {error}") from None
    _check_token_ids(directory, manifest.tokens, encoder.tokenizer.get_vocab_size(with_added_tokens=True))
    return VerifiedVersion(manifest, directory, input_format, encoder)


def _check_files(directory: Path, manifest: Manifest) -> None:
    """Every file the manifest lists matches its sha256, and no file goes unlisted (once any is listed)."""
    if not manifest.files:
        return  # a manifest from before `files`: model.onnx alone is verified
    for name, expected in manifest.files.items():
        path = directory / name
        if path.name != name or name in (MODEL_FILE, MANIFEST_FILE) or not path.is_file():
            raise InvalidModel(
                f"{directory}/{MANIFEST_FILE}: files lists {name!r}, which is not a file of this version"
            )
        actual = sha256_of(path)
        if actual != expected:
            raise InvalidModel(f"{directory}/{name}: sha256 {actual} does not match manifest {expected}")
    unlisted = sorted(
        path.name
        for path in directory.iterdir()
        if path.is_file() and path.name not in {MODEL_FILE, MANIFEST_FILE, *manifest.files}
    )
    if unlisted:
        raise InvalidModel(f"{directory}: {', '.join(unlisted)} not covered by the manifest's sha256 list (files)")


def _check_token_ids(directory: Path, special: SpecialTokens, vocab_size: int) -> None:
    """pad/bos/sep/eos must be ids the tokenizer (and so the embedding) has."""
    for role in ("pad_id", "bos_id", "sep_id", "eos_id"):
        token_id = getattr(special, role)
        if token_id is not None and not 0 <= token_id < vocab_size:
            raise InvalidModel(
                f"{directory}/{MANIFEST_FILE}: tokens.{role} = {token_id} is outside the vocabulary "
                f"(0..{vocab_size - 1})"
            )


def is_model_name(name: str) -> bool:
    """A plain directory name inside the repository (never `..`, a path, a dot-dir or `lost+found`)."""
    return re.fullmatch(MODEL_NAME_PATTERN, name) is not None


def version_dirs(repository: Path, name: str) -> list[Path]:
    """Numeric version directories of one model, highest first."""
    if not is_model_name(name):
        raise InvalidModel(f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no paths)")
    model_dir = repository / name
    if not model_dir.is_dir():
        raise InvalidModel(f"{model_dir}: no such model directory")
    versions = [path for path in model_dir.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(versions, key=lambda path: int(path.name), reverse=True)


def repository_entries(repository: Path) -> tuple[list[str], list[str]]:
    """(model names, directories that are not models: dot-dirs, `lost+found`, other odd names)."""
    if not repository.is_dir():
        raise InvalidModel(f"model repository {repository} does not exist")
    directories = sorted(path.name for path in repository.iterdir() if path.is_dir())
    return [name for name in directories if is_model_name(name)], [
        name for name in directories if not is_model_name(name)
    ]


def model_names(repository: Path) -> list[str]:
    return repository_entries(repository)[0]
