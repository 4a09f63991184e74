"""The one check of what a batch may ask of a worker against the ``EXPLAINQ_MAX_*`` caps.

Called where input enters (``producer submit``, the environment when ``Settings`` is
read) and once in the worker, for batches that did not come through our producer or for a
worker configured lower than the producer. Each problem names the value as the user gave
it (``--param n_samples=5000``, ``--chunk-size 2000``, ``EXPLAINQ_N_STEPS=5000``) and the
setting that caps it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from contract.methods import SPECS

if TYPE_CHECKING:
    from contract.settings import Settings

Given = Callable[[str, Any], str]  # (name, value) -> how the user wrote it

# Execution settings that a batch or the environment may set, and their caps.
EXECUTION_CAPS = {"internal_batch_size": "max_internal_batch_size", "chunk_size": "max_chunk_size"}


def as_param(name: str, value: Any) -> str:
    return f"--param {name}={value}"


def as_option(name: str, value: Any) -> str:
    return f"--{name.replace('_', '-')} {value}"


def as_env(name: str, value: Any) -> str:
    return f"EXPLAINQ_{name.upper()}={value}"


def caps() -> dict[str, str]:
    """Every capped value's name -> the Settings field that caps it."""
    from_specs = {p.name: p.cap for spec in SPECS.values() for p in spec.params if p.cap}
    return {**from_specs, **EXECUTION_CAPS}


def cap_problems(values: Mapping[str, Any], settings: Settings, given: Given) -> list[str]:
    """One line per value above its cap."""
    problems = []
    for name, value in values.items():
        cap = caps().get(name)
        if cap is None or not isinstance(value, int) or isinstance(value, bool):
            continue
        limit = getattr(settings, cap)
        if value > limit:
            problems.append(f"{given(name, value)} is over the limit {as_env(cap, limit)}")
    return problems


def within_caps(
    params: Mapping[str, Any], methods: list[str], settings: Settings
) -> dict[str, Any]:
    """``params`` with every capped default that a batch left unset brought within its cap
    (adaptive steps' max_steps under a lower EXPLAINQ_MAX_STEPS, say): a default must never
    exceed what the batch itself could have asked for."""
    lowered = dict(params)
    for name in methods:
        for param in SPECS[name].params:
            if param.cap and param.name not in params and isinstance(param.default, int):
                limit = getattr(settings, param.cap)
                if param.default > limit:
                    lowered[param.name] = limit
    return lowered


def stride_problems(settings: Settings, stride: int | None, given: Given = as_option) -> list[str]:
    """A window stride must leave no gap: at most a window's content (EXPLAINQ_MAX_TOKENS
    less [CLS] and [SEP]; a model with a smaller limit narrows it further)."""
    width = settings.max_tokens - 2
    if stride is None or stride <= width:
        return []
    limit = f"EXPLAINQ_MAX_TOKENS-2={width}"
    return [f"{given('window_stride', stride)} is over the limit {limit} (no gaps between windows)"]
