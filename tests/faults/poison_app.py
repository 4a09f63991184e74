"""The real worker app, plus a fault for the poison-document scenario: explaining a
text that contains POISON_PILL kills the worker process on the spot (SIGKILL), as a
segfault in a tokenizer or a driver would."""

import os
import signal

import workers.tasks
from workers import app

POISON_PILL = "POISON-PILL"
_explain = workers.tasks._explain


def _explain_or_die(loaded, texts, *args, **kwargs):
    if any(POISON_PILL in text for text in texts):
        os.kill(os.getpid(), signal.SIGKILL)
    return _explain(loaded, texts, *args, **kwargs)


workers.tasks._explain = _explain_or_die
__all__ = ["app"]
