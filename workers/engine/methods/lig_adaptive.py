"""LIG's adaptive steps: each document climbs the nested rule (``patterson``: 9, 19, 39,
79, 159 nodes, each level re-using every node of the one before) only as far as its
completeness gap needs, so that easy documents cost few nodes and hard ones no more than
``max_steps``. Under bf16 autocast a document whose gap stops falling has hit bf16's
rounding, not the quadrature's error, and is computed again in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from workers.engine import quadrature
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import Attribution
from workers.engine.methods.lig_baseline import logit_gap
from workers.engine.methods.lig_completeness import completed, relative_gap
from workers.engine.methods.lig_path import full_precision, integrand, weighted
from workers.engine.quadrature import NodeDensity


class _Plan(NamedTuple):
    """A document's next pass; documents with equal plans share their passes."""

    level: int  # the nested rule's level to reach
    fp32: bool  # with bf16 autocast off
    done: int  # the level's nodes already evaluated (the first ``done``)


@dataclass
class _DocumentState:
    """One document's progress up the levels."""

    level: int = 0  # the level it is at
    fp32: bool = False  # computed again in fp32 after its gap stalled under bf16
    values: torch.Tensor | None = None  # integrand at the nodes so far; None once settled
    # (nodes, relative gap) per level reached at the current precision
    history: list[tuple[int, float]] = field(default_factory=list)
    evaluated: int = 0  # nodes over every pass: what the document cost

    def add(self, new: torch.Tensor, nodes: int) -> torch.Tensor:
        """Joins the integrand at a pass's ``nodes`` new nodes to the earlier ones';
        returns them all, in the order the level's weights expect."""
        self.values = new if self.values is None else torch.cat([self.values, new])
        self.evaluated += nodes
        return self.values

    def next_plan(
        self, tolerance: float, last: int, sizes: tuple[int, ...], autocast: bool
    ) -> _Plan | None:
        """The pass this document needs next, or None when it is settled (within
        ``tolerance``, or at the ``last`` level with nothing left to try)."""
        if self.history[-1][1] <= tolerance:
            self.values = None
            return None
        if autocast and not self.fp32 and stalled(self.history, at_last=self.level == last):
            self.fp32 = True
            self.history, self.values = [], None  # a new error curve: fp32's
            return _Plan(self.level, True, 0)
        if self.level < last:
            self.level += 1
            return _Plan(self.level, self.fp32, sizes[self.level - 1])
        self.values = None
        return None


def adaptive_steps(
    classifier: Classifier,
    group: Group,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    gap: torch.Tensor,
    density: NodeDensity,
    internal_batch_size: int,
) -> Attribution:
    """Every document starts at the nested rule's first level; one over tolerance is
    raised a level, which evaluates only the level's new nodes, until it is within
    tolerance or at the last level within ``max_steps``; one whose gap stalls under bf16
    is computed again in fp32, that level's nodes all anew. ``gap`` is updated in place
    where it is measured again in fp32."""
    tolerance, last = float(params["tolerance"]), last_level(int(params["max_steps"]))
    sizes = quadrature.nested_sizes()
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=gap.device)
    states = [_DocumentState() for _ in group.indices]
    planned = {row: _Plan(0, False, 0) for row in range(len(states))}
    while planned:
        for (at, fp32, done), rows in _by_plan(planned).items():
            index = torch.tensor(rows, device=gap.device)
            part_group = group.subset(index)
            alphas, weights = density.nested(at)
            with full_precision(classifier, fp32):
                if fp32 and not done:  # the bf16 gap carries the same rounding: measure it again
                    gap[index] = logit_gap(classifier, part_group, baselines[index],
                                           targets[index], predicted=False)  # fmt: skip
                new = integrand(classifier, part_group, baselines[index], targets[index],
                                alphas[done:], internal_batch_size)  # fmt: skip
            stacked = torch.stack(
                [states[row].add(new[i], len(alphas) - done) for i, row in enumerate(rows)]
            )
            part = weighted(stacked, weights, part_group.attention_mask)
            scores[index] = part
            relative = relative_gap(part.double().sum(-1) - gap[index].double(), gap[index])
            for row, value in zip(rows, relative.tolist(), strict=True):
                states[row].history.append((len(alphas), value))
        planned = {}
        for row, state in enumerate(states):
            plan = state.next_plan(tolerance, last, sizes, classifier.autocast)
            if plan is not None:
                planned[row] = plan
    result = completed(scores, gap, [state.history[-1][0] for state in states])
    result.fp32 = [state.fp32 for state in states]
    result.nodes = [state.evaluated for state in states]
    return result


def last_level(max_steps: int) -> int:
    """The last level of the nested rule with at most ``max_steps`` nodes."""
    fitting = [i for i, n in enumerate(quadrature.nested_sizes()) if n <= max_steps]
    if not fitting:
        raise ValueError(
            f"lig: max_steps must be at least {quadrature.nested_sizes()[0]} (the first level of "
            f"adaptive steps), not {max_steps}"
        )
    return fitting[-1]


def stalled(history: list[tuple[int, float]], at_last: bool) -> bool:
    """A level more did not halve the gap (or none is left): rounding, not quadrature."""
    return at_last or (len(history) > 1 and history[-1][1] > 0.5 * history[-2][1])


def _by_plan(planned: dict[int, _Plan]) -> dict[_Plan, list[int]]:
    """The documents of each plan, plans in the order of their first document."""
    groups: dict[_Plan, list[int]] = {}
    for row, plan in planned.items():
        groups.setdefault(plan, []).append(row)
    return groups
