"""The reliability scenarios of issue 10 against a real `rmserve serve` (gunicorn), under load.

Slow: each starts a server and drives it with tens of concurrent clients for seconds. Every
test records what it measured (tests/reliability_report.py; `make reliability` writes docs/reliability.json).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from bench.live_server import running_server, wait_until
from tests.degenerate import degenerate_text
from tests.load import Load, percentile, rss_mib, worker_pids
from tests.reliability_report import record
from tests.tiny_model import write_slow_version, write_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GRACEFUL_TIMEOUT_S = 30
BREAD = {"prompt": "How do I bake bread?", "responses": ["Knead and bake.", "No idea."]}
TEXTS = [
    "Knead the dough, let it rise overnight and bake it hot.",
    "I cannot help with that.",
    "Paris is the capital of France, on the Seine, with about two million people in the city proper.",
    "Mix flour and water.",
]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny` (instant) and `slow` (a dense stack: real milliseconds per call, so queues form)."""
    root = tmp_path_factory.mktemp("reliability-repository")
    write_version(root / "tiny" / "1")
    write_slow_version(root / "slow" / "1", "slow", layers=6, width=384)
    return root


def score_body(model: str = "slow") -> Callable[[int, int], dict[str, object]]:
    def body(client: int, sequence: int) -> dict[str, object]:
        return {
            "model": model,
            "prompt": "How do I bake bread?",
            "responses": [TEXTS[(client + sequence) % len(TEXTS)]],
        }

    return body


def hostile_body(client: int, sequence: int) -> dict[str, object]:
    """Every other request a degenerate response of ~65k characters (runs of whitespace, repeated markers, ...)."""
    text = degenerate_text(client + sequence) if (client + sequence) % 2 else TEXTS[client % len(TEXTS)]
    return {"model": "slow", "prompt": "How do I bake bread?", "responses": [text]}


def metric(base_url: str, name: str, session: requests.Session | None = None) -> float:
    text = (session or requests).get(f"{base_url}/metrics", timeout=10).text
    values = [
        float(line.split()[-1]) for line in text.splitlines() if re.match(rf"{re.escape(name)}(\{{.*\}})? ", line)
    ]
    return sum(values)


def first_answer_that_is_not_ready(session: requests.Session, url: str) -> requests.Response:
    """Poll /readyz on one kept-alive connection until it stops answering 200 (the worker got SIGTERM)."""
    give_up = time.monotonic() + 10
    while True:
        response = session.get(url, timeout=5)
        if response.status_code != 200 or time.monotonic() > give_up:
            return response
        time.sleep(0.005)


def test_sigterm_under_load_loses_no_accepted_request(repository: Path, tmp_path: Path) -> None:
    clients = 32
    env = {"RMSERVE_THREADS": str(clients), "RMSERVE_GRACEFUL_TIMEOUT_S": str(GRACEFUL_TIMEOUT_S)}
    with running_server(repository, tmp_path / "server.log", env=env) as server:
        load = Load(f"{server.base_url}/v1/score", clients, score_body()).start()
        wait_until(lambda: load.count(200) >= 4 * clients, 60, "the load to warm up")
        probe = requests.Session()
        assert probe.get(f"{server.base_url}/readyz", timeout=5).status_code == 200  # keep-alive, open
        scrape = requests.Session()
        assert metric(server.base_url, "rmserve_ready", scrape) == 1
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        readyz_after = first_answer_that_is_not_ready(probe, f"{server.base_url}/readyz")
        not_ready_after = time.monotonic() - signalled
        ready_after = metric(server.base_url, "rmserve_ready", scrape)
        exit_code = server.process.wait(timeout=GRACEFUL_TIMEOUT_S + 15)
        exited_after = time.monotonic() - signalled
        outcomes = load.stop()
    answered = [outcome for outcome in outcomes if outcome.status is not None]
    in_flight = [outcome for outcome in answered if outcome.started < signalled < outcome.finished]
    lost = [outcome for outcome in outcomes if outcome.error in ("reset", "timeout")]
    unexpected = [outcome.status for outcome in answered if outcome.status not in (200, 503)]
    assert readyz_after.status_code == 503, server.log()
    assert not_ready_after < 1.0  # the signal travels master -> worker; then the very next probe says 503
    assert ready_after == 0
    assert exit_code == 0, server.log()
    assert exited_after < GRACEFUL_TIMEOUT_S, server.log()
    assert not lost, f"{len(lost)} requests lost: {lost[:5]}\n{server.log()[-3000:]}"
    assert not unexpected, unexpected
    assert all(outcome.status == 200 for outcome in in_flight)
    record(
        "Graceful shutdown: SIGTERM under load",
        f"{clients} closed-loop clients on a slow model, SIGTERM to the gunicorn master",
        f"0 of {len(answered)} answered requests lost ({len(in_flight)} in flight at the signal, all 200; "
        f"{sum(o.status == 503 for o in answered)} refused with 503 while draining); /readyz 503 "
        f"{not_ready_after * 1000:.0f} ms after the signal, rmserve_ready 0 on the next scrape; "
        f"exit 0 after {exited_after:.1f} s "
        f"(grace {GRACEFUL_TIMEOUT_S} s)",
    )


def probe_latencies(base_url: str, seconds: float) -> list[float]:
    """Fresh-connection GETs of /healthz and /readyz, as the kubelet makes them; seconds each took."""
    latencies = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for path in ("/healthz", "/readyz"):
            started = time.monotonic()
            response = requests.get(f"{base_url}{path}", timeout=5)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, (path, response.text)
        time.sleep(0.1)
    return latencies


def test_probes_answer_within_a_second_while_the_model_is_saturated(repository: Path, tmp_path: Path) -> None:
    threads, clients = 8, 24
    with running_server(repository, tmp_path / "server.log", env={"RMSERVE_THREADS": str(threads)}) as server:
        load = Load(f"{server.base_url}/v1/score", clients, score_body()).start()
        wait_until(lambda: load.count(200) >= clients, 60, "the load to warm up")
        latencies = probe_latencies(server.base_url, 5.0)
        outcomes = load.stop()
    statuses = {outcome.status for outcome in outcomes}
    assert statuses <= {200, 429}, statuses
    assert max(latencies) < 1.0, max(latencies)
    record(
        "Probes stay live",
        f"{clients} closed-loop clients on a slow model with RMSERVE_THREADS={threads} (all busy); "
        "/healthz and /readyz on fresh connections every 0.1 s for 5 s",
        f"{len(latencies)} probes, all 200, slowest {max(latencies) * 1000:.0f} ms (bound 1 s); "
        f"scoring meanwhile: {sum(o.status == 200 for o in outcomes)} x 200, "
        f"{sum(o.status == 429 for o in outcomes)} x 429 (2 more threads kept for probes)",
    )


def test_overload_gets_honest_429s_and_accepted_requests_finish(repository: Path, tmp_path: Path) -> None:
    clients = 64
    env = {"RMSERVE_THREADS": "16", "RMSERVE_MAX_QUEUE_TOKENS": "8192", "RMSERVE_MAX_BATCH_TOKENS": "4096"}
    with running_server(repository, tmp_path / "server.log", env=env) as server:
        (worker,) = worker_pids(server.process.pid)
        idle_rss = rss_mib(worker)
        load = Load(f"{server.base_url}/v1/score", clients, hostile_body, timeout_s=60).start()
        time.sleep(10)
        peak_rss = rss_mib(worker)
        outcomes = load.stop()
        assert requests.post(f"{server.base_url}/v1/score", json={"model": "tiny", **BREAD}, timeout=10).ok
    accepted = [outcome for outcome in outcomes if outcome.status == 200]
    refused = [outcome for outcome in outcomes if outcome.status == 429]
    assert all(outcome.status in (200, 429) for outcome in outcomes), {o.status for o in outcomes}
    assert accepted and refused
    retry_after = sorted(int(outcome.retry_after or 0) for outcome in refused)
    assert retry_after[0] >= 1 and retry_after[-1] <= 30, retry_after
    first_refusal = min(refused, key=lambda outcome: outcome.started)
    assert first_refusal.retry_after is not None
    p99 = percentile([outcome.latency for outcome in accepted], 0.99)
    assert p99 < 30.0
    record(
        "Overload",
        f"{clients} closed-loop clients (no pause) on a slow model, every other request a degenerate response of "
        f"~65k characters, queue {env['RMSERVE_MAX_QUEUE_TOKENS']} tokens, RMSERVE_THREADS=16, for 10 s",
        f"{len(accepted)} x 200 (p50 {percentile([o.latency for o in accepted], 0.5) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms), {len(refused)} x 429 with Retry-After {retry_after[0]}-{retry_after[-1]} s "
        f"(the very first 429: {first_refusal.retry_after} s), 0 x 5xx; "
        f"worker RSS {idle_rss:.0f} -> {peak_rss:.0f} MiB",
    )


def test_a_deadline_passing_in_the_queue_is_504_and_never_scored(repository: Path, tmp_path: Path) -> None:
    clients = 16
    with running_server(repository, tmp_path / "server.log", env={"RMSERVE_THREADS": "32"}) as server:
        load = Load(f"{server.base_url}/v1/score", clients, score_body()).start()
        wait_until(lambda: load.count(200) >= clients, 60, "the load to warm up")
        scored_before = metric(server.base_url, "rmserve_items_scored_total")
        answered_before = load.count(200)
        hurried = [
            requests.post(
                f"{server.base_url}/v1/score",
                json={"model": "slow", "prompt": "Quick!", "responses": ["late " * 40] * 4},
                headers={"X-Timeout-Ms": "1"},
                timeout=10,
            )
            for _ in range(20)
        ]
        outcomes = load.stop()
        scored_after = metric(server.base_url, "rmserve_items_scored_total")
        answered_after = load.count(200)
        expired = metric(server.base_url, "rmserve_items_failed_total")
    statuses = [response.status_code for response in hurried]
    assert set(statuses) <= {504}, statuses
    assert all(response.json()["error"]["code"] == "deadline_exceeded" for response in hurried)
    # Every item scored meanwhile belongs to the load (one item per request); none of the 80 hurried ones.
    in_flight_margin = clients  # load requests scored but not yet answered when the counters were read
    assert scored_after - scored_before <= answered_after - answered_before + in_flight_margin
    assert all(outcome.status == 200 for outcome in outcomes)
    record(
        "Deadlines",
        f"20 requests of 4 items with X-Timeout-Ms: 1 into a queue kept busy by {clients} clients",
        f"20 of 20 answered 504 deadline_exceeded; items scored meanwhile {scored_after - scored_before:.0f}, "
        f"load requests answered {answered_after - answered_before} (+ at most {in_flight_margin} in flight): "
        f"none of the 80 hurried items scored; {expired:.0f} items counted failed/cancelled",
    )


def test_kill_9_of_a_worker_under_load_fails_fast_and_scoring_resumes(repository: Path, tmp_path: Path) -> None:
    clients = 16
    with running_server(repository, tmp_path / "server.log", env={"RMSERVE_THREADS": "32"}) as server:
        load = Load(f"{server.base_url}/v1/score", clients, score_body(), timeout_s=60, stop_when_refused=False)
        load.start()
        wait_until(lambda: load.count(200) >= 2 * clients, 60, "the load to warm up")
        (victim,) = worker_pids(server.process.pid)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: any(o.status == 200 and o.started > killed for o in load.outcomes), 60, "scoring to resume")
        resumed = min(o.finished for o in load.outcomes if o.status == 200 and o.started > killed) - killed
        (replacement,) = worker_pids(server.process.pid)
        time.sleep(2)
        outcomes = load.stop()
    failed = [o for o in outcomes if o.status is None or o.status >= 500]
    in_flight = [o for o in failed if o.started < killed]
    assert replacement != victim
    assert all(o.latency < 10 for o in failed), [o.latency for o in failed]  # an error, never a hang
    assert all(o.status in (200, None) for o in outcomes), {o.status for o in outcomes}
    assert resumed < 60
    record(
        "Worker crash (kill -9)",
        f"SIGKILL to the only gunicorn worker under {clients} closed-loop clients",
        f"{len(in_flight)} requests in flight failed with a connection error after at most "
        f"{max((o.finished - killed for o in in_flight), default=0) * 1000:.0f} ms (no hang); worker {victim} replaced "
        f"by {replacement}; first 200 after {resumed:.1f} s; {len(failed)} failed in all, the rest 200",
    )


SOAK_S = float(os.environ.get("RMSERVE_TEST_SOAK_S", "150"))  # a longer soak: RMSERVE_TEST_SOAK_S=3600 make test-slow


def mixed_body(client: int, sequence: int) -> dict[str, object]:
    """Single items, groups, conversations, over-long texts and degenerate ones, as RL trainers send them."""
    text = TEXTS[(client + sequence) % len(TEXTS)]
    shape = (client * 7 + sequence) % 6
    if shape == 4:
        return {"model": "slow", "prompt": "Name a city.", "responses": [degenerate_text(client + sequence), text]}
    if shape == 5:
        degenerate = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": degenerate_text(sequence)}]
        return {"model": "slow", "items": [{"messages": degenerate}]}
    if shape == 0:
        return {"model": "slow", "items": [{"prompt": "How do I bake bread?", "response": text}]}
    if shape == 1:
        return {"model": "slow", "prompt": "Name a city.", "responses": [text, *TEXTS][:6]}
    if shape == 2:
        conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": text}]
        return {"model": "slow", "items": [{"messages": conversation}, {"prompt": "Hi", "response": text}]}
    return {"model": "slow", "items": [{"prompt": "Tell me everything. " * 40, "response": text * 8}]}


def test_soak_at_70_percent_of_capacity_stays_flat(repository: Path, tmp_path: Path) -> None:
    clients = 16
    with running_server(repository, tmp_path / "server.log", env={"RMSERVE_THREADS": str(clients)}) as server:
        (worker,) = worker_pids(server.process.pid)
        saturating = Load(f"{server.base_url}/v1/score", clients, mixed_body).start()
        time.sleep(3)
        measured_from, counted = time.monotonic(), saturating.count(200)
        time.sleep(8)
        capacity = (saturating.count(200) - counted) / (time.monotonic() - measured_from)  # requests/s
        saturating.stop()
        load = Load(f"{server.base_url}/v1/score", clients, mixed_body, interval_s=clients / (0.7 * capacity)).start()
        started = time.monotonic()
        rss: list[float] = []
        while time.monotonic() - started < SOAK_S:
            time.sleep(5)
            rss.append(rss_mib(worker))
        outcomes = load.stop()
    offered = len(outcomes) / SOAK_S
    third = SOAK_S / 3
    early = [o.latency for o in outcomes if o.started < started + third]
    late = [o.latency for o in outcomes if o.started >= started + 2 * third]
    settled = rss[len(rss) // 5]  # after the first fifth: allocator pools and caches have grown
    assert all(outcome.status == 200 for outcome in outcomes), {o.status for o in outcomes}
    assert max(rss) - settled < 50, rss  # MiB: flat, not growing with requests served
    # Generous: other work on a shared CI machine moves latency; a leak or a growing queue moves it more.
    assert percentile(late, 0.5) < 5 * percentile(early, 0.5) + 0.5
    assert percentile(late, 0.99) < 5 * percentile(early, 0.99) + 1.0
    record(
        "Soak at ~70 % of capacity",
        f"capacity measured first ({capacity:.1f} requests/s, mixed shapes: single items, groups of 6, "
        f"conversations, over-long texts, degenerate texts of ~65k characters); then {clients} paced clients at "
        f"70 % of it for {SOAK_S:.0f} s (RMSERVE_TEST_SOAK_S)",
        f"{len(outcomes)} requests ({offered:.1f}/s), all 200; worker RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB "
        f"(max {max(rss):.0f}); p50/p99 latency first third {percentile(early, 0.5) * 1000:.0f}/"
        f"{percentile(early, 0.99) * 1000:.0f} ms, last third {percentile(late, 0.5) * 1000:.0f}/"
        f"{percentile(late, 0.99) * 1000:.0f} ms",
    )
