"""Attribution methods by the name stored in the database and used on the command line.

Each method is a module with ``SPEC`` (its ``contract.methods.MethodSpec``: parameters,
defaults, caps, what is recorded) and ``attribute(classifier, group, targets, params,
internal_batch_size)`` returning an ``Attribution`` (``methods.common``): one score per
token position and, for path methods, the convergence delta and the steps taken per
document. Every method's target is the predicted label, and its scores keep the sign
Captum gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from contract.methods import SPECS, MethodSpec
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods import (
    attention,
    input_x_gradient,
    kernel_shap,
    lig,
    lime,
    occlusion,
    saliency,
)
from workers.engine.methods.common import Attribution


class Method(Protocol):
    SPEC: MethodSpec

    def attribute(
        self,
        classifier: Classifier,
        group: Group,
        targets: torch.Tensor,
        params: dict[str, Any],
        internal_batch_size: int,
    ) -> Attribution: ...


_MODULES: tuple[Method, ...] = (
    lig, saliency, input_x_gradient, attention, occlusion, kernel_shap, lime
)  # fmt: skip
METHODS: dict[str, Method] = {module.SPEC.name: module for module in _MODULES}
if set(METHODS) != set(SPECS):  # a spec without its module, or a module without its spec
    raise ImportError(f"methods {sorted(set(METHODS) ^ set(SPECS))} lack a spec or a module")


def params_for(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's full parameter set: its defaults with the overrides it takes."""
    if method not in SPECS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(SPECS)}")
    return SPECS[method].resolve(overrides)
