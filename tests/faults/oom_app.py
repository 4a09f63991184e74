"""The real worker app, with CUDA out-of-memory injected: every pass of the engine wider
than ``EXPLAINQ_TEST_OOM_ABOVE`` rows (default 8) raises ``torch.OutOfMemoryError``
before it computes anything, as a GPU that is too small would. The engine's back-off
must halve the rows until a pass fits, and record the retries."""

import importlib
import os
from typing import Any

import torch

from workers import app

# The module, not the function of the same name that ``workers.engine`` re-exports.
engine = importlib.import_module("workers.engine.explain")

OOM_ABOVE = int(os.environ.get("EXPLAINQ_TEST_OOM_ABOVE", "8"))
_explain_group = engine._explain_group


def _explain_group_or_oom(*args: Any, **kwargs: Any) -> Any:
    # The rows per pass are the last argument, whatever comes before them.
    rows = kwargs["internal_batch_size"] if "internal_batch_size" in kwargs else args[-1]
    if rows > OOM_ABOVE:
        raise torch.OutOfMemoryError(f"injected: CUDA out of memory ({rows} rows > {OOM_ABOVE})")
    return _explain_group(*args, **kwargs)


engine._explain_group = _explain_group_or_oom
__all__ = ["app"]
