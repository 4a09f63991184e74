"""Layer Integrated Gradients over the word embeddings.

Target: the predicted label. Baseline: [CLS] [PAD] ... [SEP]. Scores are the
attributions summed over the embedding dimension, so that for every document
sum(scores) = f(x) - f(baseline) + convergence_delta (completeness, in logits).

The path integral is computed here (``lig_path``) rather than by Captum's
LayerIntegratedGradients, which takes only its fixed node sets and runs two extra forward
passes to capture the layer; the tests hold the two equal. ``nodes="uniform"`` spreads a
rule's nodes evenly (with fixed steps: Captum's Gauss-Legendre rule); ``nodes="calibrated"``
places them where the model's integrand changes (``lig_nodes``), which reaches a tolerance
with fewer steps. With ``n_steps="auto"`` the steps adapt per document on a nested rule
(``lig_adaptive``) until its completeness gap (``lig_baseline``, ``lig_completeness``) is
within ``tolerance``; the steps and nodes each document cost, and whether it was computed
again in fp32, are returned with it.
"""

from __future__ import annotations

from typing import Any

import torch

from contract.methods import SPECS
from workers.engine import quadrature
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, reference_ids
from workers.engine.methods.common import Attribution
from workers.engine.methods.lig_adaptive import adaptive_steps
from workers.engine.methods.lig_baseline import logit_gap
from workers.engine.methods.lig_completeness import completed
from workers.engine.methods.lig_nodes import node_density

# A module global, not a call into lig_path, so that tests can wrap it (lig._integrate).
from workers.engine.methods.lig_path import integrate as _integrate

__all__ = ["SPEC", "attribute", "node_density"]

SPEC = SPECS["lig"]  # name, parameters, defaults, caps, recorded rule: contract/methods.py


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    """The attributions of ``group`` for ``targets`` with ``params`` as ``SPEC.resolve``
    gives them: fixed steps in one rule for all documents, adaptive steps per document."""
    baselines = reference_ids(classifier, group)
    gap = logit_gap(classifier, group, baselines, targets)
    calibrated = params["nodes"] == "calibrated"
    density = node_density(classifier, internal_batch_size) if calibrated else quadrature.UNIFORM
    if params["n_steps"] != "auto":
        scores = _integrate(
            classifier, group, baselines, targets, density.rule(params["n_steps"]),
            internal_batch_size,
        )  # fmt: skip
        result = completed(scores, gap, [params["n_steps"]] * len(group.indices))
        result.nodes = result.steps
    else:
        result = adaptive_steps(
            classifier, group, baselines, targets, params, gap, density, internal_batch_size
        )
    if calibrated:
        result.params = {**params, "node_density": density.as_params()}
    return result
