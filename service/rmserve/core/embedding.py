"""How far a response's pooled embedding lies from the training responses': the out-of-distribution signal.

A model version may export, beside its score, the pooled embedding the score is read from as a
second graph output (`[batch, dim]`). At export the embeddings of every training response are
summarised by a low-rank Gaussian (probabilistic PCA: the mean, the top `rank` principal
directions with their variances, and one variance for everything else) and stored next to the
graph; serving measures each item's Mahalanobis distance under that Gaussian. The cut is the
distance's own quantile on the training responses (the manifest's `training_stats.embedding`),
so the flag's false-positive rate on in-distribution text is what the quantile says.

Low rank, because a full covariance of a 384-wide embedding from a few thousand responses is
singular; the residual variance keeps directions the training data never moved along from
looking free (a response far off in them is far, not invisible).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDING_OUTPUT = "embedding"  # the graph output's name
EMBEDDING_FILE = "embedding_stats.npz"  # beside model.onnx, covered by the manifest's sha256 list
DEFAULT_RANK = 32
POINTS_PER_DIRECTION = 10  # a direction's variance is estimated from at least this many responses
VARIANCE_FLOOR = 1e-6  # relative to the total variance: a direction of (near) zero spread is not infinitely tight


@dataclass(frozen=True)
class EmbeddingGaussian:
    """mean [dim], components [rank, dim] (orthonormal rows), variances [rank], residual_variance."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, embeddings: np.ndarray, rank: int = DEFAULT_RANK) -> EmbeddingGaussian:
        """The Gaussian of `embeddings` [n, dim]: top `rank` directions, the rest as one variance.

        The rank is capped by what the data supports: one direction per POINTS_PER_DIRECTION
        responses (so a few calibration items do not fit their own affine hull exactly, leaving
        every other text infinitely far) and fewer than `dim`.
        """
        values = np.asarray(embeddings, dtype=np.float64)
        if values.ndim != 2 or len(values) < 2:
            raise ValueError(f"need embeddings [n >= 2, dim], got shape {values.shape}")
        count, dim = values.shape
        mean = values.mean(axis=0)
        centred = values - mean
        # Right singular vectors are the covariance's eigenvectors; s**2 / n its eigenvalues.
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        eigenvalues = singular**2 / count
        rank = max(1, min(rank, count // POINTS_PER_DIRECTION, dim - 1))
        floor = VARIANCE_FLOOR * max(float(eigenvalues.sum()) / dim, np.finfo(np.float64).tiny)
        remaining = eigenvalues[rank:]
        # Mean eigenvalue of the discarded directions, counting the dim - n never observed as zero.
        residual = float(remaining.sum()) / max(dim - rank, 1)
        return cls(
            mean=mean,
            components=directions[:rank],
            variances=np.maximum(eigenvalues[:rank], floor),
            residual_variance=max(residual, floor),
        )

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row. [n, dim] -> [n]"""
        centred = np.asarray(embeddings, dtype=np.float64) - self.mean
        # Not `@`: OpenBLAS threads a [64, 384] x [384, 32] product, and threads that wait for a core the
        # executors' ONNX Runtime runs hold made a batch's distances 1-3 ms instead of 0.4 (bench.ood).
        projected = np.einsum("ij,kj->ik", centred, self.components)  # [n, rank]
        residual = (centred**2).sum(axis=1) - (projected**2).sum(axis=1)  # [n]: what the components miss
        squared = (projected**2 / self.variances).sum(axis=1) + np.maximum(residual, 0.0) / self.residual_variance
        distances: np.ndarray = np.sqrt(squared)
        return distances

    def save(self, path: Path) -> None:
        with path.open("wb") as stream:
            np.savez(
                stream,
                mean=self.mean,
                components=self.components,
                variances=self.variances,
                residual_variance=np.array(self.residual_variance),
            )

    @classmethod
    def load(cls, path: Path) -> EmbeddingGaussian:
        """Read a saved Gaussian, or raise ValueError saying what is wrong with it (never pickles)."""
        with np.load(path, allow_pickle=False) as arrays:
            try:
                mean, components = arrays["mean"], arrays["components"]
                variances, residual = arrays["variances"], arrays["residual_variance"]
            except KeyError as missing:
                raise ValueError(f"{path.name}: no array {missing}") from None
        if mean.ndim != 1 or components.shape != (len(variances), len(mean)) or residual.shape != ():
            raise ValueError(
                f"{path.name}: shapes mean {mean.shape}, components {components.shape}, variances {variances.shape}, "
                f"residual_variance {residual.shape} do not fit together"
            )
        arrays_ok = all(np.all(np.isfinite(array)) for array in (mean, components, variances, residual))
        if not arrays_ok or np.any(variances <= 0) or residual <= 0:
            raise ValueError(f"{path.name}: non-finite values or variances that are not positive")
        return cls(
            mean=mean.astype(np.float64),
            components=components.astype(np.float64),
            variances=variances.astype(np.float64),
            residual_variance=float(residual),
        )
