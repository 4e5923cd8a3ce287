"""The one way into the model repository: `rmserve export`, `quantize` and `import` all publish through here.

In order: refuse a version that exists (`claim_version`, before the caller's expensive work); stage in
`<repository>/<name>/.staging-<version>-<random>/`, a dot-directory the server never lists; the fp32
graph and its parity with the caller's reference; optionally int8 and its agreement with fp32; the
graph and tokenizer files; normalization and flag statistics with the served graph; the manifest, from
typed records; the staged version verified and loaded exactly as the server loads it; one rename into
`<repository>/<name>/<version>`. On any failure, KeyboardInterrupt included, the staging directory and any
directory it needed are removed: the repository is as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rmserve.core.ensemble_spec import ENSEMBLE_FILE, is_ensemble
from rmserve.core.formats import InputFormat
from rmserve.core.manifest import (
    MODEL_FILE,
    Evaluation,
    ImportSource,
    Manifest,
    Normalization,
    Parity,
    Serving,
    TrainingRecord,
    TrainingStats,
    file_digests,
)
from rmserve.core.repository import is_model_name
from rmserve.core.tokenizer import SpecialTokens
from rmserve.engine.session import OnnxScorer
from rmserve.engine.version import load_version
from rmserve.training.cpu_isa import int8_isa
from rmserve.training.data import Comparison, LineRange
from rmserve.training.evaluate import EncodedComparison, pairwise_accuracy, score_comparisons
from rmserve.training.onnx_files import INT8, quantize_int8, save_graph
from rmserve.training.parity import Reference, fp32_parity, int8_parity
from rmserve.training.stats import measure_training, score_and_embed_sequences
from rmserve.usage import UsageError

ONNX_THREADS = 2
STAGING_PREFIX = ".staging-"


class VersionExists(UsageError):
    """The version directory is taken: a publish never overwrites one."""


@dataclass(frozen=True)
class Target:
    """Where a version is published: `<repository>/<name>/<version>/`."""

    repository: Path
    name: str
    version: int

    @property
    def directory(self) -> Path:
        return self.repository / self.name / str(self.version)

    def refuse_existing(self) -> None:
        if self.directory.exists():
            raise VersionExists(f"{self.directory} already exists; pick another --version (nothing is overwritten)")


def claim_version(repository: Path, name: str, version: int) -> Target:
    """The target, checked before any expensive work: a model name (not an ensemble's), a positive version, not
    yet there."""
    if not is_model_name(name):
        raise UsageError(f"--name {name!r}: letters, digits, '.', '_' and '-' only, starting with a letter or digit")
    if version < 1:
        raise UsageError(f"--version {version}: versions are numbered from 1")
    if is_ensemble(repository / name):
        raise UsageError(f"{repository / name} is an ensemble ({ENSEMBLE_FILE}); pick another --name")
    target = Target(repository, name, version)
    target.refuse_existing()
    return target


def data_label(path: Path, lines: LineRange | None) -> str:
    """How the manifest names the data a number was measured on: "held_out.jsonl lines 1801-2312"."""
    return f"{path.name} lines {lines}" if lines else path.name


@dataclass(frozen=True)
class Probes:
    """The comparisons every graph is checked and evaluated on, encoded as serving encodes them."""

    encoded: list[EncodedComparison]
    pad_id: int
    data: str  # what they are, for the manifest: "held_out.jsonl lines 1801-2312"


@dataclass(frozen=True)
class Responses:
    """The responses normalization and the flags' statistics are measured on (training or calibration data)."""

    input_format: InputFormat  # lays the responses out as the served version does
    comparisons: Sequence[Comparison]
    data: str


@dataclass(frozen=True)
class Measured:
    """What the pipeline measured on the staged version; `manifest` adds what the caller knows."""

    target: Target
    parity: Parity
    served_scores: list[np.ndarray]  # the served graph's raw rewards on the probes, per comparison
    normalization: Normalization
    training_stats: TrainingStats | None
    quantization: str | None
    files: dict[str, str]
    data: str

    def evaluation(self, baselines: dict[str, float]) -> Evaluation:
        """Held-out accuracy of the served graph on the probes, beside the caller's baselines on the same pairs."""
        pairs = sum(len(group) * (len(group) - 1) // 2 for group in self.served_scores)
        return Evaluation(
            pairwise_accuracy=pairwise_accuracy(self.served_scores),
            n=pairs,
            data=self.data,
            baselines=baselines,
            isa=int8_isa(),
        )

    def manifest(
        self,
        *,
        architecture: dict[str, Any],
        max_length: int,
        tokens: SpecialTokens,
        input_format: dict[str, Any],
        evaluation: Evaluation | None = None,
        training: TrainingRecord | None = None,
        source: ImportSource | None = None,
    ) -> Manifest:
        return Manifest(
            name=self.target.name,
            version=self.target.version,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            sha256=self.files[MODEL_FILE],
            architecture=architecture,
            max_length=max_length,
            input_format=input_format,
            tokens=tokens,
            normalization=self.normalization,
            quantization=self.quantization,
            evaluation=evaluation or Evaluation(),
            parity=self.parity,
            training=training,
            source=source,
            files=self.files,
            training_stats=self.training_stats,
        )


@dataclass(frozen=True)
class Publication:
    """One version to publish: what each command supplies to the pipeline."""

    target: Target
    probes: Probes
    fp32_graph: Callable[[Path], Path]  # given a scratch directory, the fp32 graph's path (traced there, or served)
    reference: Reference | Parity  # what the fp32 graph must reproduce; a Parity: it was checked when published
    write_tokenizer: Callable[[Path], object]  # tokenizer.json into the version directory
    describe: Callable[[Measured], Manifest]
    responses: Responses | None = None  # None: no normalization (mean 0, std 1) and no flag statistics
    int8: bool = False
    external_data_above: int = 1_800_000_000  # weights past this many bytes go to model.onnx.data (protobuf: 2 GB)
    max_batch_tokens: int | None = None  # recorded as the manifest's serving hint (`--max-batch-tokens`)


def publish(publication: Publication) -> Manifest:
    """Stage, check, measure, describe, verify and rename one version into the repository; or leave no trace."""
    target, probes = publication.target, publication.probes
    with _staging(target) as (staged, scratch):
        fp32_path = publication.fp32_graph(scratch)
        fp32_scores, parity = _fp32_parity(publication, OnnxScorer(fp32_path, ONNX_THREADS))
        served_path = fp32_path
        if publication.int8:
            served_path = scratch / "model.int8.onnx"
            quantize_int8(fp32_path, served_path)
        save_graph(onnx.load(str(served_path)), staged, publication.external_data_above)
        publication.write_tokenizer(staged)
        served = OnnxScorer(staged / MODEL_FILE, ONNX_THREADS)
        served_scores = fp32_scores  # the fp32 graph is served as traced; only an int8 one needs scoring again
        if publication.int8:
            served_scores = score_comparisons(served, probes.encoded, probes.pad_id)
            parity = int8_parity(parity, fp32_scores, served_scores, probes.data)
        normalization, training_stats = Normalization(), None
        if publication.responses is not None:  # every response through the served graph; embedding_stats.npz
            responses = publication.responses
            normalization, training_stats = measure_training(
                served, responses.input_format, responses.comparisons, probes.pad_id, staged, responses.data
            )
        manifest = publication.describe(
            Measured(
                target=target,
                parity=parity,
                served_scores=served_scores,
                normalization=normalization,
                training_stats=training_stats,
                quantization=INT8 if publication.int8 else None,
                files=file_digests(staged),
                data=probes.data,
            )
        )
        if publication.max_batch_tokens is not None:
            manifest = manifest.model_copy(update={"serving": Serving(max_batch_tokens=publication.max_batch_tokens)})
        manifest.write(staged)
        load_version(staged, ONNX_THREADS)  # as the server loads it: verified files, a graph that scores
        target.refuse_existing()  # another publish may have taken it meanwhile
        staged.rename(target.directory)  # one rename within the model directory: atomic
    return manifest


def _fp32_parity(publication: Publication, fp32: OnnxScorer) -> tuple[list[np.ndarray], Parity]:
    """The fp32 graph's scores on the probes, and its parity with the reference (ParityError when it strays)."""
    probes, reference = publication.probes, publication.reference
    scores = score_comparisons(fp32, probes.encoded, probes.pad_id)
    if not isinstance(reference, Reference):  # a served version's graph: its parity record stands
        return scores, reference
    embeddings = None
    if reference.embeddings is not None:
        sequences = [ids for group in probes.encoded for ids in group]
        embeddings = score_and_embed_sequences(fp32, sequences, probes.pad_id)[1]
    return scores, fp32_parity(reference, scores, embeddings, probes.data)


@contextmanager
def _staging(target: Target) -> Iterator[tuple[Path, Path]]:
    """(the staged version directory, a scratch directory), both inside one dot-directory beside the target.

    The staged version sits at `.staging-<version>-<random>/<name>/<version>`, so it verifies under its
    real name and version. The dot-directory goes in any case; the directories it needed, on failure.
    """
    model_dir = target.directory.parent
    created = [path for path in (model_dir, *model_dir.parents) if not path.exists()]
    model_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.version}-", dir=model_dir))
    staged = root / target.name / str(target.version)
    staged.mkdir(parents=True)
    (root / "scratch").mkdir()
    try:
        yield staged, root / "scratch"
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        for path in created:  # deepest first; never one something else has filled meanwhile
            with suppress(OSError):
                path.rmdir()
        raise
    shutil.rmtree(root, ignore_errors=True)
