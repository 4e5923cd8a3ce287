"""RewardClient against a scripted local HTTP server: retries, Retry-After, budgets, batching, alignment.

The client's sleep is injected, so waits are recorded, never slept.
"""

from __future__ import annotations

import email.utils
import json
import pickle
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.live_server import free_port
from rmserve.client import Ranking, RewardClient, RewardServerError


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def echo_scores(body: Any) -> Reply:
    """A well-behaved /v1/score: one score per item, the response's length, so order is checkable."""
    return Reply(200, {"scores": [float(len(item.get("response", ""))) for item in body["items"]]})


class ScriptedServer:
    """Answers each request with the next scripted reply (a Reply, or a function of the JSON body)."""

    def __init__(self, script: list[Reply | Callable[[Any], Reply]], then: Callable[[Any], Reply] | None = None):
        self.script = list(script)
        self.then = then
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # a handler told to hang waits on this, bounded
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with server.lock:
                    server.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                    step = server.script.pop(0) if server.script else server.then
                if step is None:
                    raise AssertionError("the client sent more requests than scripted")
                reply = step if isinstance(step, Reply) else step(body)
                if reply.status == 0:  # hang until the test ends: the client's timeout must fire
                    server.release.wait(timeout=10)
                    return
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval makes shutdown() prompt, so each test's teardown takes milliseconds.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def serve(waits: list[float]) -> Iterator[Callable[..., tuple[ScriptedServer, RewardClient]]]:
    """serve(script, then=..., **client_options) -> a running scripted server and a client recording its waits."""
    servers: list[ScriptedServer] = []

    def start(script: list[Any], then: Callable[[Any], Reply] | None = None, **options: Any):
        server = ScriptedServer(script, then).__enter__()
        servers.append(server)
        options = {"retries": 3, "timeout": 5.0, "sleep": waits.append, "rng": random.Random(0), **options}
        return server, RewardClient(server.url, **options)

    yield start
    for server in servers:
        server.__exit__()


PROMPTS = ["p0", "p1", "p2"]
RESPONSES = ["a", "bb", "ccc"]


def test_score_returns_one_score_per_pair_in_order_and_sends_headers(serve, waits):
    server, client = serve([echo_scores], api_key="secret", timeout=12.5)
    assert client.score(PROMPTS, RESPONSES) == [1.0, 2.0, 3.0]
    (request,) = server.seen
    assert (request.method, request.path) == ("POST", "/v1/score")
    assert request.body == {"items": [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=False)]}
    assert request.headers["Authorization"] == "Bearer secret"
    assert len(request.headers["X-Request-ID"]) == 32
    assert request.headers["X-Timeout-Ms"] == "12500"
    assert waits == []


def test_model_is_sent_when_configured(serve):
    server, client = serve([echo_scores], model="hh-harmless")
    client.score(["p"], ["r"])
    assert server.seen[0].body["model"] == "hh-harmless"


def test_large_lists_are_split_under_the_item_limit_and_stay_in_order(serve):
    responses = ["x" * (index % 7) for index in range(1100)]
    server, client = serve([], then=echo_scores)
    scores = client.score(["p"] * len(responses), responses)
    assert [len(request.body["items"]) for request in server.seen] == [512, 512, 76]
    assert scores == [float(len(response)) for response in responses]
    assert len({request.headers["X-Request-ID"] for request in server.seen}) == 3


def test_item_limit_is_configurable(serve):
    server, client = serve([], then=echo_scores, max_items=2)
    assert client.score(PROMPTS, RESPONSES) == [1.0, 2.0, 3.0]
    assert [len(request.body["items"]) for request in server.seen] == [2, 1]


def test_an_empty_list_needs_no_request(serve):
    server, client = serve([])
    assert client.score([], []) == []
    assert server.seen == []


def test_mismatched_prompts_and_responses_are_refused_before_sending(serve):
    server, client = serve([])
    with pytest.raises(ValueError, match="2 prompts but 3 responses"):
        client.score(["a", "b"], RESPONSES)
    assert server.seen == []


def test_429_is_retried_after_retry_after_seconds_with_the_same_request_id(serve, waits):
    queue_full = Reply(
        429, {"error": {"code": "queue_full", "message": "queue full", "field": None}}, {"Retry-After": "2"}
    )
    server, client = serve([queue_full, queue_full, echo_scores], backoff_s=0.5)
    assert client.score(PROMPTS, RESPONSES) == [1.0, 2.0, 3.0]
    assert len(server.seen) == 3
    assert len(waits) == 2
    assert all(2.0 <= wait <= 2.5 for wait in waits), waits  # Retry-After, plus jitter of at most backoff_s
    assert len({request.headers["X-Request-ID"] for request in server.seen}) == 1


def test_retry_after_as_an_http_date_is_honoured(serve, waits):
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    _server, client = serve([Reply(503, {}, {"Retry-After": later}), echo_scores], backoff_s=0.1)
    client.score(["p"], ["r"])
    assert 25.0 <= waits[0] <= 31.0, waits


def test_retry_after_is_capped(serve, waits):
    _server, client = serve([Reply(503, {}, {"Retry-After": "3600"}), echo_scores], max_retry_after_s=10, backoff_s=0.1)
    client.score(["p"], ["r"])
    assert 10.0 <= waits[0] <= 10.1


def test_503_without_retry_after_backs_off_exponentially_with_jitter(serve, waits):
    not_ready = Reply(503, {"error": {"code": "not_ready", "message": "loading", "field": None}})
    _server, client = serve([not_ready] * 4 + [echo_scores], retries=5, backoff_s=1.0, max_backoff_s=6.0)
    client.score(["p"], ["r"])
    ceilings = [1.0, 2.0, 4.0, 6.0]  # 1 * 2^attempt, capped at 6
    assert len(waits) == 4
    for wait, ceiling in zip(waits, ceilings, strict=False):
        assert ceiling / 2 <= wait <= ceiling, (waits, ceilings)


def test_gives_up_after_the_retry_budget_with_a_clear_error(serve, waits):
    draining = Reply(503, {"error": {"code": "not_ready", "message": "server is draining", "field": None}})
    server, client = serve([], then=lambda body: draining, retries=3)
    with pytest.raises(RewardServerError) as raised:
        client.score(PROMPTS, RESPONSES)
    error = raised.value
    assert len(server.seen) == 4 and len(waits) == 3  # no wait after the last attempt
    assert error.status == 503 and error.attempts == 4
    assert error.request_id == server.seen[0].headers["X-Request-ID"]
    assert "failed 4 times" in str(error) and "server is draining" in str(error)


def test_connection_errors_are_retried_then_reported(waits):
    client = RewardClient(f"http://127.0.0.1:{free_port()}", retries=2, sleep=waits.append, rng=random.Random(0))
    with pytest.raises(RewardServerError, match=r"failed 3 times.*ConnectionError"):
        client.score(["p"], ["r"])
    assert len(waits) == 2


def test_a_server_that_never_answers_times_out_and_is_retried(serve, waits):
    server, client = serve([Reply(status=0), Reply(status=0)], retries=1, timeout=0.2)
    with pytest.raises(RewardServerError, match=r"failed 2 times.*(Timeout|timed out)"):
        client.score(["p"], ["r"])
    assert len(server.seen) == 2


def test_a_refusal_is_not_retried_and_names_the_field(serve, waits):
    invalid = Reply(
        422, {"error": {"code": "invalid_field", "message": "must be a string", "field": "items[1].response"}}
    )
    server, client = serve([invalid])
    with pytest.raises(RewardServerError) as raised:
        client.score(PROMPTS, RESPONSES)
    assert (raised.value.status, raised.value.code, raised.value.field) == (422, "invalid_field", "items[1].response")
    assert "items[1].response" in str(raised.value)
    assert len(server.seen) == 1 and waits == []


@pytest.mark.parametrize(
    "answer",
    [
        {"scores": [1.0, 2.0]},  # one short
        {"scores": [1.0, 2.0, 3.0, 4.0]},  # one long
        {"scores": [1.0, float("nan"), 3.0]},
        {"scores": [1.0, "2", 3.0]},
        {"scores": None},
        {},
    ],
)
def test_never_returns_a_wrong_length_or_non_finite_list(serve, answer):
    _server, client = serve([Reply(200, answer)])
    with pytest.raises(RewardServerError):
        client.score(PROMPTS, RESPONSES)


def test_a_200_that_is_not_json_is_an_error(serve):
    _server, client = serve([Reply(200, b"<html>proxy login</html>")])
    with pytest.raises(RewardServerError, match="not a JSON object"):
        client.score(["p"], ["r"])


def test_413_halves_the_request_until_it_fits(serve):
    def limit_three(body: Any) -> Reply:
        if len(body["items"]) > 3:
            return Reply(413, {"error": {"code": "payload_too_large", "message": "too many", "field": "items"}})
        return echo_scores(body)

    responses = ["r" * length for length in range(1, 9)]
    _server, client = serve([], then=limit_three, max_items=8)
    assert client.score(["p"] * 8, responses) == [float(length) for length in range(1, 9)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 30), max_items=st.integers(1, 7), short_by=st.integers(0, 1))
def test_every_call_returns_exactly_one_score_per_item_or_raises(serve, count, max_items, short_by):
    """Whatever the sizes, and even when the server drops an item, the length is right or there is an error."""

    def maybe_short(body: Any) -> Reply:
        scores = echo_scores(body).body["scores"]
        return Reply(200, {"scores": scores[: len(scores) - short_by] if scores else scores})

    _server, client = serve([], then=maybe_short, max_items=max_items)
    responses = ["y" * (index % 5) for index in range(count)]
    try:
        scores = client.score(["p"] * count, responses)
    except RewardServerError:
        assert short_by and count
    else:
        assert scores == [float(len(response)) for response in responses]


def test_rank_parses_the_ranking(serve):
    answer = {"ranking": [1, 0], "scores": [0.1, 0.9], "z_scores": [-1.0, 1.0], "pairwise": [[0.5, 0.3], [0.7, 0.5]]}
    server, client = serve([Reply(200, answer)])
    assert client.rank("p", ["a", "b"]) == Ranking([1, 0], [0.1, 0.9], [-1.0, 1.0], [[0.5, 0.3], [0.7, 0.5]])
    assert server.seen[0].path == "/v1/rank"
    assert server.seen[0].body == {"prompt": "p", "responses": ["a", "b"]}


def test_rank_refuses_a_group_over_the_item_limit(serve):
    _server, client = serve([], max_items=2)
    with pytest.raises(ValueError, match="ranked whole"):
        client.rank("p", ["a", "b", "c"])


def test_models_lists_the_served_models(serve):
    server, client = serve([Reply(200, {"object": "list", "data": [{"name": "tiny", "version": 1}]})])
    assert client.models() == [{"name": "tiny", "version": 1}]
    assert (server.seen[0].method, server.seen[0].path) == ("GET", "/v1/models")


def test_an_ensembles_reward_is_chosen_in_the_url(serve):
    server, client = serve(
        [], then=lambda body: Reply(200, {"scores": [0.5] * len(body["items"])}), model="e", reward="min"
    )
    assert client.as_reward_func()(prompts=["Hi?"], completions=["Hello."]) == [0.5]
    assert (server.seen[0].path, server.seen[0].body["model"]) == ("/v1/score?reward=min", "e")


def test_reward_func_sends_plain_prompts_as_pairs_and_conversations_as_messages(serve):
    server, client = serve([], then=lambda body: Reply(200, {"scores": [0.5] * len(body["items"])}))
    reward_func = client.as_reward_func()
    assert reward_func.__name__ == "rmserve"
    assert reward_func(prompts=["Hi?"], completions=["Hello."], completion_ids=[[1, 2]], trainer_state=None) == [0.5]
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    completion = [{"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]
    assert reward_func(prompts=[conversation], completions=[completion]) == [0.5]
    assert server.seen[0].body == {"items": [{"prompt": "Hi?", "response": "Hello."}]}
    assert server.seen[1].body == {
        "items": [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi?"},
                    {"role": "assistant", "content": "Hello."},
                ]
            }
        ]
    }


def test_reward_func_survives_pickling(serve):
    _server, client = serve([], then=lambda body: Reply(200, {"scores": [1.5] * len(body["items"])}), sleep=time.sleep)
    copy = pickle.loads(pickle.dumps(client.as_reward_func("rm")))
    assert copy.__name__ == "rm"
    assert copy(prompts=["p"], completions=["c"]) == [1.5]
