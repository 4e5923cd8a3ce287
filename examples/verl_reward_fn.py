"""veRL custom reward function: each rollout is scored by an rmserve server.

veRL's own reward-model path starts vLLM servers for a Hugging Face checkpoint; an rmserve
model is an ONNX export behind HTTP, so veRL reaches it through `custom_reward_function`
(see verl_reward_model.yaml next to this file). veRL calls `compute_score` once per sample
with the decoded response; the prompt comes from the sample's `extra_info`, which your
data preprocessing fills: `extra_info["prompt"]` as chat messages (`[{"role", "content"}]`,
what veRL's `raw_prompt` holds) or as text, or `extra_info["question"]` as text (veRL's
GSM8K preprocessing writes that one).

The server renders the conversation in the reward model's own input format, as veRL's
DisRM path does with the reward model's chat template, and returns the normalized score.

Settings (environment of the veRL workers): REWARD_SERVER_URL (default http://127.0.0.1:8000),
REWARD_SERVER_API_KEY, REWARD_SERVER_MODEL.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from rmserve.client import RewardClient  # or copy service/client.py (rmserve.client) here: it needs only requests


@cache
def reward_client() -> RewardClient:
    """One pooled client per veRL worker process."""
    return RewardClient(
        os.environ.get("REWARD_SERVER_URL", "http://127.0.0.1:8000"),
        api_key=os.environ.get("REWARD_SERVER_API_KEY"),
        model=os.environ.get("REWARD_SERVER_MODEL"),
        timeout=120.0,
        retries=8,
    )


def rollout_item(solution_str: str, extra_info: dict[str, Any] | None) -> dict[str, Any]:
    """The rollout as a `/v1/score` item: the prompt from `extra_info`, the response veRL decoded."""
    info = extra_info or {}
    prompt = info.get("prompt", info.get("question"))
    if prompt is None:
        raise ValueError(
            "rmserve needs the prompt: put it in extra_info['prompt'] (chat messages or text) "
            "or extra_info['question'] when preprocessing the data"
        )
    if isinstance(prompt, str):
        return {"prompt": prompt, "response": solution_str}
    return {"messages": [*list(prompt), {"role": "assistant", "content": solution_str}]}


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None, **kwargs: Any
) -> float:
    """veRL's reward function signature; the reward is the reward model's normalized score."""
    return reward_client().score_items([rollout_item(solution_str, extra_info)])[0]
