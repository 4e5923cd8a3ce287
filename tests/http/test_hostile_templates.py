"""Models with hostile imported chat templates: start-up goes on without them or serves them within bounds.

A template that fails its warm-up is skipped and reported like any bad entry; one that fails, loops or
overruns its budget on some response answers 422 naming the item, or 504 once the request's deadline
passes, never a hang or a 500. The live-server test drives them at concurrency under a memory guard.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from bench.live_server import running_server
from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.core.manifest import MANIFEST_FILE
from rmserve.core.template_budget import MAX_RENDER_S
from rmserve.engine.registry import ModelRegistry
from tests.chat_templates import HOSTILE_TEMPLATES, QWEN25_TEMPLATE
from tests.load import Load, percentile, rss_mib, worker_pids
from tests.reliability_report import record
from tests.tiny_model import write_version

PROMPT = "How do I bake bread?"


def write_template_version(repository: Path, name: str, template: str) -> None:
    """The tiny model, reading its text through `template` (the graph scores whatever tokens it gets)."""
    directory = repository / name / "1"
    write_version(directory, name=name)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["input_format"] = {"style": "chat_template", "template": template, "special_tokens": {}}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-templates")
    write_version(root / "tiny" / "1")
    write_template_version(root, "qwen", QWEN25_TEMPLATE)
    write_template_version(root, "broken", "{{ messages[0].content + 1 }}")  # a TypeError on any conversation
    for name in ("looping on a word", "a TypeError on a word", "recursion on a word"):
        write_template_version(root, name.replace(" ", "-"), HOSTILE_TEMPLATES[name])
    return root


@pytest.fixture(scope="module")
def served(repository: Path) -> Iterator[FlaskClient]:
    settings = Settings(model_repository=repository, default_model="tiny")
    registry = ModelRegistry.load(settings).start()
    yield create_app(settings, registry).test_client()
    registry.stop(timeout=5)


def score(client: FlaskClient, model: str, timeout_ms: int | None = None) -> tuple[int, dict, float]:
    headers = {} if timeout_ms is None else {"X-Timeout-Ms": str(timeout_ms)}
    body = {"model": model, "prompt": PROMPT, "responses": ["Knead and bake.", "Bake it, please."]}
    started = time.monotonic()
    response = client.post("/v1/score", json=body, headers=headers)
    return response.status_code, response.get_json(), time.monotonic() - started


def test_a_template_that_fails_its_warm_up_is_skipped_and_reported(served: FlaskClient) -> None:
    assert served.get("/readyz").get_json()["skipped"] == ["broken"]
    assert 'rmserve_repository_refused{entry="broken",reason="no_valid_version"} 1.0' in served.get(
        "/metrics"
    ).get_data(as_text=True)
    assert score(served, "qwen")[0] == 200  # the others serve


@pytest.mark.parametrize("model", ["looping-on-a-word", "a-TypeError-on-a-word", "recursion-on-a-word"])
def test_a_template_failing_on_a_response_is_422_naming_it_within_its_budget(served: FlaskClient, model: str) -> None:
    status, body, seconds = score(served, model)
    assert status == 422, body
    assert body["error"]["field"] == "responses[1]" and "chat template" in body["error"]["message"]
    assert seconds < MAX_RENDER_S + 1


def test_a_template_still_rendering_at_the_deadline_is_504_at_the_deadline(served: FlaskClient) -> None:
    status, body, seconds = score(served, "looping-on-a-word", timeout_ms=500)
    assert status == 504 and body["error"]["code"] == "deadline_exceeded", body
    assert seconds < 0.5 + 1


RSS_LIMIT_MIB = 1024  # the pod's memory limit in deploy/k8s
RSS_GUARD_MIB = 1536  # past this the test kills the server rather than the machine


@contextmanager
def memory_guard(master: int) -> Iterator[list[float]]:
    """Sample the server's RSS (master and workers) every 0.1 s; kill it past RSS_GUARD_MIB."""
    samples: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            try:
                total = sum(rss_mib(pid) for pid in [master, *worker_pids(master)])
            except (OSError, LookupError):  # a process ended between listing and reading it
                continue
            samples.append(total)
            if total > RSS_GUARD_MIB:
                os.kill(master, signal.SIGKILL)
                for pid in worker_pids(master):
                    os.kill(pid, signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield samples
    finally:
        stop.set()
        watcher.join(5)


def on_a_word(template: str) -> str:
    """`template` only for a response that says "please" (so the model passes its warm-up and serves)."""
    return (
        f"{{% if 'please' in messages[-1].content %}}{template}{{% else %}}{{{{ messages[-1].content }}}}{{% endif %}}"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hostile_templates_under_load_answer_in_time_and_stay_under_the_memory_limit(
    repository: Path, tmp_path: Path
) -> None:
    models = [f"hostile-{index}" for index in range(len(HOSTILE_TEMPLATES))]
    for model, template in zip(models, HOSTILE_TEMPLATES.values(), strict=True):
        write_template_version(repository, model, on_a_word(template))
    deadline_s, clients, seconds = 3.0, 16, 30.0

    def body(client: int, sequence: int) -> dict[str, object]:
        model = models[(client * 7 + sequence) % len(models)]
        return {"model": model, "prompt": PROMPT, "responses": ["please " * 9000]}

    env = {"RMSERVE_THREADS": str(clients), "RMSERVE_DEFAULT_MODEL": "tiny"}
    headers = {"X-Timeout-Ms": str(int(deadline_s * 1000))}
    with running_server(repository, tmp_path / "server.log", env=env) as server:
        skipped = requests.get(f"{server.base_url}/readyz", timeout=10).json()["skipped"]
        with memory_guard(server.process.pid) as rss:
            load = Load(f"{server.base_url}/v1/score", clients, body, headers=headers).start()
            probes = []
            finish = time.monotonic() + seconds
            while time.monotonic() < finish:
                started = time.monotonic()
                assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
                probes.append(time.monotonic() - started)
                time.sleep(0.2)
            outcomes = load.stop()
            after = requests.post(f"{server.base_url}/v1/score", json={"responses": ["Bake."], "prompt": PROMPT})
        log = server.log()
    assert skipped == ["broken"], log[-3000:]
    assert after.status_code == 200, log[-3000:]
    assert rss and max(rss) < RSS_LIMIT_MIB, (max(rss), log[-3000:])
    statuses = {outcome.status for outcome in outcomes}
    assert statuses <= {422, 504}, (statuses, log[-3000:])
    slowest = max(outcome.latency for outcome in outcomes)
    assert slowest < deadline_s + 1, slowest
    # Probes keep answering while 16 threads render (their turns at the GIL are shared with 16 others).
    assert percentile(probes, 0.5) < 1, sorted(probes)
    record(
        "Chat templates: hostile templates under load",
        f"{len(models)} models with hostile imported templates set off by a word ({clients} clients for "
        f"{seconds:.0f} s, a 63,000-character response saying it, X-Timeout-Ms {deadline_s * 1000:.0f}), and one "
        "template that fails its warm-up",
        f"start-up went on (the failing model skipped and reported in /readyz); {len(outcomes)} answers, all "
        f"{'/'.join(sorted(str(status) for status in statuses))}, the slowest after {slowest:.2f} s; /healthz "
        f"p50 {percentile(probes, 0.5) * 1000:.0f} ms, at most {max(probes) * 1000:.0f} ms; server RSS at most "
        f"{max(rss):.0f} MiB (limit {RSS_LIMIT_MIB})",
    )
