"""Does a graph score what its source scores? The parity gate every published version passes.

An fp32 graph must reproduce its reference (the trained torch model, or transformers' forward pass
for an import) to float noise: anything more means the trace went wrong and serving would score a
different model. An int8 graph is lossy by design; it must stay finite and keep most of fp32's
ordering of pairs, or it is not the same model either. An import's served tokens are checked against
the trainer's own tokenization of the same data (`tokenization_agreement`), never rmserve's rendering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmserve.core.formats import InputFormat, TextFormat, pair_prompt
from rmserve.core.manifest import Parity
from rmserve.training.cpu_isa import int8_isa
from rmserve.training.data import Comparison
from rmserve.training.evaluate import ranking_agreement
from rmserve.usage import UsageError

# fp32 ONNX against torch: |graph - reference| <= ABSOLUTE + RELATIVE * |reference|, elementwise. Traces of the
# committed models differ by ~1e-6; a wrong pooling position or a lost segment id, by whole units.
ABSOLUTE_TOLERANCE = 1e-3
RELATIVE_TOLERANCE = 1e-3
# Dynamic int8 reorders a few percent of held-out pairs against fp32 (hh-harmless 0.6%, MiniLM 6.5%); an int8
# graph that reorders a third of them ranks by something else.
INT8_MIN_AGREEMENT = 2 / 3


class ParityError(UsageError):
    """A graph that does not score what its source scores; nothing is published."""


@dataclass(frozen=True)
class Reference:
    """What the fp32 graph must reproduce on the probe comparisons: its source model's own forward pass."""

    description: str  # "the trained torch model", "transformers forward, one unpadded item at a time"
    scores: list[np.ndarray]  # raw rewards per comparison, best first
    embeddings: np.ndarray | None = None  # [items, hidden]: what the head read, when the check covers it
    tokenization_agreement: float | None = None  # share of items tokenized as the source's own tokenizer does


def fp32_parity(
    reference: Reference,
    graph_scores: list[np.ndarray],
    graph_embeddings: np.ndarray | None,
    data: str,
) -> Parity:
    """The fp32 graph against its reference, or ParityError when it strays beyond float noise."""
    _check_close("raw scores", np.concatenate(reference.scores), np.concatenate(graph_scores), reference, data)
    embedding_diff = None
    if reference.embeddings is not None:
        if graph_embeddings is None:
            raise ParityError(f"the ONNX graph has no embedding output to compare with {reference.description}")
        _check_close("embeddings", reference.embeddings, graph_embeddings, reference, data)
        embedding_diff = max_abs_diff([reference.embeddings], [graph_embeddings])
    return Parity(
        data=data,
        items=sum(len(group) for group in graph_scores),
        reference=reference.description,
        max_abs_diff=max_abs_diff(reference.scores, graph_scores),
        ranking_agreement=ranking_agreement(reference.scores, graph_scores),
        embedding_max_abs_diff=embedding_diff,
        tokenization_matches_transformers=reference.tokenization_agreement,
    )


def int8_parity(parity: Parity, fp32_scores: list[np.ndarray], int8_scores: list[np.ndarray], data: str) -> Parity:
    """`parity` with the int8 graph's agreement with fp32 added, or ParityError when int8 ranks by something else."""
    if not np.all(np.isfinite(np.concatenate(int8_scores))):
        raise ParityError(f"the int8 graph gives non-finite scores on {data}")
    agreement = ranking_agreement(fp32_scores, int8_scores)
    if agreement < INT8_MIN_AGREEMENT:
        raise ParityError(
            f"the int8 graph orders only {agreement:.1%} of the pairs in {data} as fp32 does "
            f"(at least {INT8_MIN_AGREEMENT:.1%} needed); serve the fp32 graph"
        )
    return parity.model_copy(
        update={
            "int8_agreement_with_fp32": agreement,
            "int8_max_abs_diff": max_abs_diff(fp32_scores, int8_scores),
            "int8_isa": int8_isa(),
        }
    )


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b, strict=True)))


def _check_close(what: str, expected: np.ndarray, actual: np.ndarray, reference: Reference, data: str) -> None:
    if actual.shape != expected.shape:
        found = f"shape {actual.shape}, {reference.description} {expected.shape}"
    elif not np.all(np.isfinite(actual)):
        found = "non-finite values"
    else:
        difference = np.abs(actual - expected)
        if np.all(difference <= ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * np.abs(expected)):
            return
        found = f"max |diff| {difference.max():.3g}"
    raise ParityError(
        f"the ONNX graph's {what} on {data} differ from {reference.description}: {found} "
        f"(allowed {ABSOLUTE_TOLERANCE:g} + {RELATIVE_TOLERANCE:g} x |reference|); it would serve another model"
    )


def tokenization_agreement(input_format: InputFormat, hf_tokenizer: Any, comparisons: list[Comparison]) -> float:
    """Share of untruncated calibration items whose served tokens equal the trainer's own tokenization."""
    same, total = 0, 0
    for comparison in comparisons:
        for response, encoding in zip(comparison.responses, input_format.encode(comparison.exchanges()), strict=True):
            if not encoding.truncated:
                same += trainer_ids(input_format, hf_tokenizer, comparison, response) == encoding.input_ids
                total += 1
    return same / total if total else 1.0


def trainer_ids(input_format: InputFormat, hf_tokenizer: Any, comparison: Comparison, response: str) -> list[int]:
    """How the trainer of each layout tokenized a prompt (as the data wrote it) and a response: TRL's RewardTrainer
    `tokenizer(prompt + response + eos)` (plain) or `apply_chat_template(messages)` (conversational), a cross-encoder
    `tokenizer(prompt, response)`."""
    prompt = comparison.prompt_text if comparison.prompt_text is not None else pair_prompt(comparison.prompt)
    if isinstance(input_format, TextFormat):
        eos = input_format.eos_token  # TRL's own rule, written out here: the reference must not be rmserve's code
        text = prompt + response if eos is None or response.endswith(eos) else prompt + response + eos
        return list(hf_tokenizer(text)["input_ids"])
    if input_format.style == "chat_template":
        messages = [{"role": turn.role, "content": turn.content} for turn in comparison.prompt]
        messages.append({"role": "assistant", "content": response})
        return list(hf_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return list(hf_tokenizer(prompt, response)["input_ids"])
