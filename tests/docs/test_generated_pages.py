"""The site's generated pages show what the code and the committed results say, all of it (docs/gen)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.report import markdown, model_runs
from docs.gen import benchmarks_page, cli_page, metrics_page, models_page, openapi_page, reliability_page, settings_page
from rmserve.cli import build_parser
from rmserve.config import PREFIX, Settings
from rmserve.core.ensemble_spec import EnsembleSpec
from rmserve.core.manifest import Manifest
from rmserve.core.repository import ensemble_spec, model_names, version_dirs
from tests.conftest import DEFAULT_REPOSITORY, ROOT


def rows(page: str) -> list[list[str]]:
    """The cells of every table row on a page."""
    return [
        [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in page.splitlines() if line[:1] == "|"
    ]


def test_the_settings_page_gives_every_setting_its_variable_default_and_description() -> None:
    page = rows(settings_page.render())
    by_variable = {row[1].strip("`"): row for row in page}
    for setting in fields(Settings):
        name, _, default, description = by_variable[PREFIX + setting.name.upper()]
        assert name == f"`{setting.name}`" and len(description) > 10
        assert default == settings_page.default_text(setting.default)
    assert by_variable["RMSERVE_PORT"][2] == "`8000`" and by_variable["RMSERVE_MODELS"][2] == "empty"
    assert by_variable["RMSERVE_PROTECT_METRICS"][2] == "`false`" and by_variable["RMSERVE_API_KEYS_FILE"][2] == "unset"


def test_the_metrics_page_lists_every_metric_a_scrape_shows_with_its_type_labels_and_help() -> None:
    page = {row[0].strip("`"): row for row in rows(metrics_page.render())}
    scraped = [
        family
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        if family.name.startswith("rmserve_") and not family.name.endswith("_created")  # counters' start times
    ]
    assert len(scraped) == len(metrics_page.declared()) > 20
    for family in scraped:
        shown = f"{family.name}_total" if family.type == "counter" else family.name
        _, kind, labels, _, help_text = page[shown]
        assert kind == family.type and help_text.startswith(family.documentation)
        sampled = {label for sample in family.samples for label in sample.labels} - {"le"}  # "le": the buckets'
        assert not sampled or labels == ", ".join(f"`{label}`" for label in sorted(sampled, key=labels.find))
    assert page["rmserve_requests_total"][2] == "`endpoint`, `status`"
    assert page["rmserve_ready"][2] == "none" and page["rmserve_ready"][3] == "smallest of live workers"


def test_the_command_line_page_holds_every_commands_help_with_all_its_flags() -> None:
    page = cli_page.render()
    sections = dict(re.findall(r"^## (rmserve.*?)\n\n```text\n(.*?)\n```", page, flags=re.MULTILINE | re.DOTALL))
    commands = cli_page.commands(build_parser())
    assert list(sections) == ["rmserve", *(f"rmserve {name}" for name in commands)]
    for name, command in commands.items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert {"--help", "--debug"} <= flags
        assert all(flag in sections[f"rmserve {name}"] for flag in flags), name


def test_the_openapi_page_renders_the_served_document_every_operation_and_schema(client: FlaskClient) -> None:
    document = openapi_page.document()
    assert json.loads(openapi_page.as_json(document)) == client.get("/openapi.json").get_json()
    page = openapi_page.render(document)
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"\n### {method.upper()} {path}\n" in page
    anchors = set(re.findall(r"^### \w+ \{ #(\w+) \}$", page, flags=re.MULTILINE))
    assert anchors == set(document["components"]["schemas"])
    assert set(re.findall(r"\]\(#(\w+)\)", page)) <= anchors
    assert f"]({openapi_page.DOWNLOAD})" in page


def test_a_schema_reads_as_a_phrase() -> None:
    nullable_list = {"anyOf": [{"type": "array", "items": {"$ref": "#/components/schemas/Message"}}, {"type": "null"}]}
    assert openapi_page.type_of(nullable_list) == "array of [Message](#Message) or null"
    assert openapi_page.type_of({"type": "object", "additionalProperties": {"type": "number"}}) == "object of number"
    assert openapi_page.type_of({"enum": ["mean", "min"]}) == 'one of `"mean"`, `"min"`'


def write_run(results: Path, name: str, date: str) -> None:
    newest = json.loads(sorted((ROOT / "bench" / "results").glob("*.json"))[-1].read_text(encoding="utf-8"))
    (results / name).write_text(json.dumps({**newest, "date": date}), encoding="utf-8")


def test_the_benchmarks_page_puts_the_newest_runs_tables_in_its_prose(tmp_path: Path) -> None:
    write_run(tmp_path, "b-older.json", "2026-11-01T10:00:00+00:00")
    write_run(tmp_path, "a-newer.json", "2026-12-02T10:00:00+00:00")
    path, result = benchmarks_page.newest_run(tmp_path)
    assert path.name == "a-newer.json"
    prose = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    page = benchmarks_page.render(prose, path, result)
    assert markdown(result) in page and benchmarks_page.MARKER not in page
    assert f"]({benchmarks_page.PLOT})" in page and "bench/results/a-newer.json" in page
    with pytest.raises(ValueError, match="exactly once"):
        benchmarks_page.render(prose.replace(benchmarks_page.MARKER, ""), path, result)


def test_the_committed_results_have_a_newest_run() -> None:
    path, result = benchmarks_page.newest_run(ROOT / "bench" / "results")
    assert all(run["points"] for run in model_runs(result).values())
    assert path.name.startswith(result["date"][:10].replace("-", ""))


def test_the_reliability_page_has_a_row_per_recorded_scenario() -> None:
    results = ROOT / "docs" / "reliability.json"
    recorded = json.loads(results.read_text(encoding="utf-8"))
    page = {row[0]: row for row in rows(reliability_page.render(results))}
    for scenario, row in recorded.items():
        assert page[scenario.replace("|", "\\|")][2:] == [
            row["outcome"].replace("|", "\\|"),
            f"`{row['test']}`",
            row["measured"],
        ]


def test_every_reliability_row_names_a_test_of_the_suite() -> None:
    for scenario, row in json.loads((ROOT / "docs" / "reliability.json").read_text(encoding="utf-8")).items():
        path, _, test = row["test"].partition("::")
        assert (ROOT / path).is_file(), f"{scenario}: no {path}"
        assert f"def {test.split('[')[0]}(" in (ROOT / path).read_text(encoding="utf-8"), scenario


def test_the_models_page_shows_each_committed_models_card_and_manifest_numbers() -> None:
    page = models_page.render(DEFAULT_REPOSITORY)
    names = model_names(DEFAULT_REPOSITORY)
    assert re.findall(r"^## (.+)$", page, flags=re.MULTILINE) == names
    for name in names:
        section = page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        card = (DEFAULT_REPOSITORY / name / models_page.CARD).read_text(encoding="utf-8")
        assert card.splitlines()[2] in section  # the card's first paragraph, under its title
        spec = ensemble_spec(DEFAULT_REPOSITORY, name)
        if spec is not None:
            assert_ensemble_numbers(section, spec)
        for version in version_dirs(DEFAULT_REPOSITORY, name):
            manifest = Manifest.read(version)
            evaluation, normalization = manifest.evaluation, manifest.normalization
            assert f"{evaluation.pairwise_accuracy:.3f} ({evaluation.n} pairs)" in section
            assert evaluation.isa is None or f"(CPU {evaluation.isa})" in section  # the kernels that measured it
            assert f"mean {normalization.mean:.4f}, std {normalization.std:.4f}" in section
            assert manifest.sha256[:16] in section


def assert_ensemble_numbers(section: str, spec: EnsembleSpec) -> None:
    assert ", ".join(f"[{member}](#{member})" for member in spec.members) in section
    assert f"`{spec.reward}`" in section and f"| k | {spec.k:g} |" in section
    assert f"| held-out pairwise accuracy: {spec.reward} | {spec.evaluation[spec.reward]:.3f} " in section
    assert "isa" not in spec.evaluation or f"(CPU {spec.evaluation['isa']})" in section
