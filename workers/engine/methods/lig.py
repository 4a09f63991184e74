"""Layer Integrated Gradients over the word embeddings (Captum).

Target: the predicted label. Baseline: [CLS] [PAD] ... [SEP]. Scores are the
attributions summed over the embedding dimension, so that for every document
sum(scores) = f(x) - f(baseline) + convergence_delta (completeness, in logits).

With ``n_steps="auto"`` the steps adapt per document: every document starts with
``start_steps`` Gauss-Legendre nodes, and only those whose completeness gap
|delta| exceeds ``tolerance`` x |f(x) - f(baseline)| are computed again, with the steps
that their own error curve predicts, up to ``max_steps``. The steps each document took
are returned with it. Under bf16 autocast (GPUs) a document whose gap stops falling when
its steps rise has hit bf16's rounding, not the quadrature's error: it is computed again
in fp32 (logit gap included), and the result says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, reference_ids
from workers.engine.methods.common import Attribution

# Parameters that change the result, recorded on every explanation row. Execution
# details (internal batch size, device) do not belong here: they change no figure
# beyond float rounding.
PARAMS: dict[str, Any] = {
    "n_steps": 50,  # or "auto"
    "integration": "gausslegendre",
    "baseline": "cls-pad-sep",
    "target": "predicted",
    "layer": "word_embeddings",
}
# start_steps 24: on the demo model most documents meet 1% there in one pass (median
# relative gap 0.0014), which measured faster than starting at 8 or 16 and re-running
# most documents (bench/throughput.py; docs/PERFORMANCE.md).
ADAPTIVE_PARAMS: dict[str, Any] = {"tolerance": 0.01, "start_steps": 24, "max_steps": 256}
ABSOLUTE_FLOOR = 1e-4  # logits: below this a gap is float noise, whatever the ratio
# How fast log(relative gap) falls per added Gauss-Legendre step, measured on the MiniLM
# demo model (about a factor of 8 per 8 steps), and how far below the tolerance to aim
# so that a second run is usually the last.
TYPICAL_RATE = 0.25
AIM = 0.5


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Fixed steps carry no adaptive parameters; adaptive steps carry all of them."""
    if str(params.get("n_steps")) == "auto":
        return {
            **params,
            "n_steps": "auto",
            **{k: params.get(k, v) for k, v in ADAPTIVE_PARAMS.items()},
        }
    clean = {k: v for k, v in params.items() if k not in ADAPTIVE_PARAMS}
    return {**clean, "n_steps": int(params["n_steps"])}


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    baselines = reference_ids(classifier, group)
    gap = _logit_gap(classifier, group, baselines, targets)
    if params["n_steps"] != "auto":
        scores = _integrate(
            classifier, group, baselines, targets, params, params["n_steps"], internal_batch_size
        )
        return _result(scores, gap, [params["n_steps"]] * len(group.indices))

    return _adaptive(classifier, group, baselines, targets, params, gap, internal_batch_size)


def _adaptive(
    classifier: Classifier,
    group: Group,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    gap: torch.Tensor,
    internal_batch_size: int,
) -> Attribution:
    """Every document starts at ``start_steps``; one over tolerance is run again at the
    step count its own error curve predicts, until it is within tolerance; one whose gap
    stalls under bf16 is run again in fp32."""
    tolerance, max_steps = float(params["tolerance"]), int(params["max_steps"])
    size = len(group.indices)
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=gap.device)
    history: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    in_fp32: set[int] = set()
    planned = dict.fromkeys(range(size), (min(int(params["start_steps"]), max_steps), False))
    while planned:
        for (steps, fp32), rows in _by_plan(planned).items():
            index = torch.tensor(rows, device=gap.device)
            part_group = group.subset(index)
            with _full_precision(classifier, fp32):
                if fp32:  # the bf16 gap carries the same rounding: measure it again
                    gap[index] = _logit_gap(classifier, part_group, baselines[index],
                                            targets[index])  # fmt: skip
                part = _integrate(classifier, part_group, baselines[index], targets[index],
                                  params, steps, internal_batch_size)  # fmt: skip
            scores[index] = part
            relative = _relative(part.double().sum(-1) - gap[index].double(), gap[index])
            for row, value in zip(rows, relative.tolist(), strict=True):
                history[row].append((steps, value))
        planned = {}
        for row in range(size):
            steps, error = history[row][-1]
            if error <= tolerance:
                continue
            if classifier.autocast and row not in in_fp32 and _stalled(history[row], max_steps):
                in_fp32.add(row)
                history[row] = []  # a new error curve: fp32's
                planned[row] = (steps, True)
            elif steps < max_steps:
                planned[row] = (_predict_steps(history[row], tolerance, max_steps), row in in_fp32)
    result = _result(scores, gap, [h[-1][0] for h in history])
    result.fp32 = [row in in_fp32 for row in range(size)]
    return result


def _stalled(history: list[tuple[int, float]], max_steps: int) -> bool:
    """More steps did not halve the gap (or none are left): rounding, not quadrature."""
    steps, error = history[-1]
    return steps >= max_steps or (len(history) > 1 and error > 0.5 * history[-2][1])


@contextmanager
def _full_precision(classifier: Classifier, fp32: bool) -> Iterator[None]:
    saved = classifier.autocast
    classifier.autocast = saved and not fp32
    try:
        yield
    finally:
        classifier.autocast = saved


def _by_plan(planned: dict[int, tuple[int, bool]]) -> dict[tuple[int, bool], list[int]]:
    groups: dict[tuple[int, bool], list[int]] = {}
    for row, plan in planned.items():
        groups.setdefault(plan, []).append(row)
    return groups


def _predict_steps(history: list[tuple[int, float]], tolerance: float, max_steps: int) -> int:
    """Gauss-Legendre error falls about exponentially with the steps: fit the rate from
    the document's last two runs (or assume the typical one), aim below the tolerance,
    and round up to a multiple of 4 so that documents share passes."""
    steps, error = history[-1]
    rate = TYPICAL_RATE
    if len(history) > 1:
        before, earlier_error = history[-2]
        if earlier_error > error > 0:
            rate = min(1.0, max(0.05, math.log(earlier_error / error) / (steps - before)))
    needed = steps + math.ceil(math.log(error / (tolerance * AIM)) / rate)
    needed = max(needed, steps + 4)
    return min(max_steps, -(-needed // 4) * 4)


def _relative(delta: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|delta| relative to |gap|, counted as 0 where |delta| is below float noise."""
    relative = delta.abs() / gap.double().abs().clamp_min(ABSOLUTE_FLOOR)
    return torch.where(delta.abs() <= ABSOLUTE_FLOOR, torch.zeros_like(relative), relative)


def _result(scores: torch.Tensor, gap: torch.Tensor, steps: list[int]) -> Attribution:
    deltas = scores.double().sum(-1) - gap.double()  # float64: a float32 sum can round to 0
    return Attribution(scores, deltas, steps, deltas.abs() / gap.abs().clamp_min(ABSOLUTE_FLOOR))


def _logit_gap(
    classifier: Classifier, group: Group, baselines: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """f(x) - f(baseline) for the target label: what the attributions must add up to."""
    with torch.inference_mode():
        both = torch.cat([group.input_ids, baselines])
        mask = torch.cat([group.attention_mask, group.attention_mask])
        types = None if group.token_type_ids is None else torch.cat([group.token_type_ids] * 2)
        logits = classifier.forward(both, mask, types).float()
    rows = torch.arange(len(targets), device=logits.device)
    n = len(targets)
    return (logits[:n][rows, targets] - logits[n:][rows, targets]).clone()


def _integrate(
    classifier: Classifier,
    group: Group,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    n_steps: int,
    internal_batch_size: int,
) -> torch.Tensor:
    lig = LayerIntegratedGradients(classifier.forward, classifier.model.get_input_embeddings())
    # Captum splits the steps of all documents into chunks of internal_batch_size rows,
    # and needs at least one row per document in each chunk.
    rows = max(internal_batch_size, len(group.indices))
    attributions = lig.attribute(
        inputs=group.input_ids,
        baselines=baselines,
        target=targets,
        additional_forward_args=(group.attention_mask, group.token_type_ids),
        n_steps=n_steps,
        method=params["integration"],
        internal_batch_size=rows,
    )
    return (attributions.float().sum(dim=-1) * group.attention_mask).detach()
