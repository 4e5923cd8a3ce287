"""The models page: each committed model's card (models/NAME/README.md) and the numbers its manifest records."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docs.gen.tables import code, table
from rmserve.core.ensemble_spec import ENSEMBLE_FILE, EnsembleSpec
from rmserve.core.manifest import MANIFEST_FILE, Manifest
from rmserve.core.repository import ensemble_spec, model_names, version_dirs

CARD = "README.md"  # a model's card, beside its versions (the server ignores it)

INTRO = """# Models

The model repository `models/` as committed: what `make serve` and the container image serve.
Each model's card is the `README.md` beside its versions (`models/NAME/README.md`); the numbers
under it come from the `manifest.json` of each version (or the `ensemble.json`) that the command
which made it wrote, so they cannot drift from the files served. Held-out accuracy is pairwise:
the share of held-out preference pairs in which the model scores the response people chose
above the one they rejected.

"""


def render(repository: Path) -> str:
    names = model_names(repository)
    summary = [summary_row(repository, name) for name in names]
    sections = [section(repository, name) for name in names]
    header = ("model", "what it is", "served version", "held-out pairwise accuracy", "quantization", "size")
    return INTRO + table(header, summary) + "\n" + "\n".join(sections)


def summary_row(repository: Path, name: str) -> tuple[str, ...]:
    link = f"[{name}](#{name})"
    spec = ensemble_spec(repository, name)
    if spec is not None:
        accuracy = spec.evaluation.get(spec.reward)
        members = ", ".join(spec.members)
        return (link, f"ensemble of {members}", "ensemble", accuracy_text(accuracy, spec.evaluation.get("n")), "", "")
    manifest = Manifest.read(version_dirs(repository, name)[0])
    evaluation = manifest.evaluation
    return (
        link,
        manifest.architecture.get("type", "?"),
        str(manifest.version),
        accuracy_text(evaluation.pairwise_accuracy, evaluation.n),
        manifest.quantization or "none (fp32)",
        megabytes(sum(path.stat().st_size for path in (repository / name / str(manifest.version)).iterdir())),
    )


def section(repository: Path, name: str) -> str:
    card = repository / name / CARD
    parts = [f"## {name}\n", demoted(card.read_text(encoding="utf-8")) if card.is_file() else ""]
    spec = ensemble_spec(repository, name)
    if spec is not None:
        parts += [f"### Recorded in `models/{name}/{ENSEMBLE_FILE}`\n", table(("recorded", ""), ensemble_rows(spec))]
    for version in version_dirs(repository, name):
        parts += [
            f"### Recorded in `models/{name}/{version.name}/{MANIFEST_FILE}`\n",
            table(("recorded", ""), manifest_rows(Manifest.read(version), version)),
        ]
    return "\n".join(parts)


def demoted(card: str) -> str:
    """The card without its title, each heading one level deeper (the page gives each model a `##`)."""
    lines = card.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    fenced = False
    for index, line in enumerate(lines):
        fenced ^= line.lstrip().startswith("```")
        if not fenced and re.match(r"#+ ", line):
            lines[index] = "#" + line
    return "\n".join(lines).strip() + "\n"


def manifest_rows(manifest: Manifest, version: Path) -> list[tuple[str, str]]:
    recorded = manifest.model_dump(mode="json")  # the run's own records, as the manifest holds them
    evaluation = manifest.evaluation
    architecture = manifest.architecture
    rows = [
        ("created", manifest.created),
        (
            "architecture",
            ", ".join(
                f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
                for key, value in architecture.items()
                if key in ("type", "model_type", "d_model", "n_layers", "parameters")
            ),
        ),
        (
            "input format",
            f"{code(manifest.input_format.get('style', '?'))}, max length {manifest.max_length} "
            f"tokens, truncation {code(manifest.truncation)}",
        ),
        ("quantization", manifest.quantization or "none (fp32)"),
        (
            "normalization",
            f"mean {manifest.normalization.mean:.4f}, std {manifest.normalization.std:.4f} "
            "(served scores are (raw - mean) / std)",
        ),
        (
            "held-out pairwise accuracy",
            f"{accuracy_text(evaluation.pairwise_accuracy, evaluation.n)} on {evaluation.data or 'unrecorded data'}"
            + (f" (CPU {evaluation.isa})" if evaluation.isa else ""),
        ),
    ]
    if evaluation.baselines:
        baselines = ", ".join(f"{key.replace('_', ' ')} {value:.3f}" for key, value in evaluation.baselines.items())
        rows.append(("baselines on the same pairs", baselines))
    rows += [
        (f"parity: {key.replace('_', ' ')}", parity_text(value))
        for key, value in (recorded["parity"] or {}).items()
        if key != "data"
    ]
    training = recorded["training"]
    if training:
        split = ", ".join(
            f"{key.replace('_', ' ')} {training[key]}"
            for key in ("lines", "seed", "dev_seed", "dev_fraction")
            if training.get(key) is not None
        )
        rows.append(("trained on", f"{Path(training['data']).name}, {split}"))
    if recorded["source"]:
        rows.append(("imported from", str(recorded["source"].get("checkpoint"))))
    rows += [
        (f"file {code(relative)}", f"{megabytes((version / relative).stat().st_size)}, sha256 {digest[:16]}…")
        for relative, digest in sorted(manifest.files.items())
    ]
    return rows


def ensemble_rows(spec: EnsembleSpec) -> list[tuple[str, str]]:
    evaluation = spec.evaluation
    rows = [
        ("members", ", ".join(f"[{member}](#{member})" for member in spec.members)),
        ("reward", f"{code(spec.reward)} (single-number protocols return it; conservative = mean - k * std)"),
        ("k", f"{spec.k:g}"),
        ("created", spec.created or "unrecorded"),
    ]
    if spec.disagreement is not None:
        rows.append(
            (
                "disagreement on the calibration responses",
                f"std across members p50 {spec.disagreement.p50:.3f}, p99 {spec.disagreement.p99:.3f} "
                f"(the {code('high_disagreement')} cut) on {spec.calibration or 'unrecorded data'}",
            )
        )
    for member, accuracy in evaluation.get("members", {}).items():
        rows.append((f"held-out pairwise accuracy: {member}", accuracy_text(accuracy, evaluation.get("n"))))
    for combination in ("mean", "conservative", "min"):
        if combination in evaluation:
            rows.append(
                (
                    f"held-out pairwise accuracy: {combination}",
                    accuracy_text(evaluation[combination], evaluation.get("n")),
                )
            )
    if "data" in evaluation:
        measured_on = f" (CPU {evaluation['isa']})" if "isa" in evaluation else ""
        rows.append(("held-out data", f"{evaluation['data']}{measured_on}"))
    return rows


def accuracy_text(accuracy: float | None, pairs: int | None) -> str:
    if accuracy is None:
        return "not measured"
    return f"{accuracy:.3f}" + (f" ({pairs} pairs)" if pairs else "")


def parity_text(value: Any) -> str:
    if isinstance(value, dict):  # the version an int8 copy was made from
        return ", ".join(f"{key} {item}" for key, item in value.items() if key != "sha256")
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
