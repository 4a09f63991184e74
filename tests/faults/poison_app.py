"""The real worker app, plus two faults: explaining a text that contains POISON_PILL
kills the worker process on the spot (SIGKILL), as a segfault in a tokenizer or a
driver would; a text that contains BROKEN makes the engine raise, as a bug would."""

import os
import signal

import workers.chunk
import workers.engine
from workers import app

POISON_PILL = "POISON-PILL"
BROKEN = "BROKEN-DOCUMENT"
_explain = workers.chunk.explain_texts
_engine_explain = workers.engine.explain


def _engine_explain_or_raise(classifier, texts, *args, **kwargs):
    if any(BROKEN in text for text in texts):
        raise RuntimeError("injected engine failure")
    return _engine_explain(classifier, texts, *args, **kwargs)


def _explain_or_die(loaded, texts, *args, **kwargs):
    if any(POISON_PILL in text for text in texts):
        os.kill(os.getpid(), signal.SIGKILL)
    return _explain(loaded, texts, *args, **kwargs)


workers.chunk.explain_texts = _explain_or_die
workers.engine.explain = _engine_explain_or_raise
__all__ = ["app"]
