"""A real worker's Prometheus metrics: after its batches, the scraped counters equal
the database's counts, and a previous run's multiprocess files do not add to them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from contract.tasks import queue_for_model
from db.models import Document, Explanation, Status
from db.session import session_scope
from producer.embedded_redis import free_port
from tests.processes import Deployment

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def stale_counter(directory: Path, model: str) -> None:
    """What a previous run leaves behind: a value file with 1000 documents counted."""
    code = (
        "from prometheus_client import Counter; Counter('explainq_documents_total', 'x', "
        f"['model', 'method', 'status']).labels({model!r}, 'lig', 'done').inc(1000)"
    )
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})  # fmt: skip
    assert list(directory.glob("*.db"))


def submit(worker: Deployment, path: Path, *args: str) -> dict:
    """``producer submit --wait --json`` with the producer's default caps."""
    done = worker.producer("submit", str(path), "--wait", "--timeout", "240", "--json", *args,
                           EXPLAINQ_MAX_STEPS="1024")  # fmt: skip
    assert done.returncode in (0, 4), done.stderr
    return json.loads(done.stdout)


def test_scraped_counters_equal_the_database(system, write, tmp_path):
    port, multiproc = free_port(), tmp_path / "prom"
    multiproc.mkdir()
    model = Path(system.env["EXPLAINQ_MODEL"]).name
    stale_counter(multiproc, model)
    prefix = f"metrics-{uuid.uuid4().hex[:8]}"
    env = {**system.env, "EXPLAINQ_QUEUE": prefix, "EXPLAINQ_METRICS_PORT": str(port),
           "EXPLAINQ_MAX_STEPS": "64", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}  # fmt: skip
    worker = Deployment(env=env, home=tmp_path)
    worker.start_worker(f"metrics-{uuid.uuid4().hex[:6]}")
    try:
        before = scrape(port)
        queue = queue_for_model(system.env["EXPLAINQ_MODEL"], prefix)
        assert before[("explainq_queue_depth", (("queue", queue),))] == 0
        lines = "".join(f"review {i} is quite good\n" for i in range(5))
        done = submit(worker, write("m.txt", lines), "--method", "lig,saliency",
                      "--chunk-size", "2")  # fmt: skip
        # Over this worker's EXPLAINQ_MAX_STEPS (not the producer's): refused, FAILED.
        failed = submit(worker, write("f.txt", "a\nb\nc\n"), "--n-steps", "100")
        assert done["status"]["done"] == 5 and failed["status"]["failed"] == 3
        after = scrape(port)
    finally:
        worker.stop()

    with session_scope(system.url) as session:
        rows = session.execute(
            select(Explanation.method, Explanation.steps, Explanation.relative_gap).where(
                Explanation.batch_id.in_([done["batch_id"], failed["batch_id"]])
            )
        ).all()
        failures = session.scalars(
            select(Document.id).where(
                Document.batch_id == failed["batch_id"], Document.status == Status.FAILED
            )
        ).all()

    def value(name: str, **labels: str) -> float:
        return after.get((name, tuple(sorted(labels.items()))), 0.0)

    by_method = Counter(method for method, _, _ in rows)
    assert by_method == {"lig": 5, "saliency": 5}
    for method, count in by_method.items():
        assert value("explainq_documents_total", model=model, method=method, status="done") == count
    assert value("explainq_documents_total", model=model, method="lig", status="failed") == len(
        failures
    )
    assert value("explainq_stage_seconds_count", stage="predict") == 5
    assert value("explainq_stage_seconds_count", stage="lig") == 5
    assert value("explainq_stage_seconds_count", stage="saliency") == 5
    assert value("explainq_stage_seconds_count", stage="database") >= 3  # once per chunk
    nodes = sum(1 for _, steps, _ in rows if steps is not None)
    assert value("explainq_integration_nodes_count") == nodes > 0
    gaps = sum(1 for _, _, gap in rows if gap is not None)
    assert value("explainq_completeness_gap_count") == gaps > 0
    assert value("explainq_oom_retries_total") == value("explainq_fp32_fallbacks_total") == 0
    assert value("explainq_queue_depth", queue=queue) == 0
