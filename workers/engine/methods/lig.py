"""Layer Integrated Gradients over the word embeddings (Captum).

Target: the predicted label. Baseline: [CLS] [PAD] ... [SEP]. Scores are the
attributions summed over the embedding dimension, so that for every document
sum(scores) = f(x) - f(baseline) - convergence_delta (completeness, in logits).
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, reference_ids

# Parameters that change the result, recorded on every explanation row. Execution
# details (internal batch size, device) do not belong here: they change no figure
# beyond float rounding.
PARAMS: dict[str, Any] = {
    "n_steps": 50,
    "integration": "gausslegendre",
    "baseline": "cls-pad-sep",
    "target": "predicted",
    "layer": "word_embeddings",
}


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token scores (documents x positions) and per-document convergence deltas."""
    lig = LayerIntegratedGradients(classifier.forward, classifier.model.get_input_embeddings())
    # Captum splits the steps of all documents into chunks of internal_batch_size
    # rows, and needs at least one row per document in each chunk.
    rows = max(internal_batch_size, len(group.indices))
    attributions, deltas = lig.attribute(
        inputs=group.input_ids,
        baselines=reference_ids(classifier, group),
        target=targets,
        additional_forward_args=(group.attention_mask, group.token_type_ids),
        n_steps=params["n_steps"],
        method=params["integration"],
        internal_batch_size=rows,
        return_convergence_delta=True,
    )
    scores = attributions.sum(dim=-1) * group.attention_mask
    return scores.detach(), deltas.detach()
