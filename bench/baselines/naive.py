"""The server most people write in an afternoon: Flask + one ONNX Runtime session, each request alone.

Served as rmserve is (gunicorn gthread, 1 worker); every request tokenizes and runs its own items
on its request thread, with ONNX Runtime's default threads (NAIVE_INTRA_OP_THREADS, 0: the CPUs).
No queue, no batching across requests. `gunicorn 'bench.baselines.naive:create_app()'`, configured
by NAIVE_* variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from bench.baselines.common import load, raw_scores, session


def create_app() -> Flask:
    model = load(Path(os.environ["NAIVE_REPOSITORY"]), os.environ["NAIVE_MODEL"])
    onnx = session(model, int(os.environ.get("NAIVE_INTRA_OP_THREADS", "0")))
    app = Flask(__name__)

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})

    @app.post("/v1/score")
    def score() -> Any:
        items = request.get_json(force=True)["items"]
        raw = raw_scores(model, onnx, [item["prompt"] for item in items], [item["response"] for item in items])
        normalization = model.manifest.normalization
        return jsonify({"scores": ((raw - normalization.mean) / normalization.std).tolist()})

    return app
