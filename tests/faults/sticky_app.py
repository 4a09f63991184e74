"""The real worker app, plus one fault: explaining a text that contains STICKY makes the
engine raise the RuntimeError that torch raises after an illegal memory access on a GPU
(a sticky CUDA error: the process's context is unusable from then on)."""

import workers.engine
import workers.tasks
from workers import app

STICKY = "STICKY-CUDA"
MESSAGE = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call"
)
_engine_explain = workers.engine.explain


def _engine_explain_or_crash(classifier, texts, *args, **kwargs):
    if any(STICKY in text for text in texts):
        raise RuntimeError(MESSAGE)
    return _engine_explain(classifier, texts, *args, **kwargs)


workers.engine.explain = _engine_explain_or_crash
__all__ = ["app"]
