"""LIME over tokens (Ribeiro et al., 2016; Captum ``Lime``): a weighted ridge
regression of the target logit on which content tokens are present, fitted to
``n_samples`` random perturbations in which absent tokens are [PAD] ([CLS] and [SEP]
always stay, and score 0). Samples are weighted as in the LIME text explainer, by an
exponential kernel of the cosine distance between the perturbation's presence vector
and the all-present one (``kernel_width``, in cosine units: the reference's 25 / 100).
Seeded with ``seed`` per document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Lime

from contract.methods import SPECS
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import Attribution
from workers.engine.methods.surrogate import WeightedRidge, per_document

SPEC = SPECS["lime"]  # name, parameters, defaults, caps: contract/methods.py


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    def explainer(forward: Callable[[torch.Tensor], torch.Tensor]) -> Lime:
        return Lime(
            forward,
            interpretable_model=WeightedRidge(alpha=params["ridge"]),
            similarity_func=_presence_kernel(params["kernel_width"]),
        )

    scores = per_document(
        classifier, group, targets, explainer, params["n_samples"], params["seed"],
        internal_batch_size,
    )  # fmt: skip
    return Attribution(scores=scores)


def _presence_kernel(width: float) -> Callable[..., float]:
    """exp(-d^2 / width^2), d the cosine distance between the sample's presence vector
    and all-present: token ids themselves have no meaningful distance."""

    def similarity(_original: Any, _perturbed: Any, presence: torch.Tensor, **_: Any) -> float:
        present = presence.float().reshape(-1)
        cosine = present.sum() / (present.norm() * present.numel() ** 0.5).clamp_min(1e-12)
        return float(torch.exp(-((1 - cosine) ** 2) / width**2))

    return similarity
