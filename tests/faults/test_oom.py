"""Scenario 5: CUDA out-of-memory injected into the engine of a real worker. Every pass
wider than a few rows fails; the engine halves the rows and retries, every document
finishes, the rows record the retries, and the attributions are those of a run without
injection."""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy import select

from db.models import Document, Explanation
from db.session import session_scope
from tests.faults.counting import accounting, assert_complete, database_kind, drain, record
from tests.faults.counting import submit as submit_file
from tests.processes import Deployment

pytestmark = pytest.mark.slow
WORDS = "a gorgeous witty seductive movie strictly routine utterly incompetent lazy script"


def results(deployment: Deployment, batch_id: str) -> dict[str, Explanation]:
    with session_scope(deployment.url) as session:
        rows = session.execute(
            select(Document.external_id, Explanation)
            .join(Explanation, Explanation.document_id == Document.id)
            .where(Document.batch_id == batch_id)
        ).all()
    return dict(rows)


def test_out_of_memory_is_retried_smaller_and_changes_no_result(deploy, write):
    # Passes start at 64 rows; over 16 they run out of memory: 64 -> 32 -> 16 per group.
    deployment = deploy(internal_batch_size=64, test_oom_above=16)
    documents = 32
    texts = [
        " ".join(WORDS.split()[(i + j) % 11] for j in range(3 + i % 17)) for i in range(documents)
    ]
    path = write("oom.txt", "\n".join(texts) + "\n")

    deployment.start_worker("oom", app="tests.faults.oom_app")
    started = time.monotonic()
    injected = submit_file(deployment, path)
    drain(deployment, injected)
    drained = time.monotonic() - started
    deployment.stop()
    counts = accounting(deployment, injected)

    deployment.start_worker("plain")
    reference = submit_file(deployment, path)
    drain(deployment, reference)
    assert_complete(accounting(deployment, reference), documents)

    assert_complete(counts, documents)
    with_oom, without = results(deployment, injected), results(deployment, reference)
    retries = [row.timings["oom_retries"] for row in with_oom.values()]
    worst = max(
        abs(a - b) / max(1.0, abs(b))
        for doc, row in with_oom.items()
        for a, b in zip(row.attributions, without[doc].attributions, strict=True)
    )
    record("injected CUDA out-of-memory (passes over 16 rows)", documents=documents,
           database=database_kind(deployment), **counts, oom_retries_min=min(retries),
           oom_retries_max=max(retries), max_relative_difference=worst,
           seconds_to_drain=round(drained, 1))  # fmt: skip
    assert min(retries) > 0
    assert all(row.timings["oom_retries"] == 0 for row in without.values())
    for doc, row in with_oom.items():
        plain = without[doc]
        assert (row.tokens, row.label) == (plain.tokens, plain.label), doc
        assert math.isclose(row.confidence, plain.confidence, rel_tol=1e-5), doc
    assert worst < 1e-4
