"""Cutting rows of unequal lengths into passes: every row once, within the budget, and
the least padded tokens plus per-pass overhead (against every cut of the sorted rows
that keeps rows of one length together)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from workers.engine.batching import passes_by_length


def cost(passes: list[list[int]], lengths: list[int], overhead: int) -> int:
    return sum(overhead + len(p) * max(lengths[i] for i in p) for p in passes)


def best_cost(lengths: list[int], overhead: int, max_tokens: int) -> float:
    """Every way of cutting the sorted rows between two lengths into runs, each split
    into as few passes as the budget allows: the least cost."""
    ordered = sorted(lengths)
    between = [i + 1 for i in range(len(ordered) - 1) if ordered[i] < ordered[i + 1]]
    best = math.inf
    for cuts in itertools.product((False, True), repeat=len(between)):
        total, start = 0, 0
        for end in [at for at, cut in zip(between, cuts, strict=True) if cut] + [len(ordered)]:
            rows, width = end - start, ordered[end - 1]
            per_pass = max(1, max_tokens // width)
            total += math.ceil(rows / per_pass) * overhead + rows * width
            start = end
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_passes_hold_every_row_once_within_the_budget_at_the_least_cost(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([3, 4, 5, 9, 12, 20, 21, 40]) for _ in range(rng.randint(1, 11))]
    overhead, max_tokens = rng.choice([0, 16, 64, 4096]), rng.choice([30, 64, 4096])
    passes = passes_by_length(lengths, overhead, max_tokens)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= max_tokens
    assert cost(passes, lengths, overhead) == best_cost(lengths, overhead, max_tokens)


def test_overhead_decides_between_padding_and_more_passes():
    lengths = [3, 3, 3, 3, 40]
    assert len(passes_by_length(lengths, 0, 4096)) == 2  # padding is all that costs
    assert len(passes_by_length(lengths, 10_000, 4096)) == 1  # a pass is what costs
    assert passes_by_length([], 64, 4096) == []
