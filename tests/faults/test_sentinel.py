"""Scenario 8 (issue 19): a broker that survives losing a host. Two Redis servers (a
master and its replica) and a Redis Sentinel, all started here; producer and workers use
``sentinel://`` with EXPLAINQ_BROKER_MASTER. The master is killed mid-batch: the
sentinel promotes the replica, the same workers reconnect to it, and what the old master
held and had not replicated, the sweeper (`producer resume`) re-sends from the database.
The batch completes, nothing lost, nothing written twice."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from producer.embedded_redis import free_port
from tests.faults.counting import (
    accounting,
    assert_complete,
    database_kind,
    drain,
    record,
    submit,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server"),
]
MASTER = "explainq"
DOCUMENTS = 96


@contextmanager
def redis_server(directory: Path, *args: str) -> Iterator[tuple[int, subprocess.Popen]]:
    """A redis-server (or, with --sentinel, a sentinel) on a free loopback port."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)
    try:
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def current_master(sentinel_port: int) -> int:
    client = redis.Redis(port=sentinel_port, socket_connect_timeout=1)
    return int(client.sentinel_get_master_addr_by_name(MASTER)[1])


def test_the_master_killed_mid_batch_loses_nothing(deploy, write, tmp_path):
    with (
        redis_server(tmp_path / "a") as (master, master_process),
        redis_server(tmp_path / "b") as (replica, _),
    ):
        redis.Redis(port=replica).replicaof("127.0.0.1", master)
        conf = tmp_path / "sentinel.conf"  # the sentinel rewrites its own file
        conf.write_text(
            f"sentinel monitor {MASTER} 127.0.0.1 {master} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        with redis_server(tmp_path / "s", str(conf), "--sentinel") as (sentinel, _):
            assert current_master(sentinel) == master
            broker = f"sentinel://127.0.0.1:{sentinel}/0"
            deployment = deploy(broker=broker, broker_master=MASTER, stale_after=8)
            texts = [
                f"review {i} of a {'fine' if i % 3 else 'dull'} film" for i in range(DOCUMENTS)
            ]
            path = write("sentinel.txt", "\n".join(texts) + "\n")
            batch_id = submit(deployment, path)  # through the sentinel to the master
            worker = deployment.start_worker("s0")
            wait_for(deployment, batch_id, done=8, poll=0.1)  # mid-batch
            master_process.kill()  # the host is gone
            started = time.monotonic()
            deadline = started + 60
            while current_master(sentinel) != replica:
                assert time.monotonic() < deadline, "the sentinel did not fail over"
                time.sleep(0.5)
            failed_over = time.monotonic() - started
            drain(deployment, batch_id)  # the sweeper re-sends what the old master held
            counts = accounting(deployment, batch_id)
            record("Redis Sentinel: master SIGKILLed mid-batch", documents=DOCUMENTS,
                   database=database_kind(deployment), seconds_to_failover=round(failed_over, 1),
                   seconds_to_drain=round(time.monotonic() - started, 1), **counts)  # fmt: skip
            assert_complete(counts, DOCUMENTS)
            assert worker.poll() is None  # the same worker, reconnected to the new master
