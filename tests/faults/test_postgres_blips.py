"""Scenario 3: every PostgreSQL backend of the deployment's database is terminated,
several times, while two workers run a batch. Pooled connections are re-opened
(pool_pre_ping), a task whose transaction was cut is retried (autoretry on
OperationalError), and no document is lost or written twice."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.faults.counting import (
    accounting,
    assert_complete,
    database_kind,
    drain,
    record,
    submit,
    wait_for,
)
from tests.services import POSTGRES_ADMIN

pytestmark = pytest.mark.slow
DOCUMENTS = 160
ROUNDS = 8


def terminate_backends(database: str) -> int:
    """Ends every connection to ``database`` but this one; returns how many."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(ended[0]) if ended else 0


def test_postgres_connections_terminated_mid_batch_lose_nothing(deploy, write):
    deployment = deploy(kind="postgresql")
    database = deployment.url.rsplit("/", 1)[1]
    texts = [f"the {i}th review: {'great' if i % 2 else 'poor'} acting" for i in range(DOCUMENTS)]
    path = write("blips.txt", "\n".join(texts) + "\n")
    workers = [deployment.start_worker(f"pg{i}", wait=False) for i in range(2)]
    for i, process in enumerate(workers):
        deployment.wait_ready(f"pg{i}", process)
    started = time.monotonic()
    batch_id = submit(deployment, path)
    wait_for(deployment, batch_id, done=16)
    terminated = []
    for _ in range(ROUNDS):
        terminated.append(terminate_backends(database))
        time.sleep(1.0)
    drain(deployment, batch_id)
    drained = time.monotonic() - started
    counts = accounting(deployment, batch_id)
    logs = "".join((deployment.home / f"pg{i}.log").read_text() for i in range(2))
    record("PostgreSQL backends terminated mid-batch", documents=DOCUMENTS,
           database=database_kind(deployment), rounds=ROUNDS, connections_ended=sum(terminated),
           task_retries=logs.count(" retry: Retry in"), **counts,
           seconds_to_drain=round(drained, 1))  # fmt: skip
    assert_complete(counts, DOCUMENTS)
    assert sum(terminated) >= ROUNDS // 2  # the workers' connections were there to end
    assert all(process.poll() is None for process in workers)
