"""The Open Inference Protocol (KServe v2 / Triton HTTP): `/v2/health/ready`, model metadata and readiness,
and `POST /v2/models/<name>/infer`, so Triton clients, KServe tooling and NeMo-Aligner's PyTriton-style
reward clients call rmserve unchanged.

Inputs are BYTES tensors: `prompt` and `response` (one element per item), or one tensor of full
texts (NeMo-Aligner's `sentences`, any name: a formatted text is split at its last assistant turn,
a plain one is a response without a prompt, flagged `no_prompt`). Outputs are FP32 `[n, 1]`:
`rewards` (normalized, as `/get_reward`; an ensemble's reward) and `raw_rewards`; the response's
`parameters.flags` lists each item's flags. Tensors may travel as JSON or in Triton's
binary extension (`Inference-Header-Content-Length`; BYTES elements 4-byte length-prefixed), which
`tritonclient` uses by default; an output is sent binary when the request asks for it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, Field

from rmserve import __version__
from rmserve.core.conversation import Exchange
from rmserve.core.formats import InputFormat
from rmserve.engine.servable import ModelInfo, Scored, Servable
from rmserve.errors import InvalidField
from rmserve.http.model_route import model_route
from rmserve.http.openapi import Route, route
from rmserve.http.state import state
from rmserve.protocols.inputs import Limits, paired_exchanges, text_exchanges
from rmserve.protocols.schemas import Lenient, parse
from rmserve.protocols.scoring_route import ScoringRoute

oip = Blueprint("oip", __name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
PAIR_INPUTS = ("prompt", "response")
OUTPUTS = ("rewards", "raw_rewards")


class TensorInput(Lenient):
    name: str
    shape: list[int]
    datatype: str = Field(description="BYTES (UTF-8 text)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="`binary_data_size` when sent binary")
    data: list[Any] | None = Field(None, description="the elements, row-major (nested lists are flattened)")


class RequestedOutput(Lenient):
    name: Literal["rewards", "raw_rewards"]
    parameters: dict[str, Any] = Field(default_factory=dict, description="`binary_data: true` for a binary answer")


class InferRequest(Lenient):
    """An inference request: `prompt` + `response` BYTES inputs, or one input of full texts."""

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class TensorOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32"] = "FP32"
    parameters: dict[str, Any] | None = None
    data: list[float] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = Field(None, description="absent for an ensemble, which has no versions")
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="`flags`: per item, the flags it raised")
    outputs: list[TensorOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="the version served; empty for an ensemble")
    platform: str = Field(description="onnxruntime_onnx, or ensemble (as Triton names it)")
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = Field(default=None, description="an ensemble's members, k and reward")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


@dataclass(frozen=True)
class InferCall:
    """An inference request with the binary tensor data sent after its JSON header (empty when all JSON)."""

    request: InferRequest
    binary: bytes


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (Triton's binary extension), or all JSON."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidField(HEADER_LENGTH, f"must be the JSON header's byte length, got {header_length!r}")
    length = int(header_length)
    return body[:length], body[length:]


def tensor_texts(tensor: TensorInput, field: str, binary: bytes, offset: int) -> tuple[list[str], int]:
    """A BYTES tensor's elements as text, and where the next binary tensor starts."""
    if tensor.datatype != "BYTES":
        raise InvalidField(f"{field}.datatype", f"must be BYTES (text), got {tensor.datatype!r}")
    count = math.prod(tensor.shape)
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or offset + size > len(binary):
            raise InvalidField(f"{field}.parameters.binary_data_size", "is more than the binary data sent")
        elements = _length_prefixed(binary[offset : offset + size], f"{field}.parameters.binary_data_size")
        offset += size
    elif tensor.data is not None:
        elements = list(_flatten(tensor.data))
    else:
        raise InvalidField(f"{field}.data", "is required (or send the tensor binary, with binary_data_size)")
    if len(elements) != count:
        raise InvalidField(f"{field}.shape", f"{tensor.shape} holds {count} elements; {len(elements)} were sent")
    return [_text(element, f"{field}.data[{index}]") for index, element in enumerate(elements)], offset


def _text(element: Any, field: str) -> str:
    if isinstance(element, bytes):
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidField(field, "is not UTF-8 text") from None
    if not isinstance(element, str):
        raise InvalidField(field, "must be a string")
    return element


def _length_prefixed(buffer: bytes, field: str) -> list[bytes]:
    elements, position = [], 0
    while position < len(buffer):
        if position + 4 > len(buffer):
            raise InvalidField(field, "binary BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", buffer, position)
        position += 4
        if position + length > len(buffer):
            raise InvalidField(field, "binary BYTES data ends inside an element")
        elements.append(buffer[position : position + length])
        position += length
    return elements


def _flatten(data: list[Any]) -> Any:
    for element in data:
        if isinstance(element, list):
            yield from _flatten(element)
        else:
            yield element


def infer_exchanges(body: InferRequest, binary: bytes, input_format: InputFormat, limits: Limits) -> list[Exchange]:
    """`prompt` + `response`, or one tensor of full texts; binary tensors are read in input order."""
    texts, offset = {}, 0
    for index, tensor in enumerate(body.inputs):
        texts[tensor.name], offset = tensor_texts(tensor, f"inputs[{index}]", binary, offset)
    if sorted(texts) == sorted(PAIR_INPUTS):
        return paired_exchanges(texts["prompt"], texts["response"], PAIR_INPUTS, input_format, limits)
    if len(texts) == 1:
        (name,) = texts
        return text_exchanges(texts[name], name, input_format, limits)
    raise InvalidField(
        "inputs", f"got {sorted(texts)}; send BYTES inputs `prompt` and `response`, or one input of full texts"
    )


def infer_answer(body: InferRequest, model: str, version: int | None, scored: Scored) -> tuple[InferResponse, bytes]:
    """The requested outputs (default: all), each [n, 1] FP32, as JSON data or appended binary."""
    values = {"rewards": scored.scores, "raw_rewards": scored.raw_scores}
    requested = body.outputs or [RequestedOutput(name=name) for name in OUTPUTS]
    binary_default = bool(body.parameters.get("binary_data_output", False))
    outputs, binary = [], b""
    for output in requested:
        tensor = np.asarray(values[output.name], dtype="<f4").reshape(-1, 1)  # [n] -> [n, 1]
        if output.parameters.get("binary_data", binary_default):
            raw = tensor.tobytes()
            outputs.append(
                TensorOutput(name=output.name, shape=list(tensor.shape), parameters={"binary_data_size": len(raw)})
            )
            binary += raw
        else:
            outputs.append(TensorOutput(name=output.name, shape=list(tensor.shape), data=tensor.ravel().tolist()))
    answer = InferResponse(
        model_name=model,
        model_version=None if version is None else str(version),
        id=body.id,
        parameters={"flags": scored.flags},
        outputs=outputs,
    )
    return answer, binary


def model_metadata(info: ModelInfo) -> ModelMetadata:
    """What Triton says of a model: its tensors, its version, and its platform (`ensemble`: members, k, reward)."""
    texts = [TensorMetadata(name=input_name, datatype="BYTES", shape=[-1]) for input_name in PAIR_INPUTS]
    rewards = [TensorMetadata(name=output, datatype="FP32", shape=[-1, 1]) for output in OUTPUTS]
    if info.ensemble is None:
        versions = [str(info.version)]
        return ModelMetadata(
            name=info.name, versions=versions, platform="onnxruntime_onnx", inputs=texts, outputs=rewards
        )
    spec = info.ensemble.spec
    parameters = {"members": spec.members, "k": spec.k, "reward": spec.reward}
    return ModelMetadata(
        name=info.name, versions=[], platform="ensemble", inputs=texts, outputs=rewards, parameters=parameters
    )


@route(
    oip, Route("/v2/health/live", "get", "Open Inference Protocol liveness.", response=ServerLive, authenticated=False)
)
def server_live() -> Any:
    return jsonify(ServerLive(live=True).model_dump())


@route(
    oip,
    Route(
        "/v2/health/ready",
        "get",
        "Open Inference Protocol readiness: 503 while draining or a model's batcher is down.",
        response=ServerReady,
        errors=(503,),
        authenticated=False,
    ),
)
def server_ready() -> Any:
    state().scoring.require_ready()
    return jsonify(ServerReady(ready=True).model_dump())


@route(oip, Route("/v2", "get", "Open Inference Protocol server metadata.", errors=(401,)))
def server_metadata() -> Any:
    return jsonify({"name": "rmserve", "version": __version__, "extensions": ["binary_tensor_data"]})


@model_route(
    oip,
    "/v2/models/<name>",
    "Model metadata: BYTES prompt/response in, FP32 rewards out.",
    ModelMetadata,
    errors=(401, 404),
    exclude_none=True,
)
def get_model_metadata(served: Servable) -> ModelMetadata:
    return model_metadata(served.metadata())


@model_route(
    oip, "/v2/models/<name>/ready", "Model readiness: 503 while draining or a model's batcher is down.", ModelReady
)
def model_ready(served: Servable) -> ModelReady:
    state().scoring.require_ready()
    return ModelReady(name=served.name, ready=True)


class Infer(ScoringRoute[InferCall]):
    path = "/v2/models/<name>/infer"
    summary = (
        "Score texts: BYTES `prompt` + `response` (or one input of full texts) -> FP32 `rewards` [n, 1]. "
        "Triton's binary tensor extension is accepted and answered in kind."
    )
    request_schema = InferRequest
    response_schema = InferResponse

    def split(self, raw: bytes) -> tuple[bytes, bytes]:
        return split_body(raw, request.headers.get(HEADER_LENGTH))

    def parse(self, document: Any, attached: bytes) -> InferCall:
        return InferCall(parse(InferRequest, document), attached)

    def model_name(self, body: InferCall, path: Mapping[str, str]) -> str | None:
        return path["name"]

    def exchanges(self, body: InferCall, input_format: InputFormat, limits: Limits) -> list[Exchange]:
        return infer_exchanges(body.request, body.binary, input_format, limits)

    def answer(self, body: InferCall, served: Servable, scored: Scored) -> Response:
        answer, data = infer_answer(body.request, served.name, served.served_version, scored)
        if not data:
            return jsonify(answer.model_dump(exclude_none=True))
        header = json.dumps(answer.model_dump(exclude_none=True)).encode()
        return Response(
            header + data, content_type="application/octet-stream", headers={HEADER_LENGTH: str(len(header))}
        )


Infer().register(oip, "infer")
