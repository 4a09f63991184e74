"""Saliency: the magnitude of the gradient of the target logit with respect to the word
embeddings (Simonyan et al., 2014, applied to text).

Captum's ``LayerGradientXActivation`` with ``multiply_by_inputs=False`` gives the
gradient at the word-embedding layer's output, which is what ``Saliency`` gives on the
embeddings themselves. ``norm="l1"`` (default) sums |gradient| over the hidden
dimension, Captum ``Saliency(abs=True)`` summed like ``lig``; ``"l2"`` takes its
Euclidean norm. Scores are never negative: saliency says how sensitive, not which way.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerGradientXActivation

from contract.methods import SPECS
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import Attribution, masked

SPEC = SPECS["saliency"]  # name, parameters, defaults, caps: contract/methods.py


def embedding_gradients(
    classifier: Classifier, group: Group, targets: torch.Tensor, times_input: bool
) -> torch.Tensor:
    """d logit[target] / d word embedding (x the embedding when ``times_input``), one
    backward pass for the whole group: documents x positions x hidden."""
    layer = classifier.model.get_input_embeddings()
    method = LayerGradientXActivation(classifier.forward, layer, multiply_by_inputs=times_input)
    return method.attribute(
        group.input_ids,
        target=targets,
        additional_forward_args=(group.attention_mask, group.token_type_ids),
    ).float()


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    gradients = embedding_gradients(classifier, group, targets, times_input=False)
    reduced = gradients.abs().sum(-1) if params["norm"] == "l1" else gradients.norm(dim=-1)
    return Attribution(scores=masked(reduced, group))
