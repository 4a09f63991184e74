"""What travels through Redis: task names, the message of a chunk, and the Celery settings
that the producer, the workers and Flower share verbatim.

Tasks are sent by name, so the producer never imports the worker code (nor torch). A
message carries ids only, never texts: the database is the source of truth, and Flower
shows task arguments to its users.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contract.settings import Settings

EXPLAIN_TASK = "explainq.explain_chunk"
SWEEP_TASK = "explainq.sweep"
# Replay stored rows (args: row ids, allow_other_weights); its result, the verdicts,
# comes back through the result backend: the one task whose result is kept.
VERIFY_TASK = "explainq.verify"


@dataclass(frozen=True)
class ChunkMessage:
    """The arguments of ``EXPLAIN_TASK``: a batch and some of its document ids."""

    batch_id: str
    document_ids: list[int]

    def args(self) -> list[Any]:
        return [self.batch_id, self.document_ids]


def model_name(model: str) -> str:
    """A model's name as its queue carries it: the checkpoint directory's name (what the
    workers call the model), in characters safe for any broker and for Flower's URLs."""
    name = PurePath(model.rstrip("/\\")).name or model
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def queue_for_model(model: str, prefix: str) -> str:
    """The one queue the tasks of ``model`` go to: ``EXPLAINQ_QUEUE`` (the prefix, also
    the shared queue of the sweeper) dot the model's name. A worker consumes its own."""
    return f"{prefix}.{model_name(model)}"


def chunk_send_options(
    message: ChunkMessage, model: str, methods: Sequence[str], prefix: str
) -> dict[str, Any]:
    """How a chunk is sent: to its model's queue, and shown (in Flower, in logs) by batch,
    model, methods and size; never texts, which the message does not carry anyway."""
    shown = (f"batch={message.batch_id} model={model_name(model)} methods={','.join(methods)} "
             f"documents={len(message.document_ids)}")  # fmt: skip
    # ignore_result: the sender never reads a chunk's result (Flower reads the events).
    # Sent by name, the task's own setting is unknown here, and with the verify task's
    # result backend configured Celery would subscribe to every chunk's result.
    return {"queue": queue_for_model(model, prefix), "argsrepr": shown, "kwargsrepr": "{}",
            "ignore_result": True}  # fmt: skip


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared verbatim by producer, workers and Flower."""
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # A broker that vanishes without closing the TCP connection must not hang a
            # publish (producer, sweeper, retry) forever.
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
            # Redis Sentinel: the sentinels name the current master; kombu asks again
            # after a failover.
            **({"master_name": settings.broker_master} if settings.broker_master else {}),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker outlives any broker outage
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Unrouted tasks (the sweeper's) go to the shared queue that every worker also
        # consumes; a chunk goes to its model's queue (queue_for_model).
        "task_default_queue": settings.queue,
        "task_routes": {SWEEP_TASK: {"queue": settings.queue}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        # Only VERIFY_TASK stores a result (ignore_result=False on the task), in Redis.
        "result_backend": settings.broker_url,
        # The result backend is a separate Redis client: behind Sentinel it needs the
        # master's name too, or verify's results never come back.
        **(
            {"result_backend_transport_options": {"master_name": settings.broker_master}}
            if settings.broker_master
            else {}
        ),
        "result_expires": 3600,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Loading torch and a model takes seconds; the default 4 s kills the child.
        "worker_proc_alive_timeout": 120,
        "worker_hijack_root_logger": False,
        # The sweeper: re-sends documents left unfinished longer than stale_after.
        "beat_schedule": {
            "explainq-sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval}
        },
    }
