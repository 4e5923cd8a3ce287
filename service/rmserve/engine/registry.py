"""The models a process serves, each with its batcher, and the ensembles of them.

An entry of the repository is a model (version directories) or an ensemble (`ensemble.json`
naming models beside it, `rmserve.engine.served_ensemble`). Both are served under their name.
"""

from __future__ import annotations

import logging
from typing import Any

from rmserve import metrics
from rmserve.config import Settings
from rmserve.core.ensemble_spec import ENSEMBLE_FILE, EnsembleSpec, is_ensemble
from rmserve.core.manifest import sha256_of
from rmserve.core.repository import InvalidModel, ensemble_spec, is_model_name, repository_entries
from rmserve.engine.batcher import Batcher
from rmserve.engine.servable import Servable
from rmserve.engine.served_ensemble import ServedEnsemble
from rmserve.engine.served_model import ServedModel
from rmserve.engine.version import load_model
from rmserve.errors import ModelNotFound

log = logging.getLogger(__name__)


def _model_dirs(settings: Settings) -> list[str]:
    """The repository's model directories; the other directories are logged and counted."""
    names, ignored = repository_entries(settings.model_repository)
    for entry in ignored:
        log.warning("ignoring %s: not a model directory", settings.model_repository / entry)
        metrics.REPOSITORY_REFUSED.labels(entry, "not_a_model").set(1)
    return names


class ModelRegistry:
    """Loads the configured models and ensembles from the repository and starts their batchers."""

    def __init__(self, models: dict[str, Servable], default: str, skipped: list[str] | None = None):
        self.models = models
        self.default = default
        self.skipped = skipped or []  # entries of the repository left out: no version loads, or a member does not

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Every model and ensemble in the repository that loads (the others are logged, counted and skipped),
        or exactly RMSERVE_MODELS (an ensemble with its members), where one that cannot load stops start-up."""
        explicit = list(settings.models)
        for name in explicit:
            if not is_model_name(name):
                raise InvalidModel(f"RMSERVE_MODELS: {name!r} is not a model name (letters, digits, '.', '_', '-')")
        names = explicit or _model_dirs(settings)
        loading = _Loading(settings, bool(explicit))
        specs: dict[str, EnsembleSpec] = {}
        for name in names:
            try:
                spec = ensemble_spec(settings.model_repository, name)
            except InvalidModel as error:
                loading.refuse(name, str(error), "invalid_ensemble")
                continue
            if spec is None:
                loading.load_model(name)
            else:
                specs[name] = spec
        for name, spec in specs.items():
            loading.load_ensemble(name, spec)
        models = loading.models
        if not models:
            raise InvalidModel(
                f"no model in {settings.model_repository} could be loaded (skipped: "
                f"{', '.join(loading.skipped) or 'none'}); the log says why for each"
            )
        default = settings.default_model or next(name for name in [*names, *models] if name in models)
        if default not in models:
            raise ValueError(f"RMSERVE_DEFAULT_MODEL={default!r} is not among the loaded models {sorted(models)}")
        ordered = {name: models[name] for name in names if name in models} | models  # as listed, members after
        return cls(ordered, default, loading.skipped)

    @property
    def batchers(self) -> list[Batcher[Any]]:
        """Every batcher once: an ensemble scores through its members'."""
        return list(dict.fromkeys(batcher for model in self.models.values() for batcher in model.batchers))

    def start(self) -> ModelRegistry:
        for batcher in self.batchers:
            batcher.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        for batcher in self.batchers:
            batcher.stop(timeout)

    def seconds_to_drain(self) -> float:
        """How long until every queue has scored what it holds now, at the measured rates."""
        return max(batcher.seconds_to_score(batcher.queued_tokens) for batcher in self.batchers)

    def publish_telemetry(self) -> None:
        """Bring this process's drift gauges up to date (a /metrics scrape)."""
        for model in self.models.values():
            if model.telemetry is not None:
                model.telemetry.publish()

    def unhealthy(self) -> list[str]:
        """Models whose batcher is not running its loop (restarting after a crash, or ended)."""
        return sorted({name for model in self.models.values() for name in model.unhealthy()})

    def get(self, name: str | None) -> Servable:
        model = self.models.get(name or self.default)
        if model is None:
            raise ModelNotFound(str(name), sorted(self.models))
        return model


class _Loading:
    """One pass over the repository: what loaded, what was skipped; with RMSERVE_MODELS a refusal stops it."""

    def __init__(self, settings: Settings, explicit: bool):
        self.settings = settings
        self.explicit = explicit
        self.threads = settings.intra_op_threads()
        self.models: dict[str, Servable] = {}
        self.single: dict[str, ServedModel] = {}  # the loaded models an ensemble may have as members
        self.skipped: list[str] = []

    def refuse(self, name: str, why: str, reason: str, named_by: str = "named in RMSERVE_MODELS") -> None:
        """Skip an entry (log line, `rmserve_repository_refused`, /readyz `skipped`), or stop start-up."""
        if self.explicit:
            raise InvalidModel(f"{why} ({named_by}, so the server does not start)")
        log.error("skipping model %s: %s", name, why)
        metrics.REPOSITORY_REFUSED.labels(name, reason).set(1)
        self.skipped.append(name)

    def load_model(self, name: str, named_by: str = "named in RMSERVE_MODELS") -> None:
        if name in self.models or name in self.skipped:
            return
        settings = self.settings
        try:
            version = load_model(
                settings.model_repository,
                name,
                self.threads,
                settings.pinned_version(name),
                settings.prompt_cache_bytes,
                settings.runtime,
                settings.executor_count(),
            )
        except InvalidModel as error:
            self.refuse(name, str(error), "no_valid_version", named_by)
            return
        self.models[name] = self.single[name] = ServedModel(version, settings)
        metrics.register_model(name, version.manifest.version, version.manifest.sha256)

    def load_ensemble(self, name: str, spec: EnsembleSpec) -> None:
        """Serve an ensemble if every member is a model that loads; with RMSERVE_MODELS, load its members too."""
        repository = self.settings.model_repository
        members = []
        for member in spec.members:
            if is_ensemble(repository / member):
                self.refuse(name, f"{repository / name}: member {member!r} is itself an ensemble", "invalid_ensemble")
                return
            if self.explicit:
                self.load_model(member, f"a member of ensemble {name!r}, named in RMSERVE_MODELS")
            served = self.single.get(member)
            if served is None:
                present = "has no loadable version" if (repository / member).is_dir() else "is not in the repository"
                self.refuse(name, f"{repository / name}: member {member!r} {present}", "invalid_ensemble")
                return
            members.append(served)
        self.models[name] = ServedEnsemble(name, spec, members, self.settings)
        metrics.register_ensemble(name, sha256_of(repository / name / ENSEMBLE_FILE))
        log.info("serving ensemble %s of %s (k %s, reward %s)", name, ", ".join(spec.members), spec.k, spec.reward)
