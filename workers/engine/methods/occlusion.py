"""Occlusion over tokens (Zeiler & Fergus, 2014; Captum ``Occlusion``): the drop in the
target logit when a window of ``window`` consecutive tokens is replaced by the
baseline, [PAD] (the ``lig`` baseline, so [CLS] and [SEP] are never changed and score
0). A token's score is the mean drop over the windows that cover it; with ``window=1``
this is leave-one-out feature ablation. Forward passes only, several occluded copies
of every document of the group per pass.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import Occlusion

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, reference_ids
from workers.engine.methods.common import Attribution, masked

PARAMS: dict[str, Any] = {"window": 1, "baseline": "pad", "target": "predicted"}


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Windows slide one token at a time, so every token is covered."""
    window = int(params["window"])
    if window < 1:
        raise ValueError(f"occlusion window must be at least 1 token, not {window}")
    return {**params, "window": window}


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    with torch.inference_mode():
        scores = Occlusion(classifier.forward).attribute(
            group.input_ids,
            sliding_window_shapes=(params["window"],),
            baselines=reference_ids(classifier, group),
            target=targets,
            additional_forward_args=(group.attention_mask, group.token_type_ids),
            perturbations_per_eval=max(1, internal_batch_size // len(group.indices)),
        )
    return Attribution(scores=masked(scores, group))
