"""Errors after which a worker process must not go on.

A sticky CUDA error (an illegal memory access, a device-side assert, a launch failure,
an uncorrectable ECC error) leaves the process's CUDA context unusable: every later
kernel in this process fails too. So the process exits. The pool starts a fresh one with
a new context, and, because tasks are acknowledged late and rejected when their worker
is lost, the broker delivers the task again; each delivery counts an attempt on its
documents, so a document that causes the error every time ends FAILED after
``EXPLAINQ_MAX_ATTEMPTS``. Out-of-memory is not sticky: the engine backs off instead.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE
STICKY_CUDA_MARKERS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "illegal instruction",
    "misaligned address",
    "uncorrectable ecc error",
    "cudaerrorlaunchfailure",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "gpu has fallen off the bus",
)


def is_sticky_cuda_error(error: BaseException) -> bool:
    text = str(error).lower()
    return "cuda" in text and any(marker in text for marker in STICKY_CUDA_MARKERS)


def exit_if_sticky(error: BaseException) -> None:
    """Ends this process (without unwinding: nothing may touch CUDA again) when
    ``error`` is a sticky CUDA error; returns otherwise."""
    if not is_sticky_cuda_error(error):
        return
    log.critical("sticky CUDA error, ending the worker process for a fresh one: %s", error)
    logging.shutdown()  # flush the log before the hard exit
    os._exit(EXIT_CODE)
