"""Layer Integrated Gradients over the word embeddings.

Target: the predicted label. Baseline: [CLS] [PAD] ... [SEP]. Scores are the
attributions summed over the embedding dimension, so that for every document
sum(scores) = f(x) - f(baseline) + convergence_delta (completeness, in logits).

The path integral is computed here rather than by Captum's LayerIntegratedGradients,
which takes only its fixed node sets and runs two extra forward passes to capture the
layer. As in Captum, the word-embedding layer's output is replaced by the interpolated
embeddings (a forward hook) and differentiated, the real ids still going in (the tests
hold the two equal). ``nodes="uniform"`` is Captum's Gauss-Legendre rule;
``nodes="calibrated"`` places the nodes where the model's integrand changes
(``quadrature``), which reaches a tolerance with fewer steps.

With ``n_steps="auto"`` the steps adapt per document: every document starts with
``start_steps`` nodes (2 more per doubling of its length beyond 128 tokens), and only
those whose completeness gap |delta| exceeds ``tolerance`` x |f(x) - f(baseline)| are
computed again, with the steps that their own error curve predicts, up to ``max_steps``.
The steps each document took are returned with it. Under bf16 autocast (GPUs) a document
whose gap stops falling when its steps rise has hit bf16's rounding, not the
quadrature's error: it is computed again in fp32 (logit gap included), and the result
says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from workers.engine import quadrature
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, Tokenized, pad_group, reference_ids
from workers.engine.methods.common import Attribution
from workers.engine.quadrature import NodeDensity

# Parameters that change the result, recorded on every explanation row. Execution
# details (internal batch size, device) do not belong here: they change no figure
# beyond float rounding.
PARAMS: dict[str, Any] = {
    "n_steps": "auto",  # or a fixed number of steps
    "integration": "gausslegendre",
    "nodes": None,  # "uniform" or "calibrated"; None: uniform for fixed steps, else calibrated
    "baseline": "cls-pad-sep",
    "target": "predicted",
    "layer": "word_embeddings",
}
# start_steps 14 (for documents up to 128 tokens; see _start_steps) and the escalation
# below were chosen on the demo model by replaying every document's measured gap at
# 6-40 calibrated nodes: 19.5 nodes per held-out sentence on average, against 22.5 when
# starting at 16; starting at 10 (17.4) cost long documents 23.5 against 14.0
# (docs/PERFORMANCE.md).
ADAPTIVE_PARAMS: dict[str, Any] = {"tolerance": 0.01, "start_steps": 14, "max_steps": 256}
ABSOLUTE_FLOOR = 1e-4  # logits: below this a gap is float noise, whatever the ratio
# How fast log(relative gap) falls per added node on calibrated nodes (measured on the
# demo model), and how far below the tolerance to aim so that a second run is usually
# the last.
TYPICAL_RATE = 0.35
AIM = 0.3


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Fixed steps carry no adaptive parameters; adaptive steps carry all of them. Nodes
    default to Captum's uniform rule for fixed steps and to calibrated ones for adaptive
    steps (whose tolerance holds whatever the nodes)."""
    adaptive = str(params.get("n_steps")) == "auto"
    nodes = params.get("nodes") or ("calibrated" if adaptive else "uniform")
    if nodes not in ("uniform", "calibrated"):
        raise ValueError(f"lig: nodes must be uniform or calibrated, not {nodes!r}")
    if adaptive:
        adaptive_params = {k: params.get(k, v) for k, v in ADAPTIVE_PARAMS.items()}
        return {**params, "n_steps": "auto", "nodes": nodes, **adaptive_params}
    clean = {k: v for k, v in params.items() if k not in ADAPTIVE_PARAMS}
    return {**clean, "n_steps": int(params["n_steps"]), "nodes": nodes}


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    baselines = reference_ids(classifier, group)
    gap = _logit_gap(classifier, group, baselines, targets)
    calibrated = params["nodes"] == "calibrated"
    density = node_density(classifier, internal_batch_size) if calibrated else quadrature.UNIFORM
    if params["n_steps"] != "auto":
        scores = _integrate(
            classifier, group, baselines, targets, density.rule(params["n_steps"]),
            internal_batch_size,
        )  # fmt: skip
        result = _result(scores, gap, [params["n_steps"]] * len(group.indices))
        result.nodes = result.steps
    else:
        result = _adaptive(
            classifier, group, baselines, targets, params, gap, density, internal_batch_size
        )
    if calibrated:
        result.params = {**params, "node_density": density.as_params()}
    return result


def node_density(classifier: Classifier, rows: int | None = None) -> NodeDensity:
    """The model's calibrated node density, computed once: the integrand's size along
    the path (summed |contribution| of every token, averaged over the probe sentences,
    in fp32) at 64 uniform Gauss-Legendre nodes, in passes of at most ``rows`` rows
    (the caller's, so that out-of-memory back-off shrinks these passes too)."""
    if "lig_node_density" not in classifier.computed:
        tokenizer = classifier.tokenizer
        probes = [Tokenized(tokenizer(t)["input_ids"], False) for t in quadrature.PROBES]
        group = pad_group(classifier, probes, list(range(len(probes))))
        alphas, _ = quadrature.UNIFORM.rule(quadrature.PROFILE_STEPS)
        with _full_precision(classifier, True):
            with torch.no_grad():
                targets = classifier.forward(
                    group.input_ids, group.attention_mask, group.token_type_ids
                ).argmax(-1)
            values = _integrand(
                classifier, group, reference_ids(classifier, group), targets, alphas,
                rows=min(rows or 1 << 30, len(probes) * quadrature.PROFILE_STEPS),
            )  # fmt: skip
        size = values.abs().sum(-1).double()  # documents x nodes
        profile = (size / size.amax(-1, keepdim=True).clamp_min(1e-12)).mean(0)
        classifier.computed["lig_node_density"] = quadrature.fit(alphas, profile)
    return classifier.computed["lig_node_density"]


def _adaptive(
    classifier: Classifier,
    group: Group,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    gap: torch.Tensor,
    density: NodeDensity,
    internal_batch_size: int,
) -> Attribution:
    """Every document starts at ``_start_steps``; one over tolerance is run again at the
    step count its own error curve predicts, until it is within tolerance; one whose gap
    stalls under bf16 is run again in fp32."""
    tolerance, max_steps = float(params["tolerance"]), int(params["max_steps"])
    size = len(group.indices)
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=gap.device)
    history: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    in_fp32: set[int] = set()
    evaluated = [0] * size  # nodes over every pass: what the document cost
    planned = {
        row: (min(_start_steps(int(params["start_steps"]), length), max_steps), False)
        for row, length in enumerate(group.lengths)
    }
    while planned:
        for (steps, fp32), rows in _by_plan(planned).items():
            index = torch.tensor(rows, device=gap.device)
            part_group = group.subset(index)
            with _full_precision(classifier, fp32):
                if fp32:  # the bf16 gap carries the same rounding: measure it again
                    gap[index] = _logit_gap(classifier, part_group, baselines[index],
                                            targets[index])  # fmt: skip
                part = _integrate(classifier, part_group, baselines[index], targets[index],
                                  density.rule(steps), internal_batch_size)  # fmt: skip
            scores[index] = part
            relative = _relative(part.double().sum(-1) - gap[index].double(), gap[index])
            for row, value in zip(rows, relative.tolist(), strict=True):
                history[row].append((steps, value))
                evaluated[row] += steps
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
    result.nodes = evaluated
    return result


def _start_steps(start_steps: int, length: int) -> int:
    """``start_steps`` up to 128 tokens, 2 more per doubling beyond: longer documents'
    integrands have more structure (on the demo model, half of the 147-241-token
    documents needed more than 14 nodes, against a fifth of the sentences)."""
    doublings = math.ceil(math.log2(length / 128)) if length > 128 else 0
    return start_steps + 2 * doublings


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
    and round up to an even count so that documents often share passes."""
    steps, error = history[-1]
    rate = TYPICAL_RATE
    if len(history) > 1:
        before, earlier_error = history[-2]
        if earlier_error > error > 0:
            rate = min(1.0, max(0.05, math.log(earlier_error / error) / (steps - before)))
    needed = steps + math.ceil(math.log(error / (tolerance * AIM)) / rate)
    needed = max(needed, steps + 2)
    return min(max_steps, -(-needed // 2) * 2)


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
    rule: tuple[torch.Tensor, torch.Tensor],
    internal_batch_size: int,
) -> torch.Tensor:
    """Attributions (documents x positions, 0 on padding): the weighted sum of the
    integrand over the rule's nodes."""
    alphas, weights = rule
    values = _integrand(classifier, group, baselines, targets, alphas, internal_batch_size)
    weights = weights.to(values.device, torch.float32)
    return (values * weights[None, :, None]).sum(1) * group.attention_mask


def _integrand(
    classifier: Classifier,
    group: Group,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    alphas: torch.Tensor,
    rows: int,
) -> torch.Tensor:
    """Each token's contribution to the path's slope at each node (documents x nodes x
    positions): the gradient of the target logit with respect to the token's word
    embedding, dotted with the embedding's distance from the baseline's. The nodes of
    all documents share forward/backward passes of about ``rows`` rows; no parameter
    gradient and no graph beyond the pass is kept."""
    embed = classifier.model.get_input_embeddings()
    with torch.no_grad():
        inputs, start = embed(group.input_ids).float(), embed(baselines).float()
    distance = inputs - start
    docs, width, hidden = inputs.shape
    alphas = alphas.to(inputs.device, torch.float32)
    per_pass = max(1, rows // docs)
    values = []
    for first in range(0, len(alphas), per_pass):
        part = alphas[first : first + per_pass]
        nodes = len(part)
        points = start[:, None] + part[None, :, None, None] * distance[:, None]
        points = points.reshape(docs * nodes, width, hidden).requires_grad_()
        with torch.enable_grad(), _embeddings_replaced_by(embed, points):
            # The real ids still go in, as with Captum's LIG: a model may use them for
            # more than the lookup (the last real token of a decoder classifier).
            types = group.token_type_ids
            logits = classifier.forward(
                group.input_ids.repeat_interleave(nodes, 0),
                group.attention_mask.repeat_interleave(nodes, 0),
                None if types is None else types.repeat_interleave(nodes, 0),
            )
            picked = logits.gather(1, targets.repeat_interleave(nodes)[:, None])
            (gradient,) = torch.autograd.grad(picked.sum(), points)
        values.append(torch.einsum("dnwh,dwh->dnw", gradient.view(docs, nodes, width, hidden),
                                   distance))  # fmt: skip
    return torch.cat(values, dim=1).detach()


@contextmanager
def _embeddings_replaced_by(embed: torch.nn.Module, points: torch.Tensor) -> Iterator[None]:
    """The word-embedding layer returns ``points`` (what LIG differentiates) instead of
    its lookup, for the passes inside the block."""
    handle = embed.register_forward_hook(lambda _module, _inputs, output: points.to(output.dtype))
    try:
        yield
    finally:
        handle.remove()
