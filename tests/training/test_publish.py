"""`rmserve export`, `quantize` and `import` publish through one pipeline: all or nothing, never over a version.

Each failure is a real one injected late (a graph that scores another model, a file changed before
verification, Ctrl-C while measuring statistics); the repository must then be byte for byte as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from flask import Flask
from onnx import TensorProto, helper

from rmserve.core.manifest import TOKENIZER_FILE, Manifest, sha256_of
from rmserve.core.repository import InvalidModel, version_dirs
from rmserve.engine.version import load_model
from rmserve.training import export as export_module
from rmserve.training import importer, publish
from rmserve.training.commands import main as cli_main
from rmserve.training.export import export, quantize_version
from rmserve.training.importer import import_checkpoint
from rmserve.training.options import ExportConfig, ImportConfig
from rmserve.training.parity import ParityError
from rmserve.training.publish import VersionExists
from tests.hf_checkpoints import write_checkpoint
from tests.tiny_model import write_version

NAME, EXISTING, NEW = "m", 1, 2


@dataclass(frozen=True)
class Command:
    """One publishing command, run into a repository as version NEW of NAME."""

    name: str
    run: Callable[[Path], Manifest]
    graph_writer: tuple[object, str]  # (module, function) writing the graph: the fp32 trace, or int8 quantization
    wrong_scores: str  # what the injected graph does to the scores: "Add" one (fp32), or "Neg" (int8 ranks backwards)


@pytest.fixture(scope="module")
def commands(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Command]:
    root = tmp_path_factory.mktemp("publish")
    held_out = run.parent / "held_out.jsonl"
    fp32 = root / "fp32"
    export(ExportConfig(run=run, repository=fp32, name="tiny", version=1, held_out=held_out))
    checkpoint = write_checkpoint(root / "hf" / "qwen2", "qwen2")
    calibration = root / "calibration.jsonl"
    pairs = [("Knead, rise, bake at 230C.", "no"), ("Paris is the capital.", "go away"), ("Hello!", "I will not.")]
    calibration.write_text(
        "".join(json.dumps({"prompt": "How do I bake bread?", "chosen": c, "rejected": r}) + "\n" for c, r in pairs)
    )
    return {
        "export": Command(
            "export",
            lambda repo: export(ExportConfig(run=run, repository=repo, name=NAME, version=NEW, held_out=held_out)),
            (export_module, "export_onnx"),
            "Add",
        ),
        "quantize": Command(
            "quantize",
            lambda repo: quantize_version(fp32 / "tiny" / "1", repo, NAME, NEW, held_out, None),
            (publish, "quantize_int8"),  # as the pipeline imported it
            "Neg",
        ),
        "import": Command(
            "import",
            lambda repo: import_checkpoint(
                ImportConfig(checkpoint=checkpoint, name=NAME, repository=repo, version=NEW, calibration=calibration)
            ),
            (export_module, "export_onnx"),
            "Add",
        ),
    }


COMMANDS = ("export", "quantize", "import")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A repository already serving NAME version EXISTING."""
    write_version(tmp_path / "repo" / NAME / str(EXISTING), name=NAME)
    return tmp_path / "repo"


def snapshot(repository: Path) -> dict[str, str]:
    """Every path under the repository, with each file's sha256."""
    return {
        path.relative_to(repository).as_posix(): sha256_of(path) if path.is_file() else "dir"
        for path in sorted(repository.rglob("*"))
    }


def rewire_scores(path: Path, op: str) -> None:
    """Put `op` after the graph's score output (Add: +1, Neg: reversed order): a graph of another model."""
    model = onnx.load(str(path))
    score = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{score}_unchanged" if name == score else name for name in node.output]
    inputs = [f"{score}_unchanged"]
    if op == "Add":
        model.graph.initializer.append(helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]))
        inputs.append("one")
    model.graph.node.append(helper.make_node(op, inputs, [score]))
    onnx.save(model, str(path))


def inject(failure: str, command: Command, monkeypatch: pytest.MonkeyPatch) -> tuple[type[BaseException], str | None]:
    """Make the publish fail late, for real; the exception and message expected."""
    if failure == "parity":  # the graph written scores another model
        module, function = command.graph_writer
        writes = getattr(module, function)

        def wrong(network_or_source: object, path: Path) -> None:
            writes(network_or_source, path)
            rewire_scores(path, command.wrong_scores)

        monkeypatch.setattr(module, function, wrong)
        return ParityError, "int8 graph orders only" if command.wrong_scores == "Neg" else "raw scores .* differ from"
    if failure == "verification":  # the server's own checks on the staged version: a tokenizer changed after its sha256
        verify = publish.load_version

        def tampered(directory: Path, intra_op_threads: int) -> object:
            with (directory / TOKENIZER_FILE).open("a") as stream:
                stream.write(" ")
            return verify(directory, intra_op_threads)

        monkeypatch.setattr(publish, "load_version", tampered)
        return InvalidModel, r"tokenizer\.json: sha256"

    def interrupted(*_args: object) -> None:  # Ctrl-C while the statistics are measured
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "measure_training", interrupted)
    return KeyboardInterrupt, None


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_publishes_a_version_the_server_loads_and_scores(
    name: str, commands: dict[str, Command], repository: Path, make_app: Callable[..., Flask]
) -> None:
    before = snapshot(repository)
    manifest = commands[name].run(repository)
    after = snapshot(repository)
    assert {path: digest for path, digest in after.items() if not path.startswith(f"{NAME}/{NEW}")} == before
    assert sorted(path for path in after if path.count("/") == 2 and path.startswith(f"{NAME}/{NEW}/")) == sorted(
        f"{NAME}/{NEW}/{file}" for file in ["manifest.json", *manifest.files]
    )  # the new version and nothing else: no staging directory is left
    assert load_model(repository, NAME, intra_op_threads=1).manifest == manifest
    client = make_app(model_repository=repository, models=(NAME,)).test_client()
    reply = client.post("/v1/score", json={"items": [{"prompt": "How do I bake bread?", "response": "Knead it."}]})
    assert reply.status_code == 200 and reply.get_json()["version"] == NEW


@pytest.mark.parametrize("failure", ["parity", "verification", "interrupt"])
@pytest.mark.parametrize("name", COMMANDS)
def test_a_failed_publish_leaves_the_repository_as_it_was(
    name: str, failure: str, commands: dict[str, Command], repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(repository)
    error, message = inject(failure, commands[name], monkeypatch)
    with pytest.raises(error, match=message):
        commands[name].run(repository)
    assert snapshot(repository) == before


def test_a_failed_first_publish_leaves_no_repository_behind(
    commands: dict[str, Command], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject("parity", commands["export"], monkeypatch)
    with pytest.raises(ParityError):
        commands["export"].run(tmp_path / "new" / "repo")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_an_existing_version_is_refused_before_any_work(
    name: str, commands: dict[str, Command], repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_version(repository / NAME / str(NEW), name=NAME, version=NEW)
    before = snapshot(repository)

    def expensive(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the version's existence is checked before any work")

    for module, function in [
        (export_module, "load_run"),
        (export_module, "verify_version"),
        (importer, "load_reward_checkpoint"),
    ]:
        monkeypatch.setattr(module, function, expensive)
    with pytest.raises(VersionExists, match=rf"{NAME}/{NEW} already exists; pick another --version"):
        commands[name].run(repository)
    assert snapshot(repository) == before


def test_the_cli_refuses_an_existing_version_in_one_line(
    run: Path, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", str(run), "--held-out", str(run.parent / "held_out.jsonl"), "--repository", str(repository)]
    assert cli_main([*argv, "--name", NAME, "--version", str(EXISTING)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already exists" in error and "pick another --version" in error


def test_a_staging_directory_is_never_served(repository: Path, make_app: Callable[..., Flask]) -> None:
    """A publish in progress (or one killed with SIGKILL) leaves a complete version in a dot-directory: not served."""
    staged = repository / NAME / f"{publish.STAGING_PREFIX}{NEW}-x1y2" / NAME / str(NEW)
    write_version(staged, name=NAME, version=NEW)
    assert version_dirs(repository, NAME) == [repository / NAME / str(EXISTING)]
    client = make_app(model_repository=repository).test_client()
    cards = client.get("/v1/models").get_json()["data"]
    assert [(card["name"], card["version"]) for card in cards] == [(NAME, EXISTING)]
