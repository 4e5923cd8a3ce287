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

Needs `rmserve.client`: either rmserve installed (`pip install rmserve`, no extra), or only the
client file, rmserve's `service/rmserve/client.py`, copied next to this file as `client.py` (it needs
nothing but `requests`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

COPIED_CLIENT = Path(__file__).with_name("client.py")


def client_module() -> ModuleType:
    """`rmserve.client` if rmserve is installed, else the client file copied next to this one."""
    if importlib.util.find_spec("rmserve") is not None:
        return importlib.import_module("rmserve.client")
    # veRL loads this file by path, so its folder is not on sys.path: load the copy by path too.
    spec = importlib.util.spec_from_file_location("rmserve_client", COPIED_CLIENT)
    if spec is None or spec.loader is None or not COPIED_CLIENT.is_file():
        raise ImportError(
            f"rmserve's client is neither installed nor at {COPIED_CLIENT}: pip install rmserve, "
            "or copy rmserve's service/rmserve/client.py there"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@cache
def reward_client() -> Any:
    """One pooled `RewardClient` per veRL worker process."""
    return client_module().RewardClient(
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
