"""Occlusion over tokens (Zeiler & Fergus, 2014; Captum ``Occlusion``): the drop in the
target logit when a window of ``window`` consecutive tokens is replaced by the
baseline, [PAD] (the ``lig`` baseline, so [CLS] and [SEP] are never changed and score
0). A token's score is the mean drop over the windows that cover it; with ``window=1``
this is leave-one-out feature ablation. Forward passes only, several occluded copies
of every document of the group per pass. Wider windows slide over each document's
content tokens alone (narrowed to the content when it is shorter), so that a window
never covers [CLS], [SEP] or padding and a score never depends on the group's width.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import Occlusion

from contract.methods import SPECS
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, reference_ids
from workers.engine.methods.common import Attribution, masked, with_special_tokens

SPEC = SPECS["occlusion"]  # name, parameters, defaults, caps: contract/methods.py


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    if params["window"] > 1:
        return Attribution(scores=_per_document(classifier, group, targets, params["window"],
                                                internal_batch_size))  # fmt: skip
    baselines = reference_ids(classifier, group)
    with torch.inference_mode():
        scores = Occlusion(classifier.forward).attribute(
            group.input_ids,
            sliding_window_shapes=(1,),
            baselines=baselines,
            target=targets,
            additional_forward_args=(group.attention_mask, group.token_type_ids),
            perturbations_per_eval=max(1, internal_batch_size // len(group.indices)),
        )
    # A token equal to its baseline ([CLS], [SEP]) scores 0 by definition, not by the luck
    # of two batches of different sizes rounding the same logit alike.
    return Attribution(scores=masked(scores, group) * (group.input_ids != baselines))


def _per_document(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    window: int,
    internal_batch_size: int,
) -> torch.Tensor:
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=group.input_ids.device)
    pad = classifier.tokenizer.pad_token_id
    for row, length in enumerate(group.lengths):
        content = group.input_ids[row : row + 1, 1 : length - 1]
        if content.shape[1] == 0:
            continue
        forward = with_special_tokens(classifier, group, row)
        with torch.inference_mode():
            part = Occlusion(forward).attribute(
                content,
                sliding_window_shapes=(min(window, content.shape[1]),),
                baselines=pad,
                target=int(targets[row]),
                perturbations_per_eval=max(1, internal_batch_size),
            )
        scores[row, 1 : length - 1] = part[0].float()
    return scores
