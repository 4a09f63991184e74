"""f(x) - f(baseline) for the target label: what LIG's attributions must add up to.

f(baseline) depends on the baseline's ids alone, so it is kept per model rather than
recomputed for every group.
"""

from __future__ import annotations

from typing import cast

import torch

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group

BASELINE_CACHE_SIZE = 4096  # baselines' logits kept per model (BERT's: one per length)
# Where the cache lives in ``classifier.computed``.
BASELINE_LOGITS_KEY = "lig_baseline_logits"

# (autocast, baseline ids, token types) -> the baseline's logits
_Cache = dict[tuple[bool, tuple[int, ...], tuple[int, ...] | None], torch.Tensor]


def logit_gap(
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
    start = baseline_logits(classifier, group, baselines)
    rows = torch.arange(len(targets), device=inputs.device)
    return (inputs[rows, targets] - start[rows, targets]).clone()


def baseline_logits(classifier: Classifier, group: Group, baselines: torch.Tensor) -> torch.Tensor:
    """f(baseline) per document. It depends on the baseline's ids alone ([CLS] [PAD] ...
    [SEP]: on the length, for BERT), so each distinct one is computed once per model and
    precision, unpadded, and kept (a few floats each)."""
    cache = _cache(classifier)
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


def _cache(classifier: Classifier) -> _Cache:
    """The model's baseline-logit cache, created on first use."""
    return cast(_Cache, classifier.computed.setdefault(BASELINE_LOGITS_KEY, {}))
