"""A batch's parameters from the command line, checked before anything is registered."""

from __future__ import annotations

from typing import Any

from contract.caps import as_env, as_option, as_param, cap_problems, stride_problems
from contract.methods import params_problems, parse_pairs
from contract.params import steps
from contract.settings import Settings


def batch_params(
    settings: Settings,
    methods: list[str],
    n_steps: str | None,
    pairs: list[str],
    window_stride: int | None,
    chunk_size: int | None,
) -> dict[str, Any]:
    """The settings' n_steps, then --param, then --n-steps; a ValueError names every bad
    value as the user gave it: a parameter no chosen method takes, a wrong value, or one
    over the EXPLAINQ_MAX_* setting that caps it."""
    given = parse_pairs(pairs)
    params: dict[str, Any] = {"n_steps": settings.n_steps, **given}
    named = {key: as_param for key in given}
    if n_steps is not None:
        try:
            params["n_steps"] = steps(n_steps)
        except ValueError:
            raise ValueError(f"--n-steps must be 1 or more, or 'auto'; not {n_steps!r}") from None
        named["n_steps"] = as_option
    problems = params_problems(methods, params, given=named)
    capped = {**params, **({"chunk_size": chunk_size} if chunk_size else {})}
    named["chunk_size"] = as_option
    problems += cap_problems(capped, settings, lambda k, v: named.get(k, as_env)(k, v))
    problems += stride_problems(settings, window_stride)
    if problems:
        raise ValueError("; ".join(problems))
    if window_stride is not None:
        params["window_stride"] = window_stride
    return params
