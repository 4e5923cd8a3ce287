"""Each wire protocol's answer is a pure function of parsed input and scores: tested here without Flask."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rmserve.core.conversation import Exchange, Turn
from rmserve.core.formats import InputFormat
from rmserve.core.repository import verify_version
from rmserve.engine.flags import FlagColumns
from rmserve.engine.servable import Scored
from rmserve.errors import InvalidField
from rmserve.protocols.classify import Classify, ClassifyRequest, classify_answer
from rmserve.protocols.inputs import Limits
from rmserve.protocols.native import RankRequest, ScoreRequest, rank_answer, request_exchanges, score_answer
from rmserve.protocols.openrlhf import GetReward, GetRewardRequest, get_reward_answer
from rmserve.protocols.schemas import parse

LIMITS = Limits(max_items=64, max_text_chars=1000)


@pytest.fixture(scope="module")
def input_format(tiny_repository: Path) -> InputFormat:
    """The tiny model's transcript format (a real tokenizer behind it)."""
    return verify_version(tiny_repository / "tiny" / "1").format


def scored(raw: list[float], mean: float = 0.5, std: float = 2.0, flags: FlagColumns | None = None) -> Scored:
    raw_scores = np.array(raw)
    tokens = [10 + index for index in range(len(raw))]
    items = len(raw)
    flags = (
        flags
        if flags is not None
        else {"truncated": np.zeros(items, dtype=bool), "injected_turn": np.zeros(items, dtype=bool)}
    )
    return Scored(raw_scores, (raw_scores - mean) / std, [False] * items, tokens, [5] * items, flags)


def test_score_answer_carries_every_item_in_order() -> None:
    answer = score_answer("rm", 3, scored([1.0, -1.0]), "rid-1")
    assert (answer.model, answer.version, answer.request_id) == ("rm", 3, "rid-1")
    assert answer.raw_scores == [1.0, -1.0]
    assert answer.scores == [0.25, -0.75]
    assert answer.tokens == [10, 11]


def test_rank_answer_orders_best_first_with_bradley_terry_pairwise() -> None:
    answer = rank_answer("rm", 1, scored([0.0, 2.0, 1.0]), "rid")
    assert answer.ranking == [1, 2, 0]
    assert answer.pairwise[1][0] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert answer.pairwise[0][1] == pytest.approx(1 - answer.pairwise[1][0])
    assert answer.z_scores == pytest.approx([-1.2247449, 1.2247449, 0.0])


def test_rank_answer_of_tied_responses_keeps_request_order_and_zero_z_scores() -> None:
    answer = rank_answer("rm", 1, scored([0.7, 0.7, 0.7]), "rid")
    assert answer.ranking == [0, 1, 2]
    assert answer.z_scores == [0.0, 0.0, 0.0]


def test_native_group_form_becomes_one_exchange_per_response(input_format: InputFormat) -> None:
    body = parse(ScoreRequest, {"prompt": "Hi?", "responses": ["a", " b "]}).root
    exchanges = request_exchanges(body, input_format, LIMITS)
    assert [exchange.prompt for exchange in exchanges] == [(Turn("user", "Hi?"),)] * 2
    assert [exchange.response for exchange in exchanges] == ["a", " b "]  # as sent: the model's format decides
    # rmserve's own transcript models read responses stripped, as they were trained
    assert input_format.encode([exchanges[1]]) == input_format.encode([replace(exchanges[1], response="b")])
    (ranked,) = request_exchanges(parse(RankRequest, {"prompt": "Hi?", "responses": ["a"]}), input_format, LIMITS)
    assert ranked == Exchange((Turn("user", "Hi?"),), "a", "responses[0]", prompt_text="Hi?")


def test_get_reward_splits_each_query_after_its_prompt_and_logs_floats_only(input_format: InputFormat) -> None:
    prompt = "\n\nHuman: Hi?\n\nAssistant:"
    body = parse(GetRewardRequest, {"query": [prompt + " Hello."], "prompts": [prompt], "labels": [""]})
    (exchange,) = GetReward().exchanges(body, input_format, LIMITS)
    assert (exchange.prompt, exchange.response) == ((Turn("user", "Hi?"),), " Hello.")
    answer = get_reward_answer(scored([1.5]))
    assert answer.rewards == answer.scores == [0.5]
    assert answer.extra_logs == {
        "rm_raw_score": [1.5],
        "rm_truncated": [0.0],
        "rm_tokens": [10.0],
        "rm_injected_turn": [0.0],
    }


def test_flags_are_names_per_item_natively_and_0_1_columns_for_openrlhf() -> None:
    columns = {
        "truncated": np.array([False, True]),
        "injected_turn": np.array([False, False]),
        "score_above_training_range": np.array([True, True]),
        "length_outside_training": np.array([False, False]),
    }
    answer = score_answer("rm", 1, scored([3.0, 4.0], flags=columns), "rid")
    assert answer.flags == [["score_above_training_range"], ["truncated", "score_above_training_range"]]
    logs = get_reward_answer(scored([3.0, 4.0], flags=columns)).extra_logs
    assert logs["rm_truncated"] == [0.0, 1.0]
    assert logs["rm_score_above_training_range"] == [1.0, 1.0]
    assert logs["rm_length_outside_training"] == [0.0, 0.0]


def test_get_reward_names_the_query_that_does_not_start_with_its_prompt(input_format: InputFormat) -> None:
    body = parse(GetRewardRequest, {"query": ["other text"], "prompts": ["Hi?"]})
    with pytest.raises(InvalidField) as error:
        GetReward().exchanges(body, input_format, LIMITS)
    assert error.value.field == "query[0]"


def test_classify_applies_the_sigmoid_unless_told_not_to(input_format: InputFormat) -> None:
    text = "\n\nHuman: Hi?\n\nAssistant: Hello."
    plain = parse(ClassifyRequest, {"input": text, "use_activation": False})
    assert [exchange.response for exchange in Classify().exchanges(plain, input_format, LIMITS)] == ["Hello."]
    raw = classify_answer(plain, "rm", scored([2.5]), "id-1", 7)
    assert raw.data[-1].probs[-1] == pytest.approx(1.0)
    activated = classify_answer(parse(ClassifyRequest, {"input": [text]}), "rm", scored([2.5]), "id-2", 7)
    assert activated.data[-1].probs[-1] == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert (activated.usage.prompt_tokens, activated.created, activated.id) == (10, 7, "id-2")
