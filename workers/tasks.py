"""The one task: explain a chunk of documents and write the results.

The task carries only the batch id and document ids; texts, model and methods come from
the database, which stays the source of truth. A redelivered task skips documents that
are already terminal and cannot write a second row for the rest.
"""

from __future__ import annotations

import logging
import math
import traceback
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.app.task import Context
from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from db.engine import reset_after_fork, session_scope
from db.models import Batch
from db.settings import EXPLAIN_TASK, SWEEP_TASK, Settings, get_settings, over_caps
from db.store import (
    agreement_rows,
    claim,
    fail,
    finish,
    hand_over,
    owned_running,
    params_key,
    save_agreements,
    save_explanations,
    save_representations,
)
from workers.celery_app import app
from workers.fatal import exit_if_sticky
from workers.heartbeat import heartbeat
from workers.model_holder import LoadedModel, describe_device, get_model, worker_name

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


@app.task(
    name=EXPLAIN_TASK,
    bind=True,
    autoretry_for=(OperationalError,),  # the database blipped: try the chunk again
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=get_settings().db_retries,
)
def explain_chunk(self: Task, batch_id: str, document_ids: list[int]) -> dict[str, int]:
    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise ValueError(f"unknown batch {batch_id}")
        job = Job(batch.model, list(batch.methods), dict(batch.params))
        interrupted = owned_running(session, document_ids, self.request.id)
    # A chunk that already holds RUNNING documents was interrupted (its worker died,
    # perhaps because of one of them): run it one document at a time, so a poison
    # document uses up only its own attempts and the others finish.
    groups = [[doc_id] for doc_id in document_ids] if interrupted else [document_ids]
    totals = {"done": 0, "failed": 0}
    for ids in groups:
        for key, value in _run(job, ids, settings, self.request).items():
            totals[key] += value
    return totals


@app.task(name=SWEEP_TASK)
def sweep() -> int:
    """Re-sends the documents left PENDING or RUNNING longer than EXPLAINQ_STALE_AFTER
    (a lost message, a Redis restart without AOF): the database is the source of truth.
    Each delivery counts an attempt, so a document cannot be re-sent forever."""
    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        resends = hand_over(session, None, settings.stale_after, settings.chunk_size)
    for resend in resends:
        explain_chunk.apply_async(args=[resend.batch_id, resend.document_ids],
                                  task_id=resend.task_id)  # fmt: skip
    sent = sum(len(resend.document_ids) for resend in resends)
    if sent:
        log.warning("sweeper re-sent %d unfinished documents", sent)
    return sent


@dataclass(frozen=True)
class Job:
    model: str
    methods: list[str]
    params: dict[str, Any]


def _run(job: Job, document_ids: list[int], settings: Settings, request: Context) -> dict[str, int]:
    url = settings.sqlalchemy_url
    with session_scope(url) as session:
        # Retries after database errors (autoretry) widen the attempt limit by as many.
        claimed = claim(session, document_ids, settings.max_attempts,
                        allowance=request.retries or 0, task_id=request.id)  # fmt: skip
        docs = [(d.id, d.text) for d in claimed]
    if not docs:
        return {"done": 0, "failed": 0}
    loaded, reason = None, _refusal(job, settings)
    if reason is None:
        try:
            loaded = get_model(job.model, settings)
        except Exception as error:  # a missing or broken model fails the documents, visibly
            reason = f"loading model {job.model!r}: {error}"
    if loaded is None:
        with session_scope(url) as session:
            for doc_id, _ in docs:
                fail(session, doc_id, str(reason), request.id)
        return {"done": 0, "failed": len(docs)}

    texts = [text for _, text in docs]
    with heartbeat(url, [doc_id for doc_id, _ in docs], settings.stale_after):
        outcomes = _explain(loaded, texts, job.methods, job.params, settings)
    saved = Results()
    device = describe_device(loaded.device, loaded.classifier.autocast)
    meta = {"worker": worker_name(request.hostname), "device": device}
    for (doc_id, _), outcome in zip(docs, outcomes, strict=True):
        if not isinstance(outcome, str) and (problem := _non_finite(outcome)):
            outcome = problem
        if isinstance(outcome, str):
            saved.failed.append((doc_id, outcome))
        else:
            saved.add(doc_id, loaded.model_id, outcome, meta)
    # One transaction: a document is DONE exactly when everything it produced is stored.
    with session_scope(url) as session:
        save_explanations(session, saved.rows)
        save_representations(session, saved.vectors)
        save_agreements(session, saved.agreements)
        finish(session, saved.done)
        for doc_id, error in saved.failed:
            fail(session, doc_id, error, request.id)
    return {"done": len(saved.done), "failed": len(saved.failed)}


def _non_finite(explained: Any) -> str | None:
    """Why a result must not be stored: NaN or infinite scores (a bf16 overflow, say)
    are no explanation, and PostgreSQL's JSON refuses them."""
    bad = [name for name, result in explained.methods.items()
           if not all(math.isfinite(x) for x in result.attributions)]  # fmt: skip
    if not all(math.isfinite(p) for p in explained.probabilities.values()):
        bad.insert(0, "probabilities")
    return f"non-finite values in {', '.join(bad)}" if bad else None


@dataclass
class Results:
    """What a chunk writes: explanation rows, vectors and agreements of its DONE
    documents, and the errors of its FAILED ones."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[dict[str, Any]] = field(default_factory=list)
    agreements: list[dict[str, Any]] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def add(self, doc_id: int, model_id: int, explained: Any, meta: dict[str, str]) -> None:
        self.done.append(doc_id)
        self.rows.extend(_rows(doc_id, model_id, explained, meta))
        if explained.embedding is not None:
            self.vectors.append(
                {"document_id": doc_id, "model_id": model_id, "vector": explained.embedding}
            )
        self.agreements.extend(agreement_rows(doc_id, model_id, explained.agreement))


def _refusal(job: Job, settings: Settings) -> str | None:
    """Why this worker will not run the batch, if it will not: the producer checks the
    caps too, but a batch may come from elsewhere or a worker may be configured lower."""
    problems = over_caps(settings, job.params)
    return f"refused by this worker: {'; '.join(problems)}" if problems else None


def capped(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Adaptive steps' own limit obeys EXPLAINQ_MAX_STEPS too: the caps check only what a
    batch spells out, and adaptive steps are the default."""
    if str(params.get("n_steps")) != "auto":
        return params
    from workers.engine.methods.lig import ADAPTIVE_PARAMS

    limit = min(int(params.get("max_steps", ADAPTIVE_PARAMS["max_steps"])), settings.max_steps)
    return {**params, "max_steps": limit}


def _explain(loaded: LoadedModel, texts, methods, params, settings) -> list[Any]:
    """Explanations in input order; a document that fails becomes its error text and
    the rest of the chunk still completes."""
    from workers.engine import explain
    from workers.engine.explain import ExecutionOptions

    params = capped(params, settings)
    options = ExecutionOptions(
        internal_batch_size=settings.internal_batch_size,
        max_internal_batch_size=settings.max_internal_batch_size,
        max_tokens=settings.max_tokens,
        window_stride=params.get("window_stride") or settings.window_stride,
    )
    quality = settings.quality
    try:
        return explain(loaded.classifier, texts, methods, params, options, quality)
    except Exception as error:
        exit_if_sticky(error)  # a broken CUDA context would fail every document after
        log.exception("chunk failed as a whole; explaining its documents one by one")
    outcomes: list[Any] = []
    for text in texts:
        try:
            outcomes.extend(explain(loaded.classifier, [text], methods, params, options, quality))
        except Exception as error:
            exit_if_sticky(error)
            outcomes.append(f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
    return outcomes


def _rows(doc_id: int, model_id: int, explained: Any, meta: dict[str, str]) -> list[dict]:
    """One explanation row per method, each with the document's prediction."""
    return [
        {
            "document_id": doc_id,
            "model_id": model_id,
            "method": name,
            "params_key": params_key(name, result.params),
            "params": result.params,
            "label": explained.label,
            "confidence": explained.confidence,
            "probabilities": explained.probabilities,
            "tokens": explained.tokens,
            "attributions": result.attributions,
            "convergence_delta": result.convergence_delta,
            "relative_gap": result.relative_gap,
            "steps": result.steps,
            "truncated": explained.truncated,
            "timings": {**explained.timings, "seconds": result.seconds},
            "quality": result.quality,
            "extra": result.extra,
            "windows": explained.windows,
            **meta,
        }
        for name, result in explained.methods.items()
    ]
