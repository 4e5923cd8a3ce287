"""What a policy gaming its reward sends, against a real `rmserve serve` with the default five-entry repository:
degenerate texts are answered in time linear in their bodies while probes answer, and long texts and many distinct
long prompts keep the server within the pod's memory (1 GiB, deploy/k8s).

Slow: each starts a server. A test that could blow up memory watches the server's RSS and kills it past a bound.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from bench.live_server import RunningServer, running_server
from tests.conftest import DEFAULT_REPOSITORY
from tests.degenerate import CHATML_PROMPT, DEGENERATE
from tests.load import rss_mib, worker_pids
from tests.reliability_report import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MIB = 1024 * 1024
SECONDS_PER_MIB = 2.0
POD_LIMIT_MIB = 1024  # deploy/k8s
GUARD_MIB = 2048  # past this the server is killed: the machine is shared
ENSEMBLE = "hh-harmless-ensemble"
ENV = {"RMSERVE_REQUEST_TIMEOUT_S": "300"}


def server_rss_mib(server: RunningServer) -> float:
    """What the pod's memory counts: the gunicorn master and its workers."""
    master = server.process.pid
    return rss_mib(master) + sum(rss_mib(worker) for worker in worker_pids(master))


@contextmanager
def memory_watch(server: RunningServer) -> Iterator[list[float]]:
    """The server's peak RSS (MiB) while the block runs, in a one-element list; the server is killed past GUARD_MIB."""
    peak = [server_rss_mib(server)]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            try:
                peak[0] = max(peak[0], server_rss_mib(server))
            except (OSError, LookupError):  # a worker exiting between listing and reading
                continue
            if peak[0] > GUARD_MIB:
                for worker in worker_pids(server.process.pid):
                    os.kill(worker, signal.SIGKILL)
                server.process.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield peak
    finally:
        stop.set()
        watcher.join()
    assert peak[0] <= GUARD_MIB, f"killed the server at {peak[0]:.0f} MiB"


def post(server: RunningServer, path: str, body: dict[str, object]) -> tuple[requests.Response, float, float]:
    """(answer, seconds, MiB of body)."""
    data = json.dumps(body, ensure_ascii=False).encode()
    started = time.monotonic()
    response = requests.post(
        f"{server.base_url}{path}", data=data, headers={"Content-Type": "application/json"}, timeout=300
    )
    return response, time.monotonic() - started, len(data) / MIB


def degenerate_bodies() -> Iterator[tuple[str, str, dict[str, object]]]:
    """(what, route, body): every degenerate text, repeated to about 1 MiB of body, through every way text comes in."""
    for name, text in DEGENERATE.items():
        copies = max(1, MIB // len(json.dumps(text, ensure_ascii=False).encode()))
        texts = [text] * copies
        yield name, "/v1/score", {"prompt": "How do I bake bread?", "responses": texts}
        yield name, "/v1/score", {"model": ENSEMBLE, "items": [{"prompt": text, "response": "ok"}] * copies}
        yield name, "/get_reward", {"query": [CHATML_PROMPT + text] * copies, "prompts": [CHATML_PROMPT] * copies}
        yield name, "/get_reward", {"query": [f"{CHATML_PROMPT}{text}<|im_end|>"] * copies}
        yield name, "/classify", {"input": [f"<s>[INST] How do I bake bread? [/INST]{text}</s>"] * copies}


def probe_until(server: RunningServer, stop: threading.Event, latencies: list[float]) -> None:
    """Fresh-connection GETs of /healthz every 0.1 s, as the kubelet makes them, until `stop`."""
    while not stop.wait(0.1):
        started = time.monotonic()
        response = requests.get(f"{server.base_url}/healthz", timeout=10)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200


def test_degenerate_texts_are_answered_in_time_linear_in_the_body_while_probes_answer(tmp_path: Path) -> None:
    outcomes: list[tuple[str, str, int, float, float]] = []
    latencies: list[float] = []
    with running_server(DEFAULT_REPOSITORY, tmp_path / "server.log", env=ENV) as server, memory_watch(server) as peak:
        stop = threading.Event()
        prober = threading.Thread(target=probe_until, args=(server, stop, latencies))
        prober.start()
        try:
            for name, path, body in degenerate_bodies():
                response, seconds, mib = post(server, path, body)
                outcomes.append((name, path, response.status_code, seconds, mib))
                assert response.status_code in (200, 422), (name, path, response.text[:300])
        finally:
            stop.set()
            prober.join()
    per_mib = [(seconds / mib, name, path) for name, path, _, seconds, mib in outcomes]
    slowest = max(per_mib)
    assert slowest[0] < SECONDS_PER_MIB, slowest
    assert max(latencies) < 1.0, max(latencies)
    record(
        "Degenerate texts",
        f"{len(DEGENERATE)} degenerate texts of ~65k characters ({', '.join(DEGENERATE)}), each repeated to ~1 MiB "
        f"of body, through /v1/score (group; items to the ensemble), /get_reward (with and without prompts) and "
        f"/classify: {len(outcomes)} requests, /healthz polled on fresh connections meanwhile",
        f"slowest {slowest[0]:.2f} s per MiB ({slowest[1]} via {slowest[2]}; bound {SECONDS_PER_MIB} s), "
        f"{sum(o[2] == 200 for o in outcomes)} x 200, {sum(o[2] == 422 for o in outcomes)} x 422 (texts that do "
        f"not parse as their layout); {len(latencies)} probes, slowest {max(latencies) * 1000:.0f} ms; "
        f"server RSS peak {peak[0]:.0f} MiB",
    )


# The degenerate texts a byte a character in JSON, so 127 of 65,535 characters fit one 8 MiB body.
ONE_BYTE = [
    text for text in DEGENERATE.values() if len(json.dumps(text, ensure_ascii=False).encode()) < 1.01 * len(text)
]


def long_texts(count: int, tag: str) -> list[str]:
    """`count` texts of 65,535 characters, each distinct (`tag` and its number first): prose, and degenerate texts
    a byte a character in JSON."""
    prose = "Knead the dough, let it rise overnight and bake it hot. "
    texts = [prose * 1200 if index % 2 else ONE_BYTE[index // 2 % len(ONE_BYTE)] * 2 for index in range(count)]
    return [f"{tag}{index} {text}"[:65_535] for index, text in enumerate(texts)]


def test_two_maximum_bodies_of_long_texts_stay_under_the_pod_limit(tmp_path: Path) -> None:
    figures = {}
    with running_server(DEFAULT_REPOSITORY, tmp_path / "server.log", env=ENV) as server:
        idle = server_rss_mib(server)
        for model in ("hh-harmless", ENSEMBLE):
            bodies = [
                {"model": model, "prompt": "How do I bake bread?", "responses": long_texts(127, f"body {seed}: ")}
                for seed in range(2)
            ]
            with memory_watch(server) as peak, ThreadPoolExecutor(len(bodies)) as senders:
                answers = list(senders.map(lambda body: post(server, "/v1/score", body), bodies))
            assert [answer.status_code for answer, _, _ in answers] == [200, 200], answers[0][0].text[:300]
            assert all(all(answer.json()["truncated"]) for answer, _, _ in answers)
            figures[model] = (peak[0], max(seconds for _, seconds, _ in answers), answers[0][2])
    assert all(peak < POD_LIMIT_MIB for peak, _, _ in figures.values()), figures
    record(
        "Two maximum bodies of long texts",
        "two concurrent bodies of 127 responses of 65,535 characters each (prose and degenerate texts; "
        f"{figures['hh-harmless'][2]:.1f} MiB), to hh-harmless and then to the ensemble, default repository",
        "server RSS (master and worker) "
        + "; ".join(
            f"{model}: {idle:.0f} -> {peak:.0f} MiB, answered in {seconds:.1f} s"
            for model, (peak, seconds, _) in figures.items()
        )
        + f" (pod limit {POD_LIMIT_MIB} MiB); only the window of each text that can reach the model is tokenized",
    )


def test_a_thousand_distinct_long_prompts_grow_the_server_by_at_most_300_mb(tmp_path: Path) -> None:
    per_request, requests_sent = 31, 33  # 1,023 prompts
    with running_server(DEFAULT_REPOSITORY, tmp_path / "server.log", env=ENV) as server, memory_watch(server) as peak:
        idle = server_rss_mib(server)
        for index in range(requests_sent):
            items = [{"prompt": prompt, "response": "ok"} for prompt in long_texts(per_request, f"request {index}: ")]
            response, _, _ = post(server, "/v1/score", {"model": ENSEMBLE, "items": items})
            assert response.status_code == 200, response.text[:300]
            if index == 0:
                warm = server_rss_mib(server)  # allocator pools and inference arenas at their working size
        after = server_rss_mib(server)
    growth = after - idle
    assert growth < 300, (idle, warm, after)
    record(
        "Many distinct long prompts",
        f"{per_request * requests_sent:,} distinct prompts of 65k characters in {requests_sent} requests to the "
        "ensemble (three members, each with its prompt cache), default repository",
        f"server RSS {idle:.0f} MiB idle, {warm:.0f} after the first request, {after:.0f} after all "
        f"(+{growth:.0f} MiB, bound 300; peak {peak[0]:.0f}); each cache holds at most RMSERVE_PROMPT_CACHE_BYTES",
    )
