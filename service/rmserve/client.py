"""A client for rmserve that an RL trainer can lean on for days.

Pooled connections, deadlines, retries with backoff and jitter on 429/502/503/504 and connection
errors (honouring `Retry-After`), request IDs, and large lists split into requests under the
server's item limit. It returns exactly one score per item, in order, or raises
`RewardServerError`: never a list of the wrong length. It needs `requests` and the standard
library only, so a trainer can also copy this one file.

    client = RewardClient("http://rm:8000", api_key="...")
    client.score(["How do I bake bread?"], ["Mix flour, water, yeast and salt."])   # -> [0.83]
    GRPOTrainer(..., reward_funcs=[client.as_reward_func()])
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

DEFAULT_MAX_ITEMS = 512  # the server's default RMSERVE_MAX_ITEMS
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # queue full, proxy trouble, not ready/draining, deadline passed
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)

Item = Mapping[str, Any]  # {"prompt", "response"} or {"messages": [{"role", "content"}, ...]}


class RewardServerError(Exception):
    """The server refused a request (4xx), answered nonsense, or still failed after the retry budget."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.request_id = request_id
        self.attempts = attempts


@dataclass(frozen=True)
class Ranking:
    """`/v1/rank` for one group: indices best first, scores, z-scores within the group, P(i over j)."""

    ranking: list[int]
    scores: list[float]
    z_scores: list[float]
    pairwise: list[list[float]]


class RewardClient:
    """Scores (prompt, response) pairs with an rmserve server at `url` (e.g. `http://rm:8000`)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        *,
        model: str | None = None,
        reward: str | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if max_items < 1 or retries < 0 or timeout <= 0:
            raise ValueError("need max_items >= 1, retries >= 0 and timeout > 0")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.model = model
        self.reward = reward  # an ensemble's reward: mean, conservative or min (`?reward=`); None = its own setting
        self.max_items = max_items
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.pool_size = pool_size
        self.sleep = sleep  # injected so tests record the waits instead of waiting
        self.rng = rng or random.Random()
        self.session = self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = "rmserve-client/0.1"
        if self.api_key:
            session.headers["Authorization"] = f"Bearer {self.api_key}"
        return session

    # Picklable (trainers may ship the reward function to other processes): the session is rebuilt there.
    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "session"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.session = self._new_session()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One normalized score per (prompt, response) pair, in order."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
        return self.score_items(
            [{"prompt": prompt, "response": response} for prompt, response in zip(prompts, responses, strict=False)]
        )

    def score_items(self, items: Sequence[Item]) -> list[float]:
        """Score items of either form (`/v1/score`'s items), split into requests of at most `max_items`."""
        scores: list[float] = []
        for start in range(0, len(items), self.max_items):
            scores.extend(self._score_chunk(list(items[start : start + self.max_items])))
        if len(scores) != len(items):  # unreachable unless a chunk check is broken; never hand back misaligned rewards
            raise RewardServerError(f"got {len(scores)} scores for {len(items)} items")
        return scores

    def _score_chunk(self, items: list[Item]) -> list[float]:
        try:
            answer = self._post("/v1/score", {"items": items})
        except RewardServerError as error:
            # A server with a lower item or body limit than assumed: halve the request until it fits.
            if error.status == 413 and len(items) > 1:
                middle = len(items) // 2
                return self._score_chunk(items[:middle]) + self._score_chunk(items[middle:])
            raise
        return _numbers(answer.get("scores"), "scores", len(items))

    def rank(self, prompt: str, responses: Sequence[str]) -> Ranking:
        """Rank one group of responses to `prompt` (one request: a group is never split)."""
        if len(responses) > self.max_items:
            raise ValueError(f"{len(responses)} responses exceed max_items={self.max_items}; a group is ranked whole")
        answer = self._post("/v1/rank", {"prompt": prompt, "responses": list(responses)})
        count = len(responses)
        pairwise = answer.get("pairwise")
        if not isinstance(pairwise, list) or len(pairwise) != count:
            raise RewardServerError(f"/v1/rank answered a malformed pairwise matrix for {count} responses")
        return Ranking(
            ranking=[int(index) for index in _numbers(answer.get("ranking"), "ranking", count)],
            scores=_numbers(answer.get("scores"), "scores", count),
            z_scores=_numbers(answer.get("z_scores"), "z_scores", count),
            pairwise=[_numbers(row, "pairwise", count) for row in pairwise],
        )

    def models(self) -> list[dict[str, Any]]:
        """The served models (`GET /v1/models`): name, version, sha256, normalization, evaluation."""
        return list(self._call("GET", "/v1/models", None)["data"])

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Drift telemetry of one worker's window (`GET /v1/models/<name>/stats`)."""
        return self._call("GET", f"/v1/models/{self._model_name(model)}/stats", None)

    def review(self, model: str | None = None) -> list[dict[str, Any]]:
        """The review buffer's ranking records (`GET /v1/models/<name>/review`; the server must enable it)."""
        try:
            return list(self._call("GET", f"/v1/models/{self._model_name(model)}/review", None)["records"])
        except RewardServerError as error:
            if error.code != "not_enabled":
                raise
            raise RewardServerError(
                f"{self.url} keeps no review buffer: start the server with RMSERVE_REVIEW_PROMPTS set to the prompts "
                "to keep per model and worker, e.g. RMSERVE_REVIEW_PROMPTS=256 (off by default: it retains texts)",
                status=error.status,
                code=error.code,
                request_id=error.request_id,
                attempts=error.attempts,
            ) from None

    def _model_name(self, model: str | None) -> str:
        """`model`, else the client's model, else the server's default, quoted for a URL path."""
        name = model or self.model or next(card["name"] for card in self.models() if card["default"])
        return quote(str(name), safe="")

    def as_reward_func(self, name: str = "rmserve") -> RewardFunction:
        """A TRL reward function: `GRPOTrainer(reward_funcs=[client.as_reward_func()])`."""
        return RewardFunction(self, name)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.model is not None:
            body = {"model": self.model, **body}
        if self.reward is not None:
            path += f"?reward={quote(self.reward, safe='')}"
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One logical request: retried on transient failures under one request ID, within the budget."""
        request_id = uuid.uuid4().hex
        # The server drops work whose deadline passed, so it never scores what this client gave up on.
        headers = {"X-Request-ID": request_id, "X-Timeout-Ms": str(int(self.timeout * 1000))}
        attempts = self.retries + 1
        last_failure, last_status = "", None
        for attempt in range(attempts):
            try:
                response = self.session.request(
                    method, self.url + path, json=body, headers=headers, timeout=self.timeout
                )
            except TRANSIENT_ERRORS as error:
                last_failure, last_status = f"{type(error).__name__}: {error}", None
                wait = self._backoff(attempt)
            else:
                if response.status_code == 200:
                    return _json_object(response, request_id)
                if response.status_code not in RETRY_STATUSES:
                    raise _refusal(response, request_id, attempt + 1)
                last_failure, last_status = (
                    f"HTTP {response.status_code}: {_error_message(response)}",
                    response.status_code,
                )
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
                if retry_after is None:
                    wait = self._backoff(attempt)
                else:
                    wait = min(retry_after, self.max_retry_after_s) + self.rng.uniform(0, self.backoff_s)
            if attempt + 1 < attempts:
                self.sleep(wait)
        raise RewardServerError(
            f"{method} {self.url}{path} failed {attempts} times (request {request_id}); last: {last_failure}",
            status=last_status,
            request_id=request_id,
            attempts=attempts,
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2^attempt, capped."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


class RewardFunction:
    """TRL's reward function signature: `(prompts, completions, **kwargs) -> list[float]`.

    Plain prompts and completions are strings; conversational ones are lists of `{"role",
    "content"}` messages, scored as conversations (the server renders them in the model's format).
    """

    def __init__(self, client: RewardClient, name: str):
        self.client = client
        self.__name__ = name  # TRL logs rewards under the function's name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.client.score_items(
            [trl_item(prompt, completion) for prompt, completion in zip(prompts, completions, strict=False)]
        )


def trl_item(prompt: Any, completion: Any) -> Item:
    """One TRL (prompt, completion) as a `/v1/score` item."""
    if isinstance(prompt, str) and isinstance(completion, str):
        return {"prompt": prompt, "response": completion}
    turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    answer = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return {"messages": [{"role": message["role"], "content": _text(message["content"])} for message in turns + answer]}


def _text(content: Any) -> str:
    """Message content as text; multimodal content parts keep their text parts."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return str(content)


def _numbers(values: Any, what: str, count: int) -> list[float]:
    """`values` as exactly `count` finite numbers, or RewardServerError: a trainer never gets misaligned rewards."""
    if not isinstance(values, list) or len(values) != count:
        size = len(values) if isinstance(values, list) else "no"
        raise RewardServerError(f"server answered {size} {what} for {count} items")
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RewardServerError(f"server answered a non-finite or non-numeric {what} value: {value!r}")
        numbers.append(float(value))
    return numbers


def _json_object(response: requests.Response, request_id: str) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise RewardServerError(
            f"{response.url} answered 200 with a body that is not a JSON object: {response.text[:200]!r}",
            status=response.status_code,
            request_id=request_id,
        )
    return answer


def _error_detail(response: requests.Response) -> dict[str, Any]:
    """The server's `{"error": {"code", "message", "field"}}`, or {} when the body is something else."""
    try:
        detail = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return detail if isinstance(detail, dict) else {}


def _error_message(response: requests.Response) -> str:
    detail = _error_detail(response)
    if "message" not in detail:
        return response.text[:200] or response.reason
    field = f" (field {detail['field']})" if detail.get("field") else ""
    return f"{detail.get('code')}: {detail['message']}{field}"


def _refusal(response: requests.Response, request_id: str, attempts: int) -> RewardServerError:
    """A non-retryable answer (bad request, auth, unknown model, too large) as an error naming the field."""
    detail = _error_detail(response)
    return RewardServerError(
        f"{response.request.method} {response.url} refused with HTTP {response.status_code} "
        f"(request {request_id}): {_error_message(response)}",
        status=response.status_code,
        code=detail.get("code"),
        field=detail.get("field"),
        request_id=request_id,
        attempts=attempts,
    )


def _retry_after_s(header: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
