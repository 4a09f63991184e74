"""The Celery app, configured from the shared settings object."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.signals import worker_init, worker_process_shutdown, worker_shutdown
from kombu import Exchange, Queue

from contract.settings import get_settings
from contract.tasks import celery_config, queue_for_model

_settings = get_settings()
app = Celery("explainq")
app.conf.update(celery_config(_settings))
app.conf.include = ["workers.tasks"]
# A worker consumes its model's queue (EXPLAINQ_MODEL), so it never receives another
# model's chunks, and the shared queue (the sweeper; chunks sent without a route, which
# the task forwards to their model's queue). `-Q` overrides both, as Celery allows.
MODEL_QUEUE = queue_for_model(_settings.model, _settings.queue)
# Declared as Celery declares a queue it creates on demand (the producer's side).
app.conf.task_queues = [
    Queue(q, Exchange(q), routing_key=q) for q in (MODEL_QUEUE, _settings.queue)
]


@worker_init.connect
def _one_task_per_model(sender: Any, **_: Any) -> None:
    """Refuses a pool that would run several tasks in one process at once (threads,
    gevent, eventlet): a process holds one model, and the engine switches parts of it
    (the first-token last layer, eager attention) for the length of a pass."""
    pool = get_implementation(sender.pool_cls)
    if issubclass(pool, PreforkPool | SoloPool) or str(sender.concurrency) == "1":
        return
    name = pool.__module__.rsplit(".", 1)[-1]
    raise SystemExit(
        f"explainq: a {name} pool with concurrency {sender.concurrency} would run several "
        "tasks on one model at once; use the default prefork pool (one process per task) "
        "or --concurrency=1"
    )


@worker_init.connect
def _start_metrics(**_: Any) -> None:
    """Only a worker serves metrics (Flower imports this app too); before the fork."""
    from workers import metrics

    metrics.start(_settings, [MODEL_QUEUE, _settings.queue])


@worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: Any) -> None:
    from workers import metrics

    metrics.child_exited(pid or os.getpid())


@worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    from workers import metrics

    metrics.stop()
