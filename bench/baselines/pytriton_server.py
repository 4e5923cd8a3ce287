"""PyTriton (NVIDIA's Triton Inference Server behind a Python function), as NeMo-Aligner serves reward models.

Configured as PyTriton's documentation shows: a `@batch` inference function bound with Triton's
dynamic batcher (`max_batch_size` 64, `max_queue_delay_microseconds` 100) and one model instance
per CPU core (a list of inference callables; they share one ONNX Runtime session whose runs use
one thread each). Clients speak the KServe v2 protocol: BYTES inputs `prompt` and `response`
of shape [n, 1], FP32 output `rewards` [n, 1].
`python -m bench.baselines.pytriton_server --repository R --model M --port P --instances N`
"""

from __future__ import annotations

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.baselines.common import arguments, load, raw_scores, session
from bench.live_server import free_port

MAX_BATCH_SIZE = 64
QUEUE_DELAY_US = 100


def main() -> None:
    args = arguments(__doc__ or "")
    model = load(args.repository, args.model)
    onnx = session(model, intra_op_threads=1)

    @batch
    def infer(prompt: np.ndarray, response: np.ndarray) -> dict[str, np.ndarray]:
        prompts = [value.decode("utf-8") for value in prompt[:, 0]]
        responses = [value.decode("utf-8") for value in response[:, 0]]
        raw = raw_scores(model, onnx, prompts, responses)
        normalization = model.manifest.normalization
        return {"rewards": ((raw - normalization.mean) / normalization.std).astype(np.float32)[:, None]}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=free_port(),
        metrics_port=free_port(),
        allow_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model,
            infer_func=[infer] * args.instances,
            inputs=[Tensor(name="prompt", dtype=bytes, shape=(1,)), Tensor(name="response", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="rewards", dtype=np.float32, shape=(1,))],
            config=ModelConfig(
                max_batch_size=MAX_BATCH_SIZE,
                batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
