"""How far LIG's attributions are from adding up to the logit gap (completeness), and the
result that records it per document."""

from __future__ import annotations

import torch

from workers.engine.methods.common import Attribution

ABSOLUTE_FLOOR = 1e-4  # logits: below this a gap is float noise, whatever the ratio


def relative_gap(delta: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|delta| relative to |gap|, counted as 0 where |delta| is below float noise: what
    adaptive steps hold to their tolerance."""
    relative = delta.abs() / gap.double().abs().clamp_min(ABSOLUTE_FLOOR)
    return torch.where(delta.abs() <= ABSOLUTE_FLOOR, torch.zeros_like(relative), relative)


def completed(scores: torch.Tensor, gap: torch.Tensor, steps: list[int]) -> Attribution:
    """The attributions with each document's delta and relative gap, and its steps."""
    deltas = scores.double().sum(-1) - gap.double()  # float64: a float32 sum can round to 0
    return Attribution(scores, deltas, steps, deltas.abs() / gap.abs().clamp_min(ABSOLUTE_FLOOR))
