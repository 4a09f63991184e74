"""The launcher on the CPU: it starts its workers with their names, a batch completes,
signals stop them cleanly, and one worker dying stops the set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import select

from db.models import Explanation
from db.session import migrate, session_scope
from producer.embedded_redis import free_port
from producer.submit import broker_app
from tests.processes import Deployment, explainq_env
from tests.system.test_metrics import scrape

pytestmark = pytest.mark.slow


@pytest.fixture
def deployment(broker_url, tiny_model, tmp_path) -> Deployment:
    url = f"sqlite:///{tmp_path / 'explainq.db'}"
    migrate(url)
    env = explainq_env(home=tmp_path, database_url=url, broker_url=broker_url, n_steps=8,
                       queue=f"launch-{uuid.uuid4().hex[:8]}", model=tiny_model)  # fmt: skip
    return Deployment(env=env, home=tmp_path)


def launch(deployment: Deployment, *args: str) -> subprocess.Popen[bytes]:
    """The launcher, its stderr in launch.err; each worker logs to <name>.log (%n)."""
    log = deployment.home / "%n.log"
    with (deployment.home / "launch.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.launch", *args, "--host", "localhost", "--",
             "--without-mingle", "--without-gossip", f"--logfile={log}"],
            env=deployment.env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def shown(deployment: Deployment) -> str:
    return (deployment.home / "launch.err").read_text()


def answering(deployment: Deployment, names: list[str], process, timeout: float = 120) -> dict:
    """Waits until every node answers; returns their stats (with their pids)."""
    broker = broker_app(deployment.settings)
    deadline = time.monotonic() + timeout
    while True:
        stats = broker.control.inspect(destination=names, timeout=1).stats() or {}
        if set(stats) == set(names):
            return stats
        assert process.poll() is None, shown(deployment)
        assert time.monotonic() < deadline, f"only {sorted(stats)} answered"


def test_the_launcher_starts_names_and_stops_a_cpu_worker(deployment, write, tiny_model):
    process = launch(deployment, "--gpus", "cpu")
    name = f"{tiny_model.name}-cpu@localhost"
    try:
        answering(deployment, [name], process)
        summary = deployment.submit(write("l.txt", "one\ntwo\nthree\n"))
        assert summary["status"]["done"] == 3
        with session_scope(deployment.url) as session:
            workers = set(session.scalars(select(Explanation.worker).select_from(Explanation)))
        assert len(workers) == 1 and workers.pop().startswith(f"{name} pid ")
    finally:
        process.send_signal(signal.SIGTERM)  # forwarded: Celery's warm shutdown
        assert process.wait(timeout=60) == 0
    assert not broker_app(deployment.settings).control.ping(destination=[name], timeout=1)
    assert f"--hostname={name}" in shown(deployment)
    assert f"worker {name} stopped, status 0" in shown(deployment)


def test_one_pinned_worker_per_gpu_and_one_dying_stops_the_set(deployment, write, tiny_model):
    """On this CPU machine, `--gpus 0,1` still starts two workers (each finds no GPU
    and runs on the CPU): their names and CUDA_VISIBLE_DEVICES are what a GPU host gets.
    The launcher serves the metrics of both on one port: their documents added up."""
    port = free_port()
    deployment.env |= {"EXPLAINQ_METRICS_PORT": str(port), "EXPLAINQ_CHUNK_SIZE": "1"}
    process = launch(deployment, "--gpus", "0,1")
    names = [f"{tiny_model.name}-gpu{gpu}@localhost" for gpu in (0, 1)]
    try:
        stats = answering(deployment, names, process)
        summary = deployment.submit(write("l.txt", "".join(f"review {i}\n" for i in range(8))))
        assert summary["status"]["done"] == 8, summary
        with session_scope(deployment.url) as session:
            rows = list(session.scalars(select(Explanation.worker).select_from(Explanation)))
        assert {row.split(" pid ")[0] for row in rows} == set(names)  # both took chunks
        counted = sum(
            value
            for (name, labels), value in scrape(port).items()
            if name == "explainq_documents_total" and ("status", "done") in labels
        )
        assert counted == len(rows)  # one per document and method, from both workers
        os.kill(stats[names[0]]["pid"], signal.SIGKILL)  # the first worker's main process
        assert process.wait(timeout=60) != 0  # and the second was stopped with it
        assert not broker_app(deployment.settings).control.ping(destination=names, timeout=1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    said = shown(deployment)
    assert f"CUDA_VISIBLE_DEVICES=0 EXPLAINQ_MODEL={tiny_model}" in said
    assert f"CUDA_VISIBLE_DEVICES=1 EXPLAINQ_MODEL={tiny_model}" in said
    assert f"worker {names[0]} exited with status -9; stopping the others" in said
    assert f"worker {names[1]} stopped, status 0" in said, said  # stopped cleanly, not killed
