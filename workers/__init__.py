"""explainq workers: ``celery -A workers worker`` runs them.

Importing this package imports neither torch nor the model: each worker process loads
those itself after the fork, so the parent never touches CUDA.
"""

from workers.celery_app import app

__all__ = ["app"]
