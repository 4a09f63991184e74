"""The attribution engine: a plain library (no Celery, no database).

Given a loaded classifier and texts it returns, per document, the prediction and the
token attributions of each requested method. Workers wrap it; benchmarks and tests
call it directly.
"""

from workers.engine.classifier import Classifier
from workers.engine.explain import DocumentExplanation, ExecutionOptions, MethodResult, explain
from workers.engine.methods import METHODS, params_for

__all__ = [
    "METHODS",
    "Classifier",
    "DocumentExplanation",
    "ExecutionOptions",
    "MethodResult",
    "explain",
    "params_for",
]
