"""Input x gradient over the word embeddings (Shrikumar et al., 2016; Captum
``LayerGradientXActivation``): embedding . d logit[target] / d embedding, summed over
the hidden dimension. Signed like ``lig``: positive pushes toward the predicted label.
It is one-step ``lig`` with a zero baseline, so it costs one backward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from contract.methods import SPECS
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import Attribution, masked
from workers.engine.methods.saliency import embedding_gradients

SPEC = SPECS["input_x_gradient"]  # name, parameters, defaults, caps: contract/methods.py


def attribute(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    params: dict[str, Any],
    internal_batch_size: int,
) -> Attribution:
    products = embedding_gradients(classifier, group, targets, times_input=True)
    return Attribution(scores=masked(products.sum(-1), group))
