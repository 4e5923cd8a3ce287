"""Each ranking loss against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rmserve.training.losses import all_pairs_bradley_terry, bradley_terry, plackett_luce, ranking_loss


def neg_log_sigmoid(x: float) -> float:
    return math.log(1.0 + math.exp(-x))


def test_bradley_terry_is_mean_negative_log_sigmoid_of_the_difference() -> None:
    loss = bradley_terry(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    # differences +1 and -1: log(1 + e^-1) = 0.31326, log(1 + e^1) = 1.31326
    assert loss.item() == pytest.approx((0.3132617 + 1.3132617) / 2, abs=1e-6)


def test_bradley_terry_margin_asks_for_a_wider_gap() -> None:
    loss = bradley_terry(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]), margin=torch.tensor([1.0, 0.0]))
    # differences minus margins: 0 -> log 2, -1 -> 1.31326
    assert loss.item() == pytest.approx((math.log(2.0) + 1.3132617) / 2, abs=1e-6)


def test_plackett_luce_by_hand() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.5, -0.5, 99.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    e = math.exp
    # First group: pick 3 from {3,1,2}, then 1 from {1,2}. Second group: a pair (the 99 is padding).
    first = (math.log(e(3) + e(1) + e(2)) - 3) + (math.log(e(1) + e(2)) - 1)
    second = math.log(e(0.5) + e(-0.5)) - 0.5
    assert plackett_luce(scores, valid).item() == pytest.approx((first + second) / 2, abs=1e-5)
    assert first == pytest.approx(1.72087, abs=1e-5)


def test_all_pairs_bradley_terry_by_hand() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.5, -0.5, 99.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    # Pairs (3>1), (3>2), (1>2) and (0.5>-0.5), averaged over the four pairs.
    expected = (neg_log_sigmoid(2) + neg_log_sigmoid(1) + neg_log_sigmoid(-1) + neg_log_sigmoid(1)) / 4
    assert all_pairs_bradley_terry(scores, valid).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["plackett-luce", "all-pairs"])
def test_every_loss_is_bradley_terry_on_pairs(kind: str) -> None:
    scores = torch.tensor([[1.5, 0.2], [-1.0, 0.3]])
    valid = torch.ones_like(scores, dtype=torch.bool)
    pair_loss = bradley_terry(scores[:, 0], scores[:, 1])
    assert ranking_loss(scores, valid, kind).item() == pytest.approx(pair_loss.item(), abs=1e-6)
    assert plackett_luce(scores, valid).item() == pytest.approx(pair_loss.item(), abs=1e-6)
    assert all_pairs_bradley_terry(scores, valid).item() == pytest.approx(pair_loss.item(), abs=1e-6)


@pytest.mark.parametrize("kind", ["plackett-luce", "all-pairs"])
def test_padding_gets_no_gradient_and_nothing_is_nan(kind: str) -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.5, -0.5, 99.0]], requires_grad=True)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    ranking_loss(scores, valid, kind).backward()
    grad = scores.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[1, 2] == 0.0
    assert grad[0, 0] < 0 < grad[0, 2]  # raise the best, lower the worst


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ranking loss"):
        ranking_loss(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), "listnet")
