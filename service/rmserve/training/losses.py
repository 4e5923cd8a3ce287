"""Ranking losses: how far the model's scores are from the orderings people gave.

Scores come as `[groups, K]` with each row ordered best first and `valid` marking real
responses (rows of a batch may rank different numbers of responses). For K = 2 all three
losses are the same Bradley–Terry loss.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected - margin). [pairs] x2 -> scalar"""
    difference = chosen - rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference).mean()


def plackett_luce(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over groups of -log P(ordering): each response in turn beats all the ones ranked below it.

    [groups, K] x2 -> scalar
    """
    masked = scores.masked_fill(~valid, -1e9)  # not -inf: its gradient would be NaN
    # logsumexp over positions i..K: reverse, cumulative logsumexp, reverse back.
    tail_logsumexp = torch.logcumsumexp(masked.flip(dims=[1]), dim=1).flip(dims=[1])
    has_rival = valid.clone()
    has_rival[:, :-1] &= valid[:, 1:]
    has_rival[:, -1] = False  # the last response has nothing left to beat
    per_step = (tail_logsumexp - scores).masked_fill(~has_rival, 0.0)
    return per_step.sum(dim=1).mean()


def all_pairs_bradley_terry(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry over every (better, worse) pair within each group, averaged over pairs."""
    better, worse = scores[:, :, None], scores[:, None, :]  # [groups, K, 1], [groups, 1, K]
    size = scores.shape[1]
    ordered = torch.ones(size, size, dtype=torch.bool).triu(diagonal=1)  # [K, K]: i ranked above j
    pair_mask = ordered[None] & valid[:, :, None] & valid[:, None, :]
    losses = -F.logsigmoid(better - worse)
    return losses[pair_mask].mean()


def ranking_loss(
    scores: torch.Tensor, valid: torch.Tensor, kind: str, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """The training loss: Bradley–Terry for pairs (with margins), else `kind` for rankings of K."""
    if scores.shape[1] == 2:
        return bradley_terry(scores[:, 0], scores[:, 1], margin)
    if kind == "plackett-luce":
        return plackett_luce(scores, valid)
    if kind == "all-pairs":
        return all_pairs_bradley_terry(scores, valid)
    raise ValueError(f"unknown ranking loss {kind!r} (plackett-luce, all-pairs)")
