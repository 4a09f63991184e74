"""A sticky CUDA error ends the worker process; the pool starts a fresh one, the task is
delivered again, and the document that causes it every time is FAILED after its
attempts while the rest of its chunk finishes."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.models import Document, Status
from db.session import session_scope
from tests.faults.counting import accounting, assert_complete, drain, record, submit
from tests.faults.sticky_app import STICKY
from workers.fatal import is_sticky_cuda_error

pytestmark = pytest.mark.slow


def test_sticky_and_ordinary_errors_are_told_apart() -> None:
    assert is_sticky_cuda_error(
        RuntimeError("CUDA error: an illegal memory access was encountered")
    )
    assert is_sticky_cuda_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_sticky_cuda_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_sticky_cuda_error(ValueError("an illegal memory access in a tokenizer"))


def test_a_sticky_cuda_error_ends_the_process_and_the_task_is_redelivered(deployment, write):
    texts = [f"plain review number {i}" for i in range(12)]
    texts[5] = f"this review trips a {STICKY} error"
    batch_id = submit(deployment, write("sticky.txt", "\n".join(texts) + "\n"))
    started = time.monotonic()
    worker = deployment.start_worker("sticky", app="tests.faults.sticky_app")
    drained = drain(deployment, batch_id)
    counts = accounting(deployment, batch_id)
    exits = (deployment.home / "sticky.log").read_text().count("sticky CUDA error")
    record("sticky CUDA error", documents=len(texts), process_exits=exits, **counts,
           seconds_to_drain=round(drained, 1))  # fmt: skip
    assert_complete(counts, len(texts), failed=1)
    with session_scope(deployment.url) as session:
        failed = session.scalars(select(Document).where(Document.status == Status.FAILED)).one()
    assert STICKY in failed.text and failed.attempts == 3
    # One exit per delivery that reached the engine with the document in it: the first
    # (whole chunk) and each single-document retry until the attempts ran out.
    assert exits >= 2
    assert worker.poll() is None  # the main worker process lives on; only its child died
    assert time.monotonic() - started < 240
