"""Flower, started against the test broker, shows the worker and its finished tasks."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from contract.tasks import EXPLAIN_TASK
from db.models import Document
from db.session import session_scope
from tests.processes import Deployment, running_flower

pytestmark = pytest.mark.slow
AUTH = ("auditor", "s3cret-pass")


def get(url: str, auth: tuple[str, str] | None = None, **params) -> tuple[int, object]:
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}")
    if auth:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


@pytest.fixture
def flower(system):
    with running_flower(system.env, ":".join(AUTH)) as base:
        yield base


def test_flower_shows_the_worker_and_the_finished_tasks(system, flower, write):
    assert get(f"{flower}/api/workers")[0] == 401  # authentication is required
    summary = system.submit(write("f.txt", "one\ntwo\nthree\n"), "--chunk-size", "1")
    assert summary["status"]["done"] == 3
    deadline = time.monotonic() + 60
    while True:
        _, tasks = get(f"{flower}/api/tasks", AUTH, taskname=EXPLAIN_TASK)
        finished = [
            t
            for t in tasks.values()
            if t["state"] == "SUCCESS" and summary["batch_id"] in t["args"]
        ]
        if len(finished) == 3:
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.5)
    model = Path(system.env["EXPLAINQ_MODEL"]).name
    for task in finished:  # which batch, model and methods it serves, and what it did
        assert f"model={model} methods=lig documents=1" in task["args"]
        assert "'done': 1, 'failed': 0" in task["result"] and model in task["result"]
    status, workers = get(f"{flower}/api/workers", AUTH, refresh=1)
    assert status == 200
    assert any(name.endswith("@localhost") for name in workers)


def test_a_chunk_whose_documents_all_failed_is_a_failure_in_flower(system, flower, write, tmp_path):
    """A worker for a model it cannot find fails the documents; Flower lists the chunk
    under FAILURE (not SUCCESS), with its batch, model and methods and why."""
    nowhere = str(tmp_path / "nowhere")
    env = {**system.env, "EXPLAINQ_CHECK_MODEL": "false", "EXPLAINQ_MODEL": nowhere}
    broken = Deployment(env=env, home=system.home)
    broken.start_worker(f"nowhere-{uuid.uuid4().hex[:6]}")
    try:
        summary = broken.submit(write("f.txt", "one\ntwo\nthree\n"), "--model", nowhere)
    finally:
        broken.stop()
    assert summary["status"]["failed"] == 3
    batch = summary["batch_id"]
    deadline = time.monotonic() + 60
    while True:
        _, failed = get(f"{flower}/api/tasks", AUTH, taskname=EXPLAIN_TASK, state="FAILURE")
        mine = [t for t in failed.values() if batch in (t["args"] or "")]
        if mine:
            break
        assert time.monotonic() < deadline, failed
        time.sleep(0.5)
    (task,) = mine
    assert "model=nowhere methods=lig documents=3" in task["args"]
    assert "all 3 documents it ran FAILED" in task["exception"]
    _, succeeded = get(f"{flower}/api/tasks", AUTH, taskname=EXPLAIN_TASK, state="SUCCESS")
    assert not [t for t in succeeded.values() if batch in (t["args"] or "")]
    with session_scope(system.url) as session:  # a FAILURE is acknowledged: never redelivered
        attempts = session.scalars(select(Document.attempts).where(Document.batch_id == batch))
        assert list(attempts) == [1, 1, 1]
