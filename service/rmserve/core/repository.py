"""The model repository: `<repository>/<name>/<version>/{model.onnx,tokenizer.json,manifest.json}`,
or `<repository>/<name>/ensemble.json` for an ensemble of models beside it.

What serving and training both need before a graph runs: finding versions and verifying
one (its manifest parses, names match the directory, sha256 matches every file it serves
from, the tokenizer and input format load, its special token ids are in the vocabulary, the
embedding statistics it names load and fit their description).
Running the graph is the engine's part (`rmserve.engine.version`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from tokenizers import Tokenizer

from rmserve.core.embedding import EmbeddingGaussian
from rmserve.core.ensemble_spec import ENSEMBLE_FILE, EnsembleSpec, is_ensemble
from rmserve.core.formats import InputFormat, load_format
from rmserve.core.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    MODEL_NAME_PATTERN,
    TOKENIZER_FILE,
    Manifest,
    served_files,
    sha256_of,
)
from rmserve.core.tokenizer import SpecialTokens


class InvalidModel(Exception):
    """A version directory that must not be served."""


@dataclass(frozen=True)
class VerifiedVersion:
    """A version directory whose manifest, files and tokenizer check out."""

    manifest: Manifest
    directory: Path
    format: InputFormat
    embedding: EmbeddingGaussian | None = None  # with the manifest's training_stats.embedding

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE


def verify_version(directory: Path, prompt_cache_bytes: int = 0) -> VerifiedVersion:
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
    _verify_files(directory, manifest)
    try:
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        input_format = load_format(
            manifest.input_format, tokenizer, manifest.max_length, manifest.tokens, prompt_cache_bytes
        )
    except Exception as error:  # tokenizers and jinja raise their own types; all mean "unusable"
        raise InvalidModel(f"{directory}: cannot load: {error}") from None
    _check_token_ids(directory, manifest.tokens, tokenizer.get_vocab_size(with_added_tokens=True))
    return VerifiedVersion(manifest, directory, input_format, _embedding_gaussian(directory, manifest))


def _embedding_gaussian(directory: Path, manifest: Manifest) -> EmbeddingGaussian | None:
    """The Gaussian the manifest's embedding statistics name: sha256-listed, readable, of their dim and rank."""
    stats = manifest.training_stats.embedding if manifest.training_stats else None
    if stats is None:
        return None
    if stats.file not in manifest.files:
        raise InvalidModel(
            f"{directory}/{MANIFEST_FILE}: training_stats.embedding names {stats.file!r}, files does not"
        )
    try:
        gaussian = EmbeddingGaussian.load(directory / stats.file)
    except Exception as error:  # numpy raises ValueError, OSError or zipfile's own for a file that is no npz
        raise InvalidModel(f"{directory}/{stats.file}: unreadable embedding statistics: {error}") from None
    if (gaussian.dim, gaussian.rank) != (stats.dim, stats.rank):
        raise InvalidModel(
            f"{directory}/{stats.file}: dim {gaussian.dim}, rank {gaussian.rank}; the manifest's "
            f"training_stats.embedding says dim {stats.dim}, rank {stats.rank}"
        )
    return gaussian


def _verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file served from must match its sha256; with a file list, nothing unlisted may sit beside them."""
    expected = dict(manifest.files) or {MODEL_FILE: manifest.sha256}
    if manifest.files:
        if manifest.files.get(MODEL_FILE) != manifest.sha256:
            raise InvalidModel(f"{directory}/{MANIFEST_FILE}: files[{MODEL_FILE!r}] differs from sha256")
        if TOKENIZER_FILE not in manifest.files:
            raise InvalidModel(f"{directory}/{MANIFEST_FILE}: files lists no {TOKENIZER_FILE}")
        unlisted = sorted(set(served_files(directory)) - set(manifest.files))
        if unlisted:
            raise InvalidModel(f"{directory}: files not covered by the manifest's sha256 list: {', '.join(unlisted)}")
    for relative, digest in expected.items():
        path = (directory / relative).resolve()
        if not path.is_relative_to(directory.resolve()) or not path.is_file():
            raise InvalidModel(f"{directory}: manifest lists {relative!r}, which is not a file in the version")
        actual = sha256_of(path)
        if actual != digest:
            raise InvalidModel(f"{directory}/{relative}: sha256 {actual} does not match manifest {digest}")


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


def ensemble_spec(repository: Path, name: str) -> EnsembleSpec | None:
    """The entry's `ensemble.json`, or None when the entry is not an ensemble; InvalidModel if it is unusable."""
    entry = repository / name
    if not is_model_name(name) or not is_ensemble(entry):
        return None
    if version_dirs(repository, name):
        raise InvalidModel(f"{entry}: holds both {ENSEMBLE_FILE} and versions; an entry is a model or an ensemble")
    try:
        return EnsembleSpec.read(entry)
    except (ValueError, ValidationError) as error:  # not JSON (a ValueError), or not an ensemble spec
        raise InvalidModel(f"{entry}/{ENSEMBLE_FILE} is invalid: {error}") from None


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
