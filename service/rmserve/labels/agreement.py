"""How much labellers who ordered the same task agree: Kendall's tau and the share agreeing on the best."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rmserve.labels.tasks import Ordering


@dataclass(frozen=True)
class Agreement:
    """Over every pair of labellers who both ordered a task (skips are not orderings)."""

    tasks: int  # tasks ordered by at least two labellers
    pairs: int
    kendall_tau: float | None  # mean over pairs; 1 = same order, -1 = reversed; None without pairs
    top1: float | None  # share of pairs that put the same response first


def kendall_tau(first: Sequence[int], second: Sequence[int]) -> float:
    """Kendall's tau-a of two orderings (response indices best first) of the same responses."""
    rank_first = {response: place for place, response in enumerate(first)}
    rank_second = {response: place for place, response in enumerate(second)}
    pairs = list(itertools.combinations(first, 2))
    agreeing = sum(
        1 if (rank_first[a] - rank_first[b]) * (rank_second[a] - rank_second[b]) > 0 else -1 for a, b in pairs
    )
    return agreeing / len(pairs)


def agreement(orderings: Iterable[Ordering]) -> Agreement:
    by_task: defaultdict[int, list[tuple[int, ...]]] = defaultdict(list)
    for ordering in orderings:
        if ordering.ranking is not None:
            by_task[ordering.task_id].append(ordering.ranking)
    taus: list[float] = []
    same_best = 0
    shared = [rankings for rankings in by_task.values() if len(rankings) >= 2]
    for rankings in shared:
        for first, second in itertools.combinations(rankings, 2):
            taus.append(kendall_tau(first, second))
            same_best += first[0] == second[0]
    if not taus:
        return Agreement(len(shared), 0, None, None)
    return Agreement(len(shared), len(taus), sum(taus) / len(taus), same_best / len(taus))
