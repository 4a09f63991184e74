"""Running a chunk: claim its documents, predict with the engine, encode, write.

decode (``job``) -> predict (the engine, here) -> encode (``encode``) -> one transaction
(``db.writes.save_chunk``), in the shape of LitServe's hooks: nothing about Celery
reaches the engine, nothing about BERT reaches the task.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from typing import Any

from contract.settings import Settings
from db.ownership import claim, fail
from db.records import ChunkRecords
from db.session import session_scope
from db.writes import save_chunk
from workers.encode import encode
from workers.fatal import exit_if_sticky
from workers.heartbeat import heartbeat
from workers.job import Job
from workers.metrics import record_chunk
from workers.model_holder import LoadedModel, describe_device, get_model, worker_name

log = logging.getLogger(__name__)


def run_chunk(
    job: Job,
    document_ids: list[int],
    settings: Settings,
    *,
    task_id: str | None,
    retries: int,
    hostname: str | None,
) -> dict[str, int]:
    """Explains the documents of the chunk that this task may run; returns how many ended
    DONE and FAILED."""
    url = settings.sqlalchemy_url
    with session_scope(url) as session:
        # Retries after database errors (autoretry) widen the attempt limit by as many.
        claimed = claim(session, document_ids, settings.max_attempts,
                        allowance=retries, task_id=task_id)  # fmt: skip
        docs = [(d.id, d.text) for d in claimed]
    if not docs:
        return {"done": 0, "failed": 0}
    loaded, reason = None, job.refusal
    if reason is None:
        try:
            loaded = get_model(job.model, settings)
        except Exception as error:  # a missing or broken model fails the documents, visibly
            reason = f"loading model {job.model!r}: {error}"
    if loaded is None:
        with session_scope(url) as session:
            for doc_id, _ in docs:
                fail(session, doc_id, str(reason), task_id)
        record_chunk(job.model, job.methods, [], len(docs), 0.0)
        return {"done": 0, "failed": len(docs)}

    with heartbeat(url, [doc_id for doc_id, _ in docs], settings.stale_after):
        outcomes = explain_texts(loaded, [text for _, text in docs], job, settings)
    records = ChunkRecords()
    provenance = {
        "batch_id": job.batch_id,
        "worker": worker_name(hostname),
        "device": describe_device(loaded.device, loaded.classifier.autocast),
        "execution": job.execution(),
    }
    for (doc_id, text), outcome in zip(docs, outcomes, strict=True):
        if isinstance(outcome, str):
            records.failed.append((doc_id, outcome))
        else:
            encode(records, doc_id, text, loaded.model_id, outcome, provenance)
    # One transaction: a document is DONE exactly when everything it produced is stored.
    started = time.perf_counter()
    with session_scope(url) as session:
        save_chunk(session, records, task_id)
    record_chunk(job.model, job.methods, records.explanations, len(records.failed),
                 time.perf_counter() - started)  # fmt: skip
    return {"done": len(records.done), "failed": len(records.failed)}


def explain_texts(
    loaded: LoadedModel, texts: Sequence[str], job: Job, settings: Settings
) -> list[Any]:
    """Explanations in input order; a document that fails becomes its error text and the
    rest of the chunk still completes."""
    from workers.engine import explain
    from workers.engine.explain import ExecutionOptions

    options = ExecutionOptions(
        internal_batch_size=settings.internal_batch_size,
        max_internal_batch_size=settings.max_internal_batch_size,
        max_tokens=job.max_tokens,
        window_stride=job.window_stride,
    )

    def run(some: Sequence[str]) -> list[Any]:
        return explain(loaded.classifier, some, job.methods, job.params, options, job.quality)

    try:
        return run(texts)
    except Exception as error:
        exit_if_sticky(error)  # a broken CUDA context would fail every document after
        log.exception("chunk failed as a whole; explaining its documents one by one")
    outcomes: list[Any] = []
    for text in texts:
        try:
            outcomes.extend(run([text]))
        except Exception as error:
            exit_if_sticky(error)
            outcomes.append(f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
    return outcomes
