"""The Dockerfile built and run for real (podman, via ../shared/tools/container-env.sh).

The image must score, run as a non-root user, carry neither torch nor a compiler, pass its own
HEALTHCHECK, and on SIGTERM finish the requests it accepted before exiting 0.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bench.live_server import answers_ready, free_port, wait_until
from tests.deploy.helpers import ROOT
from tests.tiny_model import write_slow_version, write_version

# The first test also builds the image: minutes on a cold cache.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

CONTAINER_ENV = ROOT.parent / "shared" / "tools" / "container-env.sh"
IMAGE = "localhost/rmserve:test"
SLOW_LAYERS = 160  # seconds per inference call on 2 cores: a wide window to send the second request and SIGTERM
SLOW_WIDTH = 2048


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The environment podman needs here (container-env.sh installs podman and the base image)."""
    if not CONTAINER_ENV.is_file():
        pytest.skip(f"{CONTAINER_ENV} not found: it sets up podman on these machines")
    if os.geteuid() != 0:
        pytest.skip("container-env.sh installs podman and needs root")
    exports = subprocess.run(["bash", str(CONTAINER_ENV)], capture_output=True, text=True, check=True, timeout=900)
    env = dict(os.environ)
    for line in exports.stdout.splitlines():
        for assignment in shlex.split(line.removeprefix("export ")):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def podman(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str]) -> str:
    """`podman build` of the project's Dockerfile (docker format, which keeps HEALTHCHECK)."""
    build = podman(
        podman_env,
        "build",
        "--pull=never",
        "--network=host",
        "--format=docker",
        *shlex.split(podman_env["PODMAN_BUILD_MOUNTS"]),
        "-t",
        IMAGE,
        str(ROOT),
        timeout=1200,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny` (instant) and `slow` (seconds per call), readable by the image's non-root user."""
    root = tmp_path_factory.mktemp("container-repository")
    write_version(root / "tiny" / "1")
    write_slow_version(root / "slow" / "1", "slow", SLOW_LAYERS, SLOW_WIDTH)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root


@dataclass
class Container:
    name: str
    base_url: str
    env: dict[str, str]

    def logs(self) -> str:
        result = podman(self.env, "logs", self.name)
        return result.stdout + result.stderr


@pytest.fixture
def start_container(podman_env: dict[str, str], image: str) -> Iterator[Callable[..., Container]]:
    """Run the image like on Kubernetes (read-only root, tmpfs /tmp); ready when returned, removed after."""
    names: list[str] = []

    def start(*run_args: str) -> Container:
        port = free_port()
        name = f"rmserve-test-{port}"
        names.append(name)
        started = podman(
            podman_env,
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-e",
            f"RMSERVE_PORT={port}",
            *run_args,
            image,
        )
        assert started.returncode == 0, started.stderr
        running = Container(name, f"http://127.0.0.1:{port}", podman_env)
        wait_until(lambda: answers_ready(running.base_url) or not is_running(running), 180, "the container's /readyz")
        assert is_running(running), running.logs()
        return running

    yield start
    for name in names:
        podman(podman_env, "rm", "-f", "-t", "0", name)


@pytest.fixture
def container(start_container: Callable[..., Container], repository: Path) -> Container:
    """The image serving the test repository, mounted at /models."""
    return start_container("-v", f"{repository}:/models:ro", "-e", "RMSERVE_DEFAULT_MODEL=tiny")


def is_running(container: Container) -> bool:
    state = podman(container.env, "inspect", "--format", "{{.State.Running}}", container.name)
    return state.stdout.strip() == "true"


def test_image_has_no_torch_no_compiler_and_a_non_root_user(podman_env: dict[str, str], image: str) -> None:
    probe = (
        "import importlib.util, json, os, shutil; print(json.dumps({'uid': os.getuid(), "
        "'torch': importlib.util.find_spec('torch') is not None, "
        "'compilers': [c for c in ('gcc', 'cc', 'c++', 'clang') if shutil.which(c)], "
        "'sleep': shutil.which('sleep') is not None}))"
    )
    result = podman(podman_env, "run", "--rm", "--network=host", "--entrypoint", "python", image, "-c", probe)
    assert result.returncode == 0, result.stderr
    # `sleep` is what the Kubernetes preStop hook runs.
    assert json.loads(result.stdout) == {"uid": 10001, "torch": False, "compilers": [], "sleep": True}


def test_container_scores_as_non_root_and_passes_its_healthcheck(container: Container) -> None:
    response = requests.post(
        f"{container.base_url}/v1/score",
        json={"prompt": "How do I bake bread?", "responses": ["Knead and bake.", "No idea."]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny" and len(body["scores"]) == 2

    top = podman(container.env, "top", container.name, "user", "args")
    server_users = {line.split()[0] for line in top.stdout.splitlines()[1:] if "gunicorn" in line}
    assert server_users == {"rmserve"}, top.stdout
    assert podman(container.env, "healthcheck", "run", container.name).returncode == 0, container.logs()


def test_image_serves_the_repository_it_was_built_with(start_container: Callable[..., Container]) -> None:
    repository = ROOT / "models"
    baked = sorted(path.name for path in repository.iterdir() if path.is_dir()) if repository.is_dir() else []
    if not baked:
        pytest.skip("models/ holds no model to bake into the image")
    container = start_container()
    models = requests.get(f"{container.base_url}/v1/models", timeout=30).json()
    assert sorted(card["name"] for card in models["data"]) == baked


def test_sigterm_finishes_accepted_requests_then_exits(container: Container) -> None:
    outcomes: list[requests.Response] = []

    def score_slowly(text: str) -> None:
        outcomes.append(
            requests.post(
                f"{container.base_url}/v1/score",
                timeout=120,
                json={"model": "slow", "prompt": "Score this response at length, please.", "responses": [text * 20]},
            )
        )

    clients = [threading.Thread(target=score_slowly, args=(text,)) for text in ("bread ", "river ")]
    # One at a time: the first is being scored (seconds) when the second arrives, so both are
    # accepted, one in flight and one queued, before the signal.
    for accepted, client in enumerate(clients, start=1):
        client.start()
        wait_until(
            lambda count=accepted: queue_items(container, "slow") == count,
            60,
            f"{accepted} item(s) in the slow model's queue",
        )
    assert podman(container.env, "kill", "--signal", "TERM", container.name).returncode == 0

    wait_until(lambda: not answers_ready(container.base_url), 60, "/readyz to stop answering 200")
    for client in clients:
        client.join(timeout=120)
    assert [response.status_code for response in outcomes] == [200, 200], [response.text for response in outcomes]
    assert all(len(response.json()["scores"]) == 1 for response in outcomes)

    exited = podman(container.env, "wait", container.name, timeout=90)
    assert exited.stdout.strip() == "0", container.logs()
    assert "Traceback" not in container.logs()


def queue_items(container: Container, model: str) -> float:
    text = requests.get(f"{container.base_url}/metrics", timeout=10).text
    prefix = f'rmserve_queue_items{{model="{model}"}} '
    values = [float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def test_sigterm_under_16_clients_loses_no_accepted_request(container: Container) -> None:
    """The rolling-update case: 16 trainers scoring when Kubernetes sends SIGTERM."""
    from tests.load import Load
    from tests.reliability_report import record

    clients = 16
    load = Load(
        f"{container.base_url}/v1/score",
        clients,
        lambda client, sequence: {"model": "tiny", "prompt": "Hi", "responses": [f"response {client} {sequence}"]},
    ).start()
    wait_until(lambda: load.count(200) >= 10 * clients, 60, "the load to warm up")
    signalled = time.monotonic()
    assert podman(container.env, "kill", "--signal", "TERM", container.name).returncode == 0
    exited = podman(container.env, "wait", container.name, timeout=90)
    exited_after = time.monotonic() - signalled
    outcomes = load.stop()
    lost = [outcome for outcome in outcomes if outcome.error in ("reset", "timeout")]
    statuses = {outcome.status for outcome in outcomes if outcome.status is not None}
    assert exited.stdout.strip() == "0", container.logs()
    assert not lost, f"{len(lost)} of {len(outcomes)} requests lost\n{container.logs()[-3000:]}"
    assert statuses <= {200, 503}, statuses
    answered = sum(outcome.status is not None for outcome in outcomes)
    record(
        "Graceful shutdown: SIGTERM to the container",
        f"{clients} closed-loop clients on the image (podman, read-only root), `podman kill --signal TERM`",
        f"0 of {answered} answered requests lost; exit 0 after {exited_after:.1f} s",
    )
