"""The labelling page through Flask's test client: leases, escaping, saving by position shown, keys and names."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from rmserve.labels.store import LabelStore
from rmserve.labels.tasks import NewTask

HOSTILE = '<script>alert("owned")</script><b>bold</b> & "quotes"'


@pytest.fixture
def label_app(make_app: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_app(labelling=True, data_dir=tmp_path / "data")


def store_of(app: Flask) -> LabelStore:
    store = app.extensions["rmserve"].labels
    assert store is not None
    return store


def shown(page: str) -> tuple[int, str, list[str]]:
    """(task id, lease token, responses in the order shown) from the page's HTML."""
    task = re.search(r'data-task="(\d+)" data-token="(\w+)"', page)
    assert task is not None, page
    responses = re.findall(r'<span class="badge">\d+</span><div class="text">(.*?)</div>', page, re.S)
    return int(task[1]), task[2], responses


def test_the_page_is_off_unless_labelling_is_on(client: FlaskClient) -> None:
    assert client.get("/label").status_code == 404


def test_keys_off_asks_for_a_name_then_shows_a_task(label_app: Flask) -> None:
    store_of(label_app).add([NewTask("Say hi", ("hello", "hi there", "greetings"))])
    client = label_app.test_client()
    assert 'name="labeller"' in client.get("/label").text
    page = client.get("/label?labeller=ana").text
    _, _, responses = shown(page)
    assert sorted(responses) == ["greetings", "hello", "hi there"]
    assert '<span id="left">1</span> left for you' in page


def test_responses_and_prompts_are_text_never_markup(label_app: Flask) -> None:
    store_of(label_app).add([NewTask(HOSTILE, (HOSTILE, "plain"))])
    page = label_app.test_client().get("/label?labeller=ana").text
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quotes&#34;" in page
    assert page.count("&lt;script&gt;") == 2  # the prompt and the response


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_ordering_saved_by_position_shown_is_stored_best_first(label_app: Flask) -> None:
    store = store_of(label_app)
    store.add([NewTask("Which is kind?", ("rude", "kind", "neutral"))])
    client = label_app.test_client()
    ordered_before = metric("rmserve_label_answers_total", outcome="ordered")
    task_id, token, responses = shown(client.get("/label?labeller=ana").text)
    assert metric("rmserve_label_tasks", state="leased") == 1
    order = [responses.index(text) for text in ("kind", "neutral", "rude")]
    answer = client.post("/label/answers", json={"task_id": task_id, "token": token, "order": order, "labeller": "ana"})
    assert answer.status_code == 200 and answer.json == {"saved": True, "remaining": 0}
    (ordering,) = store.orderings()
    assert ordering.ranked_responses() == ["kind", "neutral", "rude"]
    assert metric("rmserve_label_answers_total", outcome="ordered") == ordered_before + 1
    assert (metric("rmserve_label_tasks", state="leased"), metric("rmserve_label_tasks", state="done")) == (0, 1)
    assert "Nothing left for you to order" in client.get("/label?labeller=ana").text


def test_two_labellers_get_different_tasks(label_app: Flask) -> None:
    store_of(label_app).add([NewTask("p", ("a", "b")), NewTask("q", ("c", "d"))])
    client = label_app.test_client()
    first, _, _ = shown(client.get("/label?labeller=ana").text)
    second, _, _ = shown(client.get("/label?labeller=bob").text)
    assert first != second


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"task_id": 1, "token": "t", "order": [0, 0], "labeller": "ana"}, "order", 422),
        ({"task_id": 1, "token": "t", "order": "first", "labeller": "ana"}, "order", 422),
        ({"task_id": 1, "token": "t", "order": [0, 1]}, "labeller", 422),
        ({"task_id": 1, "order": [0, 1], "labeller": "ana"}, "token", 422),
        ({"task_id": 1, "token": "wrong", "order": [0, 1], "labeller": "ana"}, None, 409),
    ],
)
def test_a_bad_answer_is_refused_naming_the_field(
    label_app: Flask, body: dict[str, object], field: str | None, status: int
) -> None:
    store = store_of(label_app)
    store.add([NewTask("p", ("a", "b"))])
    lease = store.lease("ana")
    assert lease is not None
    if body.get("token") == "t":
        body["token"] = lease.token
    answer = label_app.test_client().post("/label/answers", json=body)
    assert answer.status_code == status
    assert answer.json is not None and answer.json["error"]["field"] == field


def test_with_keys_the_labeller_is_the_key_signed_in_by_cookie(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(labelling=True, data_dir=tmp_path / "data", api_keys=("alpha-key", "beta-key"))
    store_of(app).add([NewTask("p", ("a", "b"))])
    client = app.test_client()
    refused = client.get("/label")
    assert refused.status_code == 401 and "/label/login" in refused.json["error"]["message"]  # type: ignore[index]
    assert client.post("/label/login", data={"key": "guess"}).status_code == 401
    signed_in = client.post("/label/login", data={"key": "alpha-key"})
    assert signed_in.status_code == 303 and signed_in.headers["Location"].endswith("/label")
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/label" in cookie
    task_id, token, _ = shown(client.get("/label").text)
    answer = client.post("/label/answers", json={"task_id": task_id, "token": token, "order": [1, 0]})
    assert answer.status_code == 200
    (ordering,) = store_of(app).orderings()
    assert ordering.labeller.startswith("key:") and "alpha" not in ordering.labeller
    assert client.get("/v1/models").status_code == 401  # the cookie opens the labelling page, nothing else
