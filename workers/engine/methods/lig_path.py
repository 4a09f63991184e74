"""LIG's path integrand: the model's gradients along the straight path from the baseline's
word embeddings to the input's, and the quadrature sum over them.

As in Captum, the word-embedding layer's output is replaced by the interpolated
embeddings (a forward hook) and differentiated, the real ids still going in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group


def integrate(
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
    values = integrand(classifier, group, baselines, targets, alphas, internal_batch_size)
    return weighted(values, weights, group.attention_mask)


def weighted(values: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rule's sum: integrand values (documents x nodes x positions) times the
    weights, 0 on padding."""
    return (values * weights.to(values.device, torch.float32)[None, :, None]).sum(1) * mask


def integrand(
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
        with torch.enable_grad(), embeddings_replaced_by(embed, points):
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
def embeddings_replaced_by(embed: torch.nn.Module, points: torch.Tensor) -> Iterator[None]:
    """The word-embedding layer returns ``points`` (what LIG differentiates) instead of
    its lookup, for the passes inside the block."""
    handle = embed.register_forward_hook(lambda _module, _inputs, output: points.to(output.dtype))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def full_precision(classifier: Classifier, fp32: bool) -> Iterator[None]:
    """Bf16 autocast off inside the block where ``fp32``: for passes whose result bf16's
    rounding would spoil (calibration, and documents whose gap stalled)."""
    saved = classifier.autocast
    classifier.autocast = saved and not fp32
    try:
        yield
    finally:
        classifier.autocast = saved
