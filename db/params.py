"""What a batch may set of its methods' parameters (``producer submit --param k=v``), parsed
and checked at the producer, where a typo or an over-cap value costs one line of error
rather than a batch of FAILED documents.

Parameters are one flat mapping per batch; each method takes the keys it knows (the
engine's ``params_for``), so ``n_samples`` reaches kernel_shap and lime alike. A test
keeps every key here a parameter of some method of ``workers.engine.methods``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from db.settings import FIRST_LEVEL, Settings, over_caps


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _samples(text: str) -> int:
    value = int(text)
    if value < 2:  # a surrogate model needs two coalitions at least
        raise ValueError("must be at least 2")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:  # what torch.manual_seed takes
        raise ValueError("must be between 0 and 2**63 - 1")
    return value


def _steps(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1")
    return value


def _max_steps(text: str) -> int:
    value = _positive_int(text)
    if value < FIRST_LEVEL:
        raise ValueError(f"must be at least {FIRST_LEVEL}, the first level of adaptive steps")
    return value


def _nodes(text: str) -> str:
    if text not in ("uniform", "calibrated"):
        raise ValueError("must be uniform or calibrated")
    return text


def _norm(text: str) -> str:
    if text not in ("l1", "l2"):
        raise ValueError("must be l1 or l2")
    return text


# name -> (parser, what it means)
TUNABLE: dict[str, tuple[Callable[[str], Any], str]] = {
    "n_steps": (_steps, "lig: integration steps, or auto"),
    "tolerance": (_fraction, "lig with n_steps=auto: completeness gap to reach"),
    "max_steps": (
        _max_steps,
        "lig with n_steps=auto: most steps per document (levels: 9, 19, 39, 79, 159)",
    ),
    "nodes": (_nodes, "lig: uniform (Captum's Gauss-Legendre) or calibrated to the model"),
    "n_samples": (_samples, "kernel_shap, lime: perturbed samples per document (2 or more)"),
    "seed": (_seed, "kernel_shap, lime: sampling seed (0 .. 2**63 - 1)"),
    "window": (_positive_int, "occlusion: tokens occluded together"),
    "norm": (_norm, "saliency: l1 or l2 norm of the gradient"),
}


def parse_params(pairs: Iterable[str], settings: Settings) -> dict[str, Any]:
    """``key=value`` strings as typed values; a ValueError names the first bad one and,
    for a value over its cap, the setting that caps it."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in TUNABLE:
            known = ", ".join(TUNABLE)
            raise ValueError(f"--param {pair!r}: expected key=value with a key of: {known}")
        try:
            params[key] = TUNABLE[key][0](text.strip())
        except ValueError as error:
            reason = str(error) if "must" in str(error) else "not a valid value"
            raise ValueError(f"--param {key}={text}: {reason}") from None
    check_caps(params, settings)
    return params


def check_caps(params: dict[str, Any], settings: Settings) -> None:
    """Raises ValueError naming every parameter above its EXPLAINQ_MAX_* cap."""
    problems = over_caps(settings, params)
    if problems:
        raise ValueError("; ".join(problems))
