"""Layer Integrated Gradients over the word embeddings (Captum).

Target: the predicted label. Baseline: [CLS] [PAD] ... [SEP]. Scores are the
attributions summed over the embedding dimension, so that for every document
sum(scores) = f(x) - f(baseline) + convergence_delta (completeness, in logits).

With ``n_steps="auto"`` the steps adapt per document: every document starts with
``start_steps`` Gauss-Legendre nodes, and only those whose completeness gap
|delta| exceeds ``tolerance`` x |f(x) - f(baseline)| are computed again with twice the
nodes, up to ``max_steps``. The steps each document took are returned with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, reference_ids

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
ADAPTIVE_PARAMS: dict[str, Any] = {"tolerance": 0.01, "start_steps": 8, "max_steps": 256}
ABSOLUTE_FLOOR = 1e-4  # logits: below this a gap is float noise, whatever the ratio


@dataclass
class Attribution:
    scores: torch.Tensor  # documents x positions
    deltas: torch.Tensor  # per document: sum(scores) - (f(x) - f(baseline))
    steps: list[int]  # per document
    gaps: torch.Tensor  # per document: |delta| / |f(x) - f(baseline)|


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

    tolerance, steps = float(params["tolerance"]), int(params["start_steps"])
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=group.input_ids.device)
    taken = [0] * len(group.indices)
    todo = torch.arange(len(group.indices), device=group.input_ids.device)
    while len(todo):
        part = group.subset(todo)
        part_scores = _integrate(
            classifier, part, baselines[todo], targets[todo], params, steps, internal_batch_size
        )
        scores[todo] = part_scores
        for row in todo.tolist():
            taken[row] = steps
        within = _within(part_scores.sum(-1) - gap[todo], gap[todo], tolerance)
        if steps * 2 > int(params["max_steps"]):
            break  # the recorded gap tells which documents stayed over tolerance
        todo, steps = todo[~within], steps * 2
    return _result(scores, gap, taken)


def _within(delta: torch.Tensor, gap: torch.Tensor, tolerance: float) -> torch.Tensor:
    return (delta.abs() <= tolerance * gap.abs()) | (delta.abs() <= ABSOLUTE_FLOOR)


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
