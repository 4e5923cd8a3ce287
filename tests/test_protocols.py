"""Each wire protocol's answer is a pure function of parsed input and scores: tested here without Flask."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmserve.config import Settings
from rmserve.core.formats import InputFormat
from rmserve.engine.flags import FlagColumns
from rmserve.engine.registry import Scored
from rmserve.errors import InvalidField
from rmserve.protocols.classify import ClassifyRequest, classify_answer, classify_pairs
from rmserve.protocols.inputs import Pairs
from rmserve.protocols.native import RankRequest, ScoreRequest, rank_answer, request_pairs, score_answer
from rmserve.protocols.openrlhf import GetRewardRequest, get_reward_answer, get_reward_pairs
from rmserve.protocols.schemas import parse

SETTINGS = Settings.from_env({})
FORMAT = InputFormat()


def scored(raw: list[float], mean: float = 0.5, std: float = 2.0, flags: FlagColumns | None = None) -> Scored:
    raw_scores = np.array(raw)
    tokens = [10 + index for index in range(len(raw))]
    flags = flags if flags is not None else {"truncated": np.zeros(len(raw), dtype=bool)}
    return Scored(raw_scores, (raw_scores - mean) / std, [False] * len(raw), tokens, [5] * len(raw), flags)


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


def test_native_group_form_becomes_one_prompt_per_response() -> None:
    body = parse(ScoreRequest, {"prompt": "Hi?", "responses": ["a", " b "]}).root
    pairs = request_pairs(body, FORMAT, SETTINGS)
    assert pairs.prompts == ["\n\nHuman: Hi?\n\nAssistant:"] * 2
    assert pairs.responses == ["a", "b"]
    rank_pairs = request_pairs(parse(RankRequest, {"prompt": "Hi?", "responses": ["a"]}), FORMAT, SETTINGS)
    assert rank_pairs == Pairs(["\n\nHuman: Hi?\n\nAssistant:"], ["a"])


def test_get_reward_splits_each_query_after_its_prompt_and_logs_floats_only() -> None:
    prompt = "\n\nHuman: Hi?\n\nAssistant:"
    body = parse(GetRewardRequest, {"query": [prompt + " Hello."], "prompts": [prompt], "labels": [""]})
    pairs = get_reward_pairs(body, FORMAT, SETTINGS)
    assert (pairs.prompts, pairs.responses) == ([prompt], ["Hello."])
    answer = get_reward_answer(scored([1.5]))
    assert answer.rewards == answer.scores == [0.5]
    assert answer.extra_logs == {
        "rm_raw_score": [1.5],
        "rm_truncated": [0.0],
        "rm_tokens": [10.0],
        "rm_flag_truncated": [0.0],
    }


def test_flags_are_names_per_item_natively_and_0_1_columns_for_openrlhf() -> None:
    columns = {
        "truncated": np.array([False, True]),
        "score_above_training_range": np.array([True, True]),
        "length_outside_training": np.array([False, False]),
    }
    answer = score_answer("rm", 1, scored([3.0, 4.0], flags=columns), "rid")
    assert answer.flags == [["score_above_training_range"], ["truncated", "score_above_training_range"]]
    logs = get_reward_answer(scored([3.0, 4.0], flags=columns)).extra_logs
    assert logs["rm_flag_truncated"] == [0.0, 1.0]
    assert logs["rm_flag_score_above_training_range"] == [1.0, 1.0]
    assert logs["rm_flag_length_outside_training"] == [0.0, 0.0]


def test_get_reward_names_the_query_that_does_not_start_with_its_prompt() -> None:
    body = parse(GetRewardRequest, {"query": ["other text"], "prompts": ["Hi?"]})
    with pytest.raises(InvalidField) as error:
        get_reward_pairs(body, FORMAT, SETTINGS)
    assert error.value.field == "query[0]"


def test_classify_applies_the_sigmoid_unless_told_not_to() -> None:
    text = "\n\nHuman: Hi?\n\nAssistant: Hello."
    plain = parse(ClassifyRequest, {"input": text, "use_activation": False})
    assert classify_pairs(plain, FORMAT, SETTINGS).responses == ["Hello."]
    raw = classify_answer(plain, "rm", scored([2.5]), "id-1", 7)
    assert raw.data[-1].probs[-1] == pytest.approx(1.0)
    activated = classify_answer(parse(ClassifyRequest, {"input": [text]}), "rm", scored([2.5]), "id-2", 7)
    assert activated.data[-1].probs[-1] == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert (activated.usage.prompt_tokens, activated.created, activated.id) == (10, 7, "id-2")
