"""The examples stand on what their docs promise: veRL's reward function on the copied client file alone,
the TRL script saying which extra it needs. (tests/test_trl.py runs the TRL script itself.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bench.live_server import running_server
from rmserve.client import RewardClient
from tests.conftest import ROOT
from tests.test_cli import run_without

# Python without site processing, so setuptools' editable finder for rmserve never loads, but with
# site-packages on the path for `requests`: what a veRL worker without rmserve has. veRL imports
# the reward file by path, as here.
WORKER = """
import importlib.util, sys
sys.path.append({site_packages!r})
assert importlib.util.find_spec("rmserve") is None, "rmserve must not be importable here"
spec = importlib.util.spec_from_file_location("reward_fn", {example!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.compute_score("hh", "Paris.", None, extra_info={{"prompt": "Capital of France?"}}))
print(type(module.reward_client()).__module__)
"""


def test_verl_reward_fn_needs_only_the_copied_client(tiny_repository: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "verl_reward_fn.py", tmp_path / "verl_reward_fn.py")
    shutil.copy(ROOT / "service" / "rmserve" / "client.py", tmp_path / "client.py")
    code = WORKER.format(site_packages=sysconfig.get_paths()["purelib"], example=str(tmp_path / "verl_reward_fn.py"))
    with running_server(tiny_repository, tmp_path / "server.log") as server:
        finished = subprocess.run(
            [sys.executable, "-S", "-c", code],
            cwd=tmp_path,
            env={**os.environ, "REWARD_SERVER_URL": server.base_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr
        reward, client_module = finished.stdout.split()
        assert client_module == "rmserve_client"  # the copy, loaded by path
        expected = RewardClient(server.base_url).score(["Capital of France?"], ["Paris."])
        assert float(reward) == pytest.approx(expected[0])


def test_trl_example_without_its_extra_names_it() -> None:
    example = ROOT / "examples" / "trl_grpo.py"
    finished = run_without({"datasets"}, f"import runpy\nrunpy.run_path({str(example)!r}, run_name='__main__')\n")
    assert finished.returncode == 2
    assert finished.stderr.strip() == "trl_grpo.py: needs datasets: pip install -e '.[examples]'"
