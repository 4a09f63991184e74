"""Attention as an explanation: attention rollout (Abnar & Zuidema, 2020) and the raw
[CLS] attention of every layer.

Rollout multiplies, from the first layer up, each layer's attention averaged over heads
with the residual connection mixed in as 0.5 I + 0.5 A; a token's score is the [CLS]
row of the product: how much of the final [CLS] representation flows from it. The
scores of a document are non-negative and sum to 1 (they are not in logits, and do not
depend on the target). ``MethodResult.extra["cls_attention"]`` keeps the [CLS] row of
each layer averaged over heads (layers x tokens), for drawing the attention map.
"""

from __future__ import annotations

from typing import Any

import torch

from contract.methods import SPECS
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import Attribution

SPEC = SPECS["attention"]  # name, parameters, defaults, caps: contract/methods.py


def rollout(layers: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout from per-layer attention (documents x heads x T x T): the
    documents x T x T flow matrix whose rows sum to 1."""
    flow = None
    for attention in layers:
        mean = attention.mean(dim=1)
        identity = torch.eye(mean.shape[-1], device=mean.device, dtype=mean.dtype)
        mixed = 0.5 * mean + 0.5 * identity
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        flow = mixed if flow is None else mixed @ flow
    assert flow is not None, "a model without attention layers"
    return flow


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    layers = classifier.attentions(group.input_ids, group.attention_mask, group.token_type_ids)
    mask = group.attention_mask.float()
    scores = rollout(layers)[:, 0, :] * mask
    cls_rows = torch.stack([layer.mean(dim=1)[:, 0, :] for layer in layers], dim=1)
    return Attribution(scores=scores.clone(), maps={"cls_attention": cls_rows * mask[:, None]})
