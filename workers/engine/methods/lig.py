"""Layer Integrated Gradients over the word embeddings.

Target: the predicted label. Baseline: [CLS] [PAD] ... [SEP]. Scores are the
attributions summed over the embedding dimension, so that for every document
sum(scores) = f(x) - f(baseline) + convergence_delta (completeness, in logits).

The path integral is computed here rather than by Captum's LayerIntegratedGradients,
which takes only its fixed node sets and runs two extra forward passes to capture the
layer. As in Captum, the word-embedding layer's output is replaced by the interpolated
embeddings (a forward hook) and differentiated, the real ids still going in (the tests
hold the two equal). ``nodes="uniform"`` spreads a rule's nodes evenly (with fixed
steps: Captum's Gauss-Legendre rule); ``nodes="calibrated"`` places them where the
model's integrand changes (``quadrature``), which reaches a tolerance with fewer steps.

With ``n_steps="auto"`` the steps adapt per document, on a nested rule (``patterson``:
9, 19, 39, 79, 159 nodes, each level re-using every node of the one before): every
document starts at the first level, and only those whose completeness gap |delta|
exceeds ``tolerance`` x |f(x) - f(baseline)| are raised a level, which costs only the
new nodes, up to ``max_steps``. The steps each document ended with and the nodes it cost
are returned with it. Under bf16 autocast (GPUs) a document whose gap stops falling when
its level rises has hit bf16's rounding, not the quadrature's error: it is computed
again in fp32 (logit gap included), and the result says so.
"""

from __future__ import annotations

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
# Adaptive steps' rule, named with its first level so that rows of different sequences
# never share an identity (fixed steps: Gauss-Legendre).
NESTED = f"gauss-kronrod-patterson-{quadrature.nested_sizes()[0]}"
ADAPTIVE_PARAMS: dict[str, Any] = {"tolerance": 0.01, "max_steps": 256}
ABSOLUTE_FLOOR = 1e-4  # logits: below this a gap is float noise, whatever the ratio
BASELINE_CACHE_SIZE = 4096  # baselines' logits kept per model (BERT's: one per length)


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Fixed steps carry no adaptive parameters and integrate by Gauss-Legendre; adaptive
    steps carry all of them and integrate by the nested rule. Nodes default to Captum's
    uniform placement for fixed steps and to calibrated ones for adaptive steps (whose
    tolerance holds whatever the placement)."""
    adaptive = str(params.get("n_steps")) == "auto"
    nodes = params.get("nodes") or ("calibrated" if adaptive else "uniform")
    if nodes not in ("uniform", "calibrated"):
        raise ValueError(f"lig: nodes must be uniform or calibrated, not {nodes!r}")
    if adaptive:
        adaptive_params = {k: params.get(k, v) for k, v in ADAPTIVE_PARAMS.items()}
        _last_level(int(adaptive_params["max_steps"]))  # fails early on a max_steps too low
        return {**params, "n_steps": "auto", "integration": NESTED, "nodes": nodes,
                **adaptive_params}  # fmt: skip
    clean = {k: v for k, v in params.items() if k not in ADAPTIVE_PARAMS}
    return {**clean, "n_steps": int(params["n_steps"]), "integration": "gausslegendre",
            "nodes": nodes}  # fmt: skip


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
    """Every document starts at the nested rule's first level; one over tolerance is
    raised a level, which evaluates only the level's new nodes, until it is within
    tolerance or at the last level within ``max_steps``; one whose gap stalls under bf16
    is computed again in fp32, that level's nodes all anew."""
    tolerance, last = float(params["tolerance"]), _last_level(int(params["max_steps"]))
    sizes = quadrature.nested_sizes()
    size = len(group.indices)
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=gap.device)
    values: list[torch.Tensor | None] = [None] * size  # integrand at the nodes so far
    history: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    level = [0] * size  # the level each document is at
    in_fp32: set[int] = set()
    evaluated = [0] * size  # nodes over every pass: what the document cost
    planned = {row: (0, False, 0) for row in range(size)}  # level, fp32, nodes already done
    while planned:
        for (at, fp32, done), rows in _by_plan(planned).items():
            index = torch.tensor(rows, device=gap.device)
            part_group = group.subset(index)
            alphas, weights = density.nested(at)
            with _full_precision(classifier, fp32):
                if fp32 and not done:  # the bf16 gap carries the same rounding: measure it again
                    gap[index] = _logit_gap(classifier, part_group, baselines[index],
                                            targets[index], predicted=False)  # fmt: skip
                new = _integrand(classifier, part_group, baselines[index], targets[index],
                                 alphas[done:], internal_batch_size)  # fmt: skip
            for i, row in enumerate(rows):
                known = values[row]
                values[row] = new[i] if known is None else torch.cat([known, new[i]])
                evaluated[row] += len(alphas) - done
            stacked = torch.stack([values[row] for row in rows])  # type: ignore[misc]  # all set
            part = _weighted(stacked, weights, part_group.attention_mask)
            scores[index] = part
            relative = _relative(part.double().sum(-1) - gap[index].double(), gap[index])
            for row, value in zip(rows, relative.tolist(), strict=True):
                history[row].append((len(alphas), value))
        planned = {}
        for row in range(size):
            if history[row][-1][1] <= tolerance:
                values[row] = None
            elif (
                classifier.autocast
                and row not in in_fp32
                and _stalled(history[row], at_last=level[row] == last)
            ):
                in_fp32.add(row)
                history[row], values[row] = [], None  # a new error curve: fp32's
                planned[row] = (level[row], True, 0)
            elif level[row] < last:
                level[row] += 1
                planned[row] = (level[row], row in in_fp32, sizes[level[row] - 1])
            else:
                values[row] = None
    result = _result(scores, gap, [h[-1][0] for h in history])
    result.fp32 = [row in in_fp32 for row in range(size)]
    result.nodes = evaluated
    return result


def _last_level(max_steps: int) -> int:
    """The last level of the nested rule with at most ``max_steps`` nodes."""
    fitting = [i for i, n in enumerate(quadrature.nested_sizes()) if n <= max_steps]
    if not fitting:
        raise ValueError(
            f"lig: max_steps must be at least {quadrature.nested_sizes()[0]} (the first level of "
            f"adaptive steps), not {max_steps}"
        )
    return fitting[-1]


def _stalled(history: list[tuple[int, float]], at_last: bool) -> bool:
    """A level more did not halve the gap (or none is left): rounding, not quadrature."""
    return at_last or (len(history) > 1 and history[-1][1] > 0.5 * history[-2][1])


@contextmanager
def _full_precision(classifier: Classifier, fp32: bool) -> Iterator[None]:
    saved = classifier.autocast
    classifier.autocast = saved and not fp32
    try:
        yield
    finally:
        classifier.autocast = saved


def _by_plan(planned: dict[int, tuple[int, bool, int]]) -> dict[tuple[int, bool, int], list[int]]:
    groups: dict[tuple[int, bool, int], list[int]] = {}
    for row, plan in planned.items():
        groups.setdefault(plan, []).append(row)
    return groups


def _relative(delta: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|delta| relative to |gap|, counted as 0 where |delta| is below float noise."""
    relative = delta.abs() / gap.double().abs().clamp_min(ABSOLUTE_FLOOR)
    return torch.where(delta.abs() <= ABSOLUTE_FLOOR, torch.zeros_like(relative), relative)


def _result(scores: torch.Tensor, gap: torch.Tensor, steps: list[int]) -> Attribution:
    deltas = scores.double().sum(-1) - gap.double()  # float64: a float32 sum can round to 0
    return Attribution(scores, deltas, steps, deltas.abs() / gap.abs().clamp_min(ABSOLUTE_FLOOR))


def _logit_gap(
    classifier: Classifier,
    group: Group,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    predicted: bool = True,
) -> torch.Tensor:
    """f(x) - f(baseline) for the target label: what the attributions must add up to.
    f(x) is the prediction pass's where the group carries it (and ``predicted``)."""
    if predicted and group.logits is not None:
        inputs = group.logits.float()
    else:
        with torch.inference_mode():
            inputs = classifier.forward(group.input_ids, group.attention_mask, group.token_type_ids)
    start = _baseline_logits(classifier, group, baselines)
    rows = torch.arange(len(targets), device=inputs.device)
    return (inputs[rows, targets] - start[rows, targets]).clone()


def _baseline_logits(classifier: Classifier, group: Group, baselines: torch.Tensor) -> torch.Tensor:
    """f(baseline) per document. It depends on the baseline's ids alone ([CLS] [PAD] ...
    [SEP]: on the length, for BERT), so each distinct one is computed once per model and
    precision, unpadded, and kept (a few floats each)."""
    cache = classifier.computed.setdefault("lig_baseline_logits", {})
    all_types = group.token_type_ids
    host_ids = baselines.tolist()  # one copy from the device for the keys, not one per row
    host_types = None if all_types is None else all_types.tolist()
    out = []
    for row, length in enumerate(group.lengths):
        ids = baselines[row : row + 1, :length]
        types = None if all_types is None else all_types[row : row + 1, :length]
        key = (classifier.autocast, tuple(host_ids[row][:length]),
               None if host_types is None else tuple(host_types[row][:length]))  # fmt: skip
        if key not in cache:
            if len(cache) >= BASELINE_CACHE_SIZE:
                cache.clear()
            with torch.inference_mode():
                cache[key] = classifier.forward(ids, torch.ones_like(ids), types)[0].float()
        out.append(cache[key])
    return torch.stack(out)


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
    return _weighted(values, weights, group.attention_mask)


def _weighted(values: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rule's sum: integrand values (documents x nodes x positions) times the
    weights, 0 on padding."""
    return (values * weights.to(values.device, torch.float32)[None, :, None]).sum(1) * mask


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
