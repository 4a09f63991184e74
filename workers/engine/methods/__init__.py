"""Attribution methods by the name stored in the database and used on the command line.

Each method is a module with ``PARAMS`` (its default parameters, recorded on every row)
and ``attribute(classifier, group, targets, params) -> (scores, deltas)`` returning one
score per token position and, for path methods, one convergence delta per document.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from workers.engine.methods import lig

METHODS: dict[str, ModuleType] = {"lig": lig}


def params_for(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's full parameter set: its defaults with the recognised overrides."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    defaults: dict[str, Any] = dict(METHODS[method].PARAMS)
    for key, value in (overrides or {}).items():
        if key in defaults:
            defaults[key] = type(defaults[key])(value)
    return defaults
