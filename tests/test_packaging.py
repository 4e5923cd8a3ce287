"""What `pip install rmserve` puts on a user's machine: one import package, light to import, no cycles."""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmserve.training.commands import register
from rmserve.training.options import ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# What a trainer process must not pay for (or conflict with) when it only calls the server.
HEAVY_FOR_A_CLIENT = ("flask", "onnxruntime", "pydantic", "numpy", "tokenizers", "prometheus_client")


def package_modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every module: folders are the packages, under the source root."""
    source = ROOT / PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"][0]
    for path in sorted((source / "rmserve").rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (absolute imports, the project's only style)."""
    modules = dict(package_modules())
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from rmserve import metrics` imports the module rmserve.metrics.
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def test_no_module_imports_in_a_circle() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the scan found too few modules to be looking at the package"
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = import_graph()
    graph["rmserve.core.formats"].add("rmserve.app")  # core -> app -> ... -> core
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


def test_the_serving_side_never_imports_torch_or_training() -> None:
    graph = import_graph()
    serving = [name for name in graph if not name.startswith("rmserve.training") and name != "rmserve.cli"]
    for name in serving:
        assert not any(target.startswith("rmserve.training") for target in graph[name]), name


def test_importing_the_client_pulls_in_nothing_heavy() -> None:
    code = "import json, sys, rmserve.client; print(json.dumps(sorted(sys.modules)))"
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    )
    assert "rmserve.client" in loaded
    assert not loaded & set(HEAVY_FOR_A_CLIENT)


def test_train_flags_default_to_the_config_dataclasses(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    (tmp_path / "data.jsonl").touch()  # the data file must exist
    args = parser.parse_args(["train", str(tmp_path / "data.jsonl"), "-o", "run"])
    train_config, model_config = TrainConfig(data=tmp_path / "data.jsonl", out=Path("run")), ModelConfig()
    for flag, value in {
        "seed": train_config.seed,
        "epochs": train_config.epochs,
        "patience": train_config.patience,
        "batch_size": train_config.batch_size,
        "learning_rate": train_config.learning_rate,
        "loss": train_config.loss,
        "threads": train_config.threads,
        "max_length": model_config.max_length,
        "d_model": model_config.d_model,
        "n_layers": model_config.n_layers,
        "hash_buckets": model_config.hash_buckets,
    }.items():
        assert getattr(args, flag) == value, flag


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, installed with its serving dependencies only into a fresh virtual environment."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (root / "dist").glob("rmserve-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True)
    return venv


def run_in(venv: Path, *argv: str, status: int = 0) -> str:
    # From a directory without the checkout, so nothing is imported from the source tree.
    result = subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=venv, check=False
    )
    assert result.returncode == status, result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(installed: Path) -> None:
    code = (
        "import importlib.metadata as m, json; files = m.distribution('rmserve').files; "
        "print(json.dumps(sorted({f.parts[0] for f in files if not f.parts[0].endswith('.dist-info')})))"
    )
    tops = set(json.loads(run_in(installed, "python", "-c", code)))
    tops.discard("..")  # the console script, installed into the venv's bin/
    assert tops == {"rmserve"}
    modules = run_in(installed, "python", "-c", "import rmserve.training.commands, rmserve.app; print('ok')")
    assert modules.strip() == "ok"
    missing = run_in(installed, "python", "-c", "import importlib.util as u; print(u.find_spec('torch'))")
    assert missing.strip() == "None", "the serving install must not bring torch"


@pytest.mark.slow
def test_the_installed_client_is_light_and_the_cli_runs(installed: Path) -> None:
    code = "import json, sys, rmserve.client; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(run_in(installed, "python", "-c", code)))
    assert not loaded & set(HEAVY_FOR_A_CLIENT)
    assert "--port" in run_in(installed, "rmserve", "serve", "--help")
    # The benchmark harness lives in the checkout only.
    assert "invalid choice: 'bench'" in run_in(installed, "rmserve", "bench", "--help", status=2)


UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve"}


def test_no_pickle_or_eval_anywhere_in_the_package() -> None:
    """Nothing rmserve ships turns data into code: no pickle, eval or exec (torch.load only with weights_only)."""
    for path in (ROOT / "service").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not {name.split(".")[0] for name in names} & UNSAFE_MODULES, f"{path}:{node.lineno}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in UNSAFE_CALLS, f"{path}:{node.lineno}: {node.func.id}()"
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {keyword.arg: ast.unparse(keyword.value) for keyword in node.keywords}
                assert keywords.get("weights_only") == "True", f"{path}:{node.lineno}: torch.load without weights_only"
