"""Kernel SHAP over tokens (Lundberg & Lee, 2017; Captum ``KernelShap``): Shapley values
of the content tokens for the target logit, estimated from ``n_samples`` coalitions in
which absent tokens are [PAD] ([CLS] and [SEP] always stay, and score 0). The estimate
is seeded with ``seed`` per document, so it is reproducible; the scores add up to about
f(x) - f(baseline) in logits, like ``lig``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import KernelShap

from contract.methods import SPECS
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import Attribution
from workers.engine.methods.surrogate import WeightedRidge, per_document

SPEC = SPECS["kernel_shap"]  # name, parameters, defaults, caps: contract/methods.py


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    scores = per_document(
        classifier, group, targets, _explainer, params["n_samples"], params["seed"],
        internal_batch_size,
    )  # fmt: skip
    return Attribution(scores=scores)


def _explainer(forward: Callable[[torch.Tensor], torch.Tensor]) -> KernelShap:
    """Captum's Kernel SHAP with an exact least-squares fit (no scikit-learn)."""
    explainer = KernelShap(forward)
    explainer.interpretable_model = WeightedRidge(alpha=0.0)
    return explainer
