"""The `/v1/score` answers behind a `RewardClient`'s scores, read off its HTTP session."""

from __future__ import annotations

from typing import Any

import requests

from rmserve.client import RewardClient


class AnswerLog:
    """Keeps every 200 answer of `/v1/score` that `client` receives (a `requests` response hook)."""

    def __init__(self, client: RewardClient):
        self.answers: list[dict[str, Any]] = []
        client.session.hooks["response"].append(self._keep)

    def _keep(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code == 200 and response.request.path_url.startswith("/v1/score"):
            self.answers.append(response.json())

    def take(self) -> list[dict[str, Any]]:
        """The answers since the last take, in order (one per request the client split the items into)."""
        answers, self.answers = self.answers, []
        return answers


def column(answers: list[dict[str, Any]], key: str) -> list[Any] | None:
    """One per-item column (`flags`, `ood_distances`, an ensemble's `std`) over a call's answers; None if absent."""
    if any(answer.get(key) is None for answer in answers):
        return None
    return [value for answer in answers for value in answer[key]]
