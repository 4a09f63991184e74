"""Prometheus metrics of a worker, on EXPLAINQ_METRICS_PORT (off when unset).

Celery's prefork pool runs tasks in child processes, so the counters live in
prometheus_client's multiprocess mode: each child writes its values to files under
PROMETHEUS_MULTIPROC_DIR and the main process, which serves ``/metrics``, adds them up.
The known pitfalls, handled here: the directory is emptied when the worker starts (old
files would add a previous run's counts), the mode is chosen before any metric exists
(prometheus_client picks it from the environment), a child that exits is marked dead,
and Flower, which imports the same Celery app, never turns it on (only ``worker_init``
does). Nothing is imported until metrics are on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from contract.settings import Settings
from contract.tasks import model_name, queue_for_model

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Not EXPLAINQ_*: these are the worker's own notes to its children, not settings.
_ON = "_EXPLAINQ_METRICS_ON"
_OWNED_DIR = "_EXPLAINQ_METRICS_OWNED_DIR"  # set when we made the directory: removed at exit
# Seconds per document per stage: sub-millisecond database writes to minute-long methods.
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
NODE_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
GAP_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1)


def enabled() -> bool:
    """Whether this process records metrics (the worker that started it serves them)."""
    return os.environ.get(_ON) == "1"


def start(settings: Settings, queues: list[str]) -> None:
    """In the worker's main process, before the pool forks: choose and empty the
    multiprocess directory, then serve ``/metrics`` (children's files plus the depth of
    ``queues``) on EXPLAINQ_METRICS_HOST:EXPLAINQ_METRICS_PORT."""
    if settings.metrics_port is None:
        return
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        empty(Path(directory))
    else:
        directory = tempfile.mkdtemp(prefix="explainq-metrics-")
        os.environ[_OWNED_DIR] = directory
    os.environ.update(recording_env(directory))  # inherited by the pool's children
    serve(settings, directory, queues)


def recording_env(directory: str) -> dict[str, str]:
    """What a process needs in its environment to record into ``directory``: the
    worker's pool children, or the workers a launcher serves together."""
    return {MULTIPROC_ENV: directory, _ON: "1"}


def serve(settings: Settings, directory: str, queues: list[str]) -> None:
    """Serves ``/metrics`` on EXPLAINQ_METRICS_HOST:EXPLAINQ_METRICS_PORT in a thread: the
    value files under ``directory`` added up, and the depth of ``queues``."""
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    values.ValueClass = values.get_value_class()  # in case it was imported before the env
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    registry.register(QueueDepth(settings, queues))
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    log.info("metrics on http://%s:%d/metrics (multiprocess files in %s)",
             settings.metrics_host, settings.metrics_port, directory)  # fmt: skip


def empty(directory: Path) -> None:
    """Removes a previous run's value files, so counters start from zero."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exited(pid: int) -> None:
    """A pool child exits: its live gauges no longer count (its counters still do)."""
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def stop() -> None:
    """The worker exits: remove the directory if we made it."""
    if owned := os.environ.pop(_OWNED_DIR, None):
        shutil.rmtree(owned, ignore_errors=True)


class QueueDepth:
    """``explainq_queue_depth{queue}``: messages waiting in each queue the worker consumes,
    read from the broker at scrape time (a queue that only grows is an alert)."""

    def __init__(self, settings: Settings, queues: list[str]) -> None:
        self.settings, self.queues = settings, queues

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("explainq_queue_depth", "Messages waiting in a queue.",
                                   labels=["queue"])  # fmt: skip
        with contextlib.suppress(Exception):  # a broker outage must not fail the scrape
            for queue, depth in queue_depths(self.settings, self.queues).items():
                family.add_metric([queue], depth)
        yield family


def queue_depths(settings: Settings, queues: list[str]) -> dict[str, int]:
    """Messages waiting per queue; a queue the broker does not know (Redis drops an empty
    list) is empty. A broker that cannot be reached raises."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    depths = {}
    options = {"master_name": settings.broker_master} if settings.broker_master else {}
    with Connection(
        settings.broker_url, connect_timeout=2, transport_options=options
    ) as connection:
        channel = connection.default_channel
        for queue in queues:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:
                depths[queue] = 0
    return depths


@cache
def _instruments() -> dict[str, Any]:
    from prometheus_client import Counter, Histogram

    return {
        "documents": Counter(
            "explainq_documents_total",
            "Documents explained, per method.",
            ["model", "method", "status"],
        ),
        "stage": Histogram(
            "explainq_stage_seconds",
            "Seconds per document per stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
        ),
        "nodes": Histogram(
            "explainq_integration_nodes", "Integration nodes per explanation.", buckets=NODE_BUCKETS
        ),
        "gap": Histogram(
            "explainq_completeness_gap", "Relative completeness gap.", buckets=GAP_BUCKETS
        ),
        "oom": Counter(
            "explainq_oom_retries_total",
            "Out-of-memory back-offs, once per document of the pass that backed off.",
        ),
        "fp32": Counter(
            "explainq_fp32_fallbacks_total",
            "Explanations recomputed in fp32 (bf16 missed the tolerance).",
        ),
    }


def record_chunk(
    model: str, methods: list[str], explanations: list[Any], failed: int, db_seconds: float
) -> None:
    """Counts a stored chunk: ``explanations`` are its ExplanationRecords (DONE documents,
    one per method), ``failed`` its FAILED documents (counted once per method)."""
    if not enabled():
        return
    m = _instruments()
    name = model_name(model)
    for method in methods:
        if failed:
            m["documents"].labels(name, method, "failed").inc(failed)
    seen: set[int] = set()
    for row in explanations:
        m["documents"].labels(name, row.method, "done").inc()
        timings = row.timings or {}
        m["stage"].labels(row.method).observe(timings.get(row.method, timings.get("seconds", 0.0)))
        if row.steps is not None:
            m["nodes"].observe(row.steps)
        if row.relative_gap is not None:
            m["gap"].observe(row.relative_gap)
        if timings.get("fp32_fallback"):
            m["fp32"].inc()
        if row.document_id not in seen:  # per document, not per method
            seen.add(row.document_id)
            for stage in ("predict", "quality"):
                if stage in timings:
                    m["stage"].labels(stage).observe(timings[stage])
            m["oom"].inc(timings.get("oom_retries", 0))
    documents = len(seen) + failed
    if documents:
        m["stage"].labels("database").observe(db_seconds / documents)


def model_queues(settings: Settings) -> list[str]:
    return [queue_for_model(settings.model, settings.queue), settings.queue]
