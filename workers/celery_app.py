"""The Celery app, configured from the shared settings object."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.signals import worker_init

from contract.settings import get_settings
from contract.tasks import celery_config

app = Celery("explainq")
app.conf.update(celery_config(get_settings()))
app.conf.include = ["workers.tasks"]


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
