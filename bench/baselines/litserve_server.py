"""LitServe, as its documentation sets it up for CPU with batching.

A `LitAPI` with `max_batch_size` 64 and `batch_timeout` 5 ms (its docs show 0.05 s; 5 ms keeps
single clients fast), `accelerator="cpu"` and one worker process per core
(`workers_per_device`), each with its own ONNX Runtime session of cores / workers threads.
A request is `{"items": [{"prompt", "response"}, ...]}` (LitServe batches requests; each
batch's items run in chunks of at most 64 rows), the answer `{"scores": [...]}`.
`python -m bench.baselines.litserve_server --repository R --model M --port P --instances N`
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation to build its route.

import os
from typing import Any

import litserve as ls
import numpy as np
from pydantic import BaseModel

from bench.baselines.common import arguments, load, raw_scores, session

MAX_BATCH_SIZE = 64
BATCH_TIMEOUT_S = 0.005


class Pair(BaseModel):
    prompt: str
    response: str


class ScoreRequest(BaseModel):
    items: list[Pair]


class RewardAPI(ls.LitAPI):
    def __init__(self, repository: Any, model: str, threads: int) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path="/v1/score")
        self.repository, self.model_name, self.threads = repository, model, threads

    def setup(self, device: str) -> None:
        self.model = load(self.repository, self.model_name)
        self.onnx = session(self.model, intra_op_threads=self.threads)

    def decode_request(self, request: ScoreRequest) -> list[tuple[str, str]]:
        return [(item.prompt, item.response) for item in request.items]

    def batch(self, inputs: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
        return inputs

    def predict(self, requests: list[list[tuple[str, str]]]) -> list[list[float]]:
        items = [item for request in requests for item in request]
        normalization = self.model.manifest.normalization
        scores = np.concatenate(
            [
                raw_scores(self.model, self.onnx, *zip(*items[start : start + MAX_BATCH_SIZE], strict=True))
                for start in range(0, len(items), MAX_BATCH_SIZE)
            ]
        )
        scores = (scores - normalization.mean) / normalization.std
        answers, start = [], 0
        for request in requests:
            answers.append(scores[start : start + len(request)].tolist())
            start += len(request)
        return answers

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]) -> dict[str, Any]:
        return {"scores": output}


def main() -> None:
    args = arguments(__doc__ or "")
    threads = max(1, len(os.sched_getaffinity(0)) // args.instances)
    api = RewardAPI(args.repository, args.model, threads)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.instances)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
