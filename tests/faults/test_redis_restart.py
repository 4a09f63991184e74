"""Scenario 2: a private Redis is killed (SIGKILL) mid-batch and started again on the
same port, with and without AOF. The same worker processes reconnect and consume again;
what Redis lost, the sweeper (`producer resume`) re-sends from the database."""

from __future__ import annotations

import time

import pytest
import redis
from kombu.exceptions import OperationalError

from producer.embedded_redis import EmbeddedRedis
from tests.faults.counting import (
    accounting,
    assert_complete,
    database_kind,
    drain,
    record,
    submit,
    wait_for,
)
from tests.processes import Deployment

pytestmark = pytest.mark.slow
DOCUMENTS = 160
DOWN_SECONDS = 3


def queued(client: redis.Redis, queue: str) -> int:
    """Task messages waiting in the queue (kombu keeps one list per priority)."""
    return sum(
        client.llen(key) for key in client.scan_iter(f"{queue}*") if client.type(key) == b"list"
    )


def answered(deployment: Deployment, name: str, process, timeout: float = 60) -> None:
    """Waits until the worker answers a ping again, through the restarted broker."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            deployment.wait_ready(name, process, timeout=max(1, deadline - time.monotonic()))
            return
        except (redis.ConnectionError, OperationalError):  # our own client, not yet back
            assert time.monotonic() < deadline, f"{name} did not reconnect"
            time.sleep(0.5)


def settle(deployment: Deployment, batch_id: str, queue_empty, quiet: float = 5) -> int:
    """Waits, re-sending nothing, until the queue is empty and no document has finished
    for ``quiet`` seconds; returns how many are terminal."""
    deadline, last, since = time.monotonic() + 90, -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = accounting(deployment, batch_id)
        finished = counts["done"] + counts["failed"]
        if finished == DOCUMENTS:
            return finished
        if finished != last or not queue_empty():
            last, since = finished, time.monotonic()
        elif time.monotonic() - since > quiet:
            return finished
        time.sleep(0.5)
    return last


@pytest.mark.parametrize("aof", [True, False], ids=["aof", "no-aof"])
def test_redis_restarted_mid_batch_loses_nothing(deploy, write, aof):
    server = EmbeddedRedis(aof=aof).start()  # restarted below on the same port (and dir)
    try:
        deployment = deploy(broker=server.url)
        queue = deployment.env["EXPLAINQ_QUEUE"]
        client = redis.Redis.from_url(server.url, socket_connect_timeout=2)
        texts = [f"review {i} of a {'fine' if i % 3 else 'dull'} picture" for i in range(DOCUMENTS)]
        path = write("restart.txt", "\n".join(texts) + "\n")
        if aof:  # every enqueued message on disk before the crash (default: every second)
            client.config_set("appendfsync", "always")
        batch_id = submit(deployment, path)  # the whole batch queued, then the workers
        workers = [deployment.start_worker(f"r{i}", wait=False) for i in range(2)]
        for i, process in enumerate(workers):
            deployment.wait_ready(f"r{i}", process)
        started = time.monotonic()  # the workers consume from here
        wait_for(deployment, batch_id, done=8, poll=0.1)  # mid-batch: most still queued
        before = queued(client, queue)
        server.process.kill()  # a crash: no shutdown, no save
        server.process.wait()
        time.sleep(DOWN_SECONDS)
        server.start()
        restarted = time.monotonic()
        after = queued(client, queue)
        for i, process in enumerate(workers):  # a ping answered: consuming again
            answered(deployment, f"r{i}", process)
        reconnected = time.monotonic() - restarted
        finished_before_sweep = settle(deployment, batch_id, lambda: queued(client, queue) == 0)
        drain(deployment, batch_id)
        drained = time.monotonic() - started
        counts = accounting(deployment, batch_id)
        record(f"Redis SIGKILLed mid-batch and restarted ({'AOF' if aof else 'no AOF'})",
               documents=DOCUMENTS, restarts=1, database=database_kind(deployment),
               queued_before_kill=before, queued_after_restart=after,
               seconds_to_reconnect=round(reconnected, 1),
               finished_before_sweep=finished_before_sweep, **counts,
               seconds_after_restart=round(time.monotonic() - restarted, 1),
               seconds_to_drain=round(drained, 1))  # fmt: skip
        assert_complete(counts, DOCUMENTS)
        assert before > 0
        if aof:
            # The queue survived; only the chunks in the workers' hands needed the sweeper.
            assert after >= before - 2
            assert finished_before_sweep >= DOCUMENTS - 2 * 8 * 2
        else:
            assert after == 0  # every queued message was lost with Redis
        assert all(process.poll() is None for process in workers)  # the same processes
    finally:
        server.stop()
