"""Every user error of every `rmserve` command: one line on stderr, exit status 2, no traceback.

And every command's `--help` lists only its own flags, each with a sentence. The training commands'
own mistakes are in tests/training/test_commands.py.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from bench.live_server import free_port
from rmserve.cli import build_parser, main
from rmserve.core.manifest import MODEL_FILE
from rmserve.usage import EXTRA_OF_PACKAGE, UsageError, run
from tests.conftest import ROOT
from tests.tiny_model import write_version

SERVER_ONLY_FLAGS = ("--host", "--port", "--workers", "--threads", "--default-model", "--max-queue-tokens")


def user_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `rmserve argv`, expect a user error (from argparse or a handler): exit 2 and one line on stderr."""
    status: object
    try:
        status = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors exit
        status = exit_info.code
    captured = capsys.readouterr()
    assert status == 2, captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"rmserve {argv[0]}: ")
    return line


def test_score_outside_the_project_root_says_where_it_looked_and_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RMSERVE_MODEL_REPOSITORY", raising=False)
    (tmp_path / "in.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    message = user_error(capsys, ["score", "in.jsonl"])
    assert str(tmp_path / "models") in message
    assert "--model-repository" in message


def test_serve_and_eval_outside_the_project_root(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RMSERVE_MODEL_REPOSITORY", raising=False)
    # The gunicorn config ships in the package: all `serve` needs here is a repository.
    message = user_error(capsys, ["serve"])
    assert str(tmp_path / "models") in message and "--model-repository" in message
    assert "--gunicorn-config" in user_error(capsys, ["serve", "--gunicorn-config", "nosuch.conf.py"])
    (tmp_path / "held_out.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    message = user_error(capsys, ["eval", "hh-harmless", "held_out.jsonl"])
    assert str(tmp_path / "models") in message and "--repository" in message


def test_a_missing_input_file_is_named(capsys: pytest.CaptureFixture[str], tiny_repository: Path) -> None:
    message = user_error(capsys, ["score", "no-such.jsonl", "--model-repository", str(tiny_repository)])
    assert "argument input: no file at no-such.jsonl" in message


def test_eval_of_an_unknown_model_and_export_of_a_non_run_say_what_to_pass(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path
) -> None:
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    message = user_error(capsys, ["eval", "nope", str(held_out), "--repository", str(tiny_repository)])
    assert "no model 'nope'" in message and "it holds: tiny" in message
    message = user_error(capsys, ["export", str(tmp_path), "--held-out", str(held_out), "--name", "x"])
    assert "is not a training run" in message and "rmserve train" in message


def test_an_unknown_model_lists_the_known_ones(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    message = user_error(
        capsys, ["score", str(tmp_path / "in.jsonl"), "--model", "nope", "--model-repository", str(tiny_repository)]
    )
    assert "nope" in message


def test_a_bad_setting_is_one_line(capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    argv = ["score", str(tmp_path / "in.jsonl"), "--model-repository", str(tiny_repository)]
    assert "MAX_BATCH_TOKENS must be 0 (each model's own) or positive" in user_error(
        capsys, [*argv, "--max-batch-tokens", "-1"]
    )


def test_a_bad_training_line_is_file_line_what(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "prefs.jsonl.gz"
    with gzip.open(data, "wt") as stream:
        stream.write('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    message = user_error(capsys, ["train", str(data), "-o", str(tmp_path / "run")])
    assert f"{data}:2: unknown format" in message


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RMSERVE_MODEL_REPOSITORY", raising=False)
    (tmp_path / "in.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    with pytest.raises(UsageError, match="no model repository"):
        main(["score", "in.jsonl", "--debug"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{prefs}", "-o", "run", "--lines", "first-last"], "--lines: line range must look like 1-1800"),
        (["train", "{prefs}", "-o", "run", "--dev-fraction", "0"], "--dev-fraction: must be between 0 and 1"),
        (["train", "{prefs}"], "the following arguments are required: -o/--out"),
        (["scor"], "invalid choice: 'scor'"),
    ],
)
def test_a_bad_flag_is_one_line_pointing_at_help(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(prefs=tmp_path / "prefs.jsonl") for arg in argv])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line and line.endswith("--help)")


def test_a_base_checkpoint_that_is_not_there_is_not_looked_up_on_a_hub(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    message = user_error(capsys, ["train", str(tmp_path / "prefs.jsonl"), "-o", "run", "--base", str(tmp_path / "hf")])
    assert f"argument --base: no Hugging Face checkpoint at {tmp_path / 'hf'} (no config.json)" in message


def run_without(packages: set[str], code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh Python where `packages` cannot be imported, as if never installed."""
    blocker = (
        "import sys\n"
        "from importlib.abc import MetaPathFinder\n"
        "class NotInstalled(MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {packages!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
    )
    command = [sys.executable, "-c", blocker + code, *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("blocked", "argv", "package"),
    [
        ({"scipy"}, ["eval", "hh-harmless", "{prefs}"], "scipy"),
        ({"torch"}, ["train", "{prefs}", "-o", "{tmp}/run"], "torch"),
        ({"torch"}, ["export", "{tmp}/run", "--held-out", "{prefs}", "--name", "x"], "torch"),
    ],
)
def test_a_missing_extra_gives_the_pip_install_line(
    blocked: set[str], argv: list[str], package: str, tmp_path: Path
) -> None:
    """As on a serving-only install: the training extra's packages cannot be imported."""
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    argv = [arg.format(prefs=tmp_path / "prefs.jsonl", tmp=tmp_path) for arg in argv]
    finished = run_without(blocked, "from rmserve.cli import main\nsys.exit(main(sys.argv[1:]))\n", *argv)
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr
    assert finished.stderr.strip() == (
        f"rmserve {argv[0]}: needs {package}, from the [train] extra: "
        "pip install -e '.[train]' in a checkout, or pip install 'rmserve[train]'"
    )


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(commands.choices)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_flag_has_a_sentence_of_help(command: str) -> None:
    parser = subcommands()[command]
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"rmserve {command} {action.option_strings}"


def test_score_help_lists_no_server_flags() -> None:
    options = {option for action in subcommands()["score"]._actions for option in action.option_strings}
    assert not options & set(SERVER_ONLY_FLAGS)
    assert {"--model-repository", "--model", "--chunk-size", "-o", "--debug"} <= options


def test_every_extra_a_message_names_exists_and_brings_what_it_promises() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    listed = {extra: " ".join(requirements) for extra, requirements in extras.items()}
    for package, extra in EXTRA_OF_PACKAGE.items():
        assert extra in extras, f"{package} is said to come with [{extra}], which pyproject.toml lacks"
    for extra, package in [("train", "torch"), ("train", "matplotlib"), ("examples", "trl"), ("examples", "datasets")]:
        assert package in listed[extra]
    assert "rmserve[train,examples,docs]" in listed["dev"]  # the tests run every example; make docs builds the site


def raise_(error: BaseException) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise error

    return handler


def test_a_bug_keeps_its_traceback_and_ctrl_c_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError):
        run(argparse.Namespace(command="train", handler=raise_(RuntimeError("a bug")), debug=False))
    assert run(argparse.Namespace(command="train", handler=raise_(KeyboardInterrupt()), debug=False)) == 130
    assert capsys.readouterr().err.strip() == "rmserve train: interrupted"


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_a_wrong_flag_names_the_subcommands_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert user_error(capsys, [command, "--nosuch"]).endswith(f"(see rmserve {command} --help)")


def test_an_unknown_flag_after_complete_arguments_is_the_subcommands_error(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    argv = ["score", str(tmp_path / "in.jsonl"), "--model-repository", str(tiny_repository), "--nosuch"]
    assert user_error(capsys, argv) == "rmserve score: unrecognized arguments: --nosuch (see rmserve score --help)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{bad_json}"], "bad.jsonl:2: not valid JSON"),
        (["{tmp}"], "argument input: {tmp} is a directory; pass a file"),
        (["{items}", "--chunk-size", "0"], "argument --chunk-size: must be a whole number of at least 1, got '0'"),
        (["{items}", "--model", "../tiny"], "argument --model: '../tiny' is not a model name"),
        (["{items}", "--model-repository", "{empty}"], "the model repository {empty} holds no models"),
    ],
)
def test_score_mistakes(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    places = {
        "tmp": tmp_path,
        "items": tmp_path / "items.jsonl",
        "bad_json": tmp_path / "bad.jsonl",
        "empty": tmp_path / "empty",
    }
    places["items"].write_text('{"prompt": "a", "response": "b"}\n')
    places["bad_json"].write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n')
    places["empty"].mkdir()
    argv = ["score", *(arg.format(**places) for arg in argv)]
    if "--model-repository" not in argv:
        argv += ["--model-repository", str(tiny_repository)]
    assert message.format(**places) in user_error(capsys, argv)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture
def no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rmserve serve` must refuse before it replaces this process with gunicorn."""

    def refuse(*args: object) -> None:
        raise AssertionError("rmserve serve started gunicorn")

    monkeypatch.setattr(os, "execv", refuse)


@pytest.mark.usefixtures("no_exec")
@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RMSERVE_MODELS": "nosuch"}, "--models/RMSERVE_MODELS: no model 'nosuch' in {repository} (it holds: tiny)"),
        ({"RMSERVE_MODELS": "tiny,../up"}, "--models/RMSERVE_MODELS: no model '../up'"),
        ({"RMSERVE_DEFAULT_MODEL": "nosuch"}, "--default-model/RMSERVE_DEFAULT_MODEL: no model 'nosuch'"),
    ],
)
def test_serve_names_a_model_that_is_not_in_the_repository(
    capsys: pytest.CaptureFixture[str],
    tiny_repository: Path,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    message: str,
) -> None:
    monkeypatch.setenv("RMSERVE_MODEL_REPOSITORY", str(tiny_repository))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert message.format(repository=tiny_repository) in user_error(capsys, ["serve"])


@pytest.mark.usefixtures("no_exec")
@pytest.mark.usefixtures("no_exec")
def test_serve_refuses_a_keys_file_it_cannot_use_in_one_line(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMSERVE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv("RMSERVE_API_KEYS_FILE", str(tmp_path / "nosuch"))
    assert "RMSERVE_API_KEYS_FILE" in user_error(capsys, ["serve"])
    (tmp_path / "nosuch").write_text("# no key yet\n")
    assert "holds no key" in user_error(capsys, ["serve"])


def test_serve_a_repository_without_models(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RMSERVE_MODELS", raising=False)
    message = user_error(capsys, ["serve", "--model-repository", str(tmp_path)])
    assert f"the model repository {tmp_path} holds no models" in message


def test_a_worker_that_cannot_start_ends_the_server_with_the_reason_last(tmp_path: Path) -> None:
    """A model that fails verification in every worker: no traceback, a non-zero exit, and why as the last line.

    (gunicorn's master crashes with its own traceback when a second worker fails while it stops.)
    """
    write_version(tmp_path / "repository" / "tiny" / "1")
    (tmp_path / "repository" / "tiny" / "1" / MODEL_FILE).write_bytes(b"not a graph")
    environ = os.environ | {
        "RMSERVE_MODEL_REPOSITORY": str(tmp_path / "repository"),
        "RMSERVE_MODELS": "tiny",
        "RMSERVE_WORKERS": "3",
        "RMSERVE_HOST": "127.0.0.1",
        "RMSERVE_PORT": str(free_port()),
    }
    rmserve = [sys.executable, "-c", "import sys; from rmserve.cli import main; sys.exit(main())", "serve"]
    finished = subprocess.run(rmserve, env=environ, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr
    last = finished.stderr.strip().splitlines()[-1]
    model = tmp_path / "repository" / "tiny"
    assert last.startswith(f"rmserve serve: a worker could not start: {model}: no valid version")
    assert "does not match manifest" in last


@pytest.fixture
def server_url(make_app: Callable[..., Flask]) -> Iterator[str]:
    """The app on a local port in a thread (the review buffer off, as by default)."""
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_review_against_a_server_without_the_buffer_says_how_to_turn_it_on(
    capsys: pytest.CaptureFixture[str], server_url: str, tmp_path: Path
) -> None:
    message = user_error(capsys, ["review", server_url, "-o", str(tmp_path / "review.jsonl")])
    assert f"{server_url} keeps no review buffer: start the server with RMSERVE_REVIEW_PROMPTS set" in message
    assert not (tmp_path / "review.jsonl").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}", "no answer from http://127.0.0.1:{port} in 2 tries: is the server running there?"),
        ("127.0.0.1:{port}", "argument url: '127.0.0.1:{port}' is not a server URL; write it like http://rm:8000"),
    ],
)
def test_review_of_a_server_that_is_not_there(capsys: pytest.CaptureFixture[str], url: str, message: str) -> None:
    port = free_port()
    assert message.format(port=port) in user_error(capsys, ["review", url.format(port=port)])


@pytest.mark.usefixtures("no_exec")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "99999"], "RMSERVE_PORT must be at most 65535, got 99999"),
        (["--log-level", "loud"], "RMSERVE_LOG_LEVEL must be one of debug, info, warning, error, critical, got 'loud'"),
    ],
)
def test_serve_refuses_a_setting_gunicorn_would_fail_on(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, flags: list[str], message: str
) -> None:
    assert message in user_error(capsys, ["serve", "--model-repository", str(tiny_repository), *flags])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rounds", "0"], "argument --rounds: must be a whole number of at least 1, got '0'"),
        (["--padding-ratios", "0.5"], "argument --padding-ratios: must be a number of at least 1, got '0.5'"),
        (["--models", "../tiny"], "argument --models: '../tiny' is not a model name"),
    ],
)
def test_bench_mistakes(
    capsys: pytest.CaptureFixture[str], tiny_repository: Path, flags: list[str], message: str
) -> None:
    argv = ["bench", "--model-repository", str(tiny_repository), "--no-http", *flags]
    assert message in user_error(capsys, argv)
