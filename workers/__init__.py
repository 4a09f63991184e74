"""explainq workers: ``celery -A workers worker`` runs them.

Importing this package imports neither torch nor the model: each worker process loads
those itself after the fork, so the parent never touches CUDA. Nor does it import Celery
until ``workers.app`` is asked for, so the engine (``workers.engine``) can be used and
benchmarked on a machine that has only torch, transformers and captum.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":  # what `celery -A workers` looks up
        from workers.celery_app import app

        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
