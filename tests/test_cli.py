"""Every user error of every `rmserve` command: one or two lines on stderr, exit status 2, no traceback.

And every command's `--help` lists only its own flags, each with a sentence.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from rmserve.cli import build_parser, main
from rmserve.usage import EXTRA_OF_PACKAGE, UsageError, run
from tests.conftest import ROOT

SERVER_ONLY_FLAGS = ("--host", "--port", "--workers", "--threads", "--default-model", "--max-queue-tokens")


def user_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `rmserve argv`, expect a user error, and return what it printed on stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert 1 <= len(lines) <= 2, captured.err
    assert lines[0].startswith(f"rmserve {argv[0]}: ")
    return captured.err


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
    assert "no-such.jsonl: No such file or directory" in message


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
    assert "MAX_BATCH_TOKENS must be positive" in user_error(capsys, [*argv, "--max-batch-tokens", "0"])


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
        (["train", "prefs.jsonl", "-o", "run", "--lines", "first-last"], "--lines: line range must look like 1-1800"),
        (["train", "prefs.jsonl", "-o", "run", "--dev-fraction", "0"], "--dev-fraction: must be between 0 and 1"),
        (["train", "prefs.jsonl"], "the following arguments are required: -o/--out"),
        (["scor"], "invalid choice: 'scor'"),
    ],
)
def test_a_bad_flag_is_one_line_pointing_at_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line and line.endswith("--help)")


def test_a_base_checkpoint_that_is_not_there_is_not_looked_up_on_a_hub(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "prefs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    message = user_error(capsys, ["train", str(tmp_path / "prefs.jsonl"), "-o", "run", "--base", str(tmp_path / "hf")])
    assert "no Hugging Face checkpoint there" in message


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
        ({"scipy"}, ["eval", "hh-harmless", "held_out.jsonl"], "scipy"),
        ({"torch"}, ["train", "prefs.jsonl", "-o", "run"], "torch"),
        ({"torch"}, ["export", "run", "--held-out", "held_out.jsonl", "--name", "x"], "torch"),
    ],
)
def test_a_missing_extra_gives_the_pip_install_line(
    blocked: set[str], argv: list[str], package: str, tmp_path: Path
) -> None:
    """As on a serving-only install: the training extra's packages cannot be imported."""
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
