"""The Celery tasks: explain a chunk of documents, and sweep up unfinished ones.

The task carries only the batch id and document ids (``contract.tasks.ChunkMessage``);
texts, model and methods come from the database, which stays the source of truth. A
redelivered task skips documents that are already terminal and cannot write a second
row for the rest.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import Task
from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from contract.cost import batch_cost
from contract.settings import get_settings
from contract.tasks import (
    EXPLAIN_TASK,
    SWEEP_TASK,
    VERIFY_TASK,
    ChunkMessage,
    chunk_send_options,
    model_name,
    queue_for_model,
)
from db.batches import batch_routes
from db.models import Batch
from db.ownership import hand_over, owned_running
from db.replay_rows import stored_rows
from db.session import reset_after_fork, session_scope
from workers.celery_app import app
from workers.chunk import run_chunk
from workers.job import decode
from workers.model_holder import get_model, serves

log = logging.getLogger(__name__)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections opened by the parent must not be shared with the child.
    reset_after_fork()
    # Load the default model now, so the first task does not pay for it.
    settings = get_settings()
    try:
        get_model(settings.model, settings)
    except Exception as error:
        log.warning("default model %r not preloaded: %s", settings.model, error)


class ChunkFailed(Exception):
    """Every document the chunk ran ended FAILED, so the task shows as FAILURE (Flower's
    ``/api/tasks?state=FAILURE``). Raised only once the documents are terminal in the
    database; a late-acknowledged task that raises is acknowledged all the same
    (``task_acks_on_failure_or_timeout``), so nothing is delivered again."""


@app.task(
    name=EXPLAIN_TASK,
    bind=True,
    autoretry_for=(OperationalError,),  # the database blipped: try the chunk again
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=get_settings().db_retries,
)
def explain_chunk(self: Task, batch_id: str, document_ids: list[int]) -> dict[str, Any]:
    """Returns what Flower shows as the result: batch, model, methods, and how many of
    the chunk's documents ended DONE or FAILED here, or were skipped (another task's)."""
    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise ValueError(f"unknown batch {batch_id}")
        job = decode(batch, settings)
        interrupted = owned_running(session, document_ids, self.request.id)
    summary: dict[str, Any] = {"batch": batch_id, "model": model_name(job.model),
                               "methods": job.methods}  # fmt: skip
    if not serves(job.model, settings):
        # Another model's chunk (sent without a route, to the shared queue): forward it,
        # under the same task id, to its model's queue. One that came from that queue
        # already stays here, and run_chunk fails its documents naming why.
        target = queue_for_model(job.model, settings.queue)
        if target != (self.request.delivery_info or {}).get("routing_key"):
            options = chunk_send_options(ChunkMessage(batch_id, document_ids), job.model,
                                         job.methods, settings.queue)  # fmt: skip
            self.apply_async(args=[batch_id, document_ids], task_id=self.request.id, **options)
            return {**summary, "forwarded_to": target}
    # A chunk that already holds RUNNING documents was interrupted (its worker died,
    # perhaps because of one of them): run it one document at a time, so a poison
    # document uses up only its own attempts and the others finish.
    groups = [[doc_id] for doc_id in document_ids] if interrupted else [document_ids]
    totals = {"done": 0, "failed": 0}
    for ids in groups:
        request = self.request
        counts = run_chunk(job, ids, settings, task_id=request.id,
                           retries=request.retries or 0, hostname=request.hostname)  # fmt: skip
        for key, value in counts.items():
            totals[key] += value
    summary |= totals | {"skipped": len(document_ids) - totals["done"] - totals["failed"]}
    if totals["failed"] and not totals["done"]:
        raise ChunkFailed(
            f"batch {batch_id} model {summary['model']} methods {','.join(job.methods)}: "
            f"all {totals['failed']} documents it ran FAILED "
            f"(`results list --batch {batch_id} --status failed`)"
        )
    return summary


@app.task(name=SWEEP_TASK)
def sweep() -> int:
    """Re-sends the documents left PENDING or RUNNING longer than EXPLAINQ_STALE_AFTER
    (a lost message, a Redis restart without AOF): the database is the source of truth.
    Each delivery counts an attempt, so a document cannot be re-sent forever."""
    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        resends = hand_over(session, None, settings.stale_after, settings.chunk_size,
                             partial(batch_cost, settings=settings))  # fmt: skip
        routes = batch_routes(session, {resend.batch_id for resend in resends})
    for resend in resends:
        message = ChunkMessage(resend.batch_id, resend.document_ids)
        model, methods = routes[resend.batch_id]
        options = chunk_send_options(message, model, methods, settings.queue)
        explain_chunk.apply_async(args=message.args(), task_id=resend.task_id, **options)
    sent = sum(len(resend.document_ids) for resend in resends)
    if sent:
        log.warning("sweeper re-sent %d unfinished documents", sent)
    return sent


@app.task(name=VERIFY_TASK, ignore_result=False, acks_late=False)
def verify_rows(row_ids: list[int], allow_other_weights: bool = False) -> dict[str, Any]:
    """Replays stored rows with the model this worker holds (``workers.replay``): the
    verdicts, or the refusal (other weights) as one line. Not acked late: a replay that
    kills its worker is not worth redelivering; the caller times out and says so."""
    from workers.model_holder import NotThisModel
    from workers.replay import WeightsChanged, held_loader, replay

    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        rows = stored_rows(session, row_ids)
    try:
        verdicts = replay(rows, settings, held_loader(settings),
                          allow_other_weights=allow_other_weights)  # fmt: skip
    except (WeightsChanged, FileNotFoundError, NotThisModel) as error:
        return {"refused": str(error), "verdicts": []}
    return {"refused": None, "verdicts": [verdict.as_json() for verdict in verdicts]}
