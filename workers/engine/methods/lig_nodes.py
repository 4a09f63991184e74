"""LIG's calibrated node density: where along the path the model's integrand changes,
measured once per model and kept on the classifier."""

from __future__ import annotations

from typing import cast

import torch

from workers.engine import quadrature
from workers.engine.classifier import Classifier
from workers.engine.encoding import Tokenized, pad_group, reference_ids
from workers.engine.methods.lig_path import full_precision, integrand
from workers.engine.quadrature import NodeDensity

# Where the density lives in ``classifier.computed``.
NODE_DENSITY_KEY = "lig_node_density"


def node_density(classifier: Classifier, rows: int | None = None) -> NodeDensity:
    """The model's calibrated node density, computed once: the integrand's size along
    the path (summed |contribution| of every token, averaged over the probe sentences,
    in fp32) at 64 uniform Gauss-Legendre nodes, in passes of at most ``rows`` rows
    (the caller's, so that out-of-memory back-off shrinks these passes too)."""
    if NODE_DENSITY_KEY not in classifier.computed:
        classifier.computed[NODE_DENSITY_KEY] = _calibrate(classifier, rows)
    return cast(NodeDensity, classifier.computed[NODE_DENSITY_KEY])


def _calibrate(classifier: Classifier, rows: int | None) -> NodeDensity:
    """Fits the density to the integrand's normalized size on the probe sentences."""
    tokenizer = classifier.tokenizer
    probes = [Tokenized(tokenizer(t)["input_ids"]) for t in quadrature.PROBES]
    group = pad_group(classifier, probes, list(range(len(probes))))
    alphas, _ = quadrature.UNIFORM.rule(quadrature.PROFILE_STEPS)
    with full_precision(classifier, True):
        with torch.no_grad():
            targets = classifier.forward(
                group.input_ids, group.attention_mask, group.token_type_ids
            ).argmax(-1)
        values = integrand(
            classifier, group, reference_ids(classifier, group), targets, alphas,
            rows=min(rows or 1 << 30, len(probes) * quadrature.PROFILE_STEPS),
        )  # fmt: skip
    size = values.abs().sum(-1).double()  # documents x nodes
    profile = (size / size.amax(-1, keepdim=True).clamp_min(1e-12)).mean(0)
    return quadrature.fit(alphas, profile)
