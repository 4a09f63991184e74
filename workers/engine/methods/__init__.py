"""Attribution methods by the name stored in the database and used on the command line.

Each method is a module with ``PARAMS`` (its default parameters, recorded on every row)
and ``attribute(classifier, group, targets, params, internal_batch_size)`` returning an
``Attribution`` (``methods.common``): one score per token position and, for path
methods, the convergence delta and the steps taken per document. Every method's target
is the predicted label, and its scores keep the sign Captum gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from workers.engine.methods import (
    attention,
    input_x_gradient,
    kernel_shap,
    lig,
    lime,
    occlusion,
    saliency,
)

METHODS: dict[str, ModuleType] = {
    "lig": lig,
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "attention": attention,
    "occlusion": occlusion,
    "kernel_shap": kernel_shap,
    "lime": lime,
}


def params_for(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's full parameter set: its defaults with the overrides it knows."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    module = METHODS[method]
    known = {**module.PARAMS, **getattr(module, "ADAPTIVE_PARAMS", {})}
    params = dict(module.PARAMS)
    params.update({k: v for k, v in (overrides or {}).items() if k in known})
    normalize = getattr(module, "normalize", None)
    return normalize(params) if normalize else params
