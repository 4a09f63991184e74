"""Flower, started against the test broker, shows the worker and its finished tasks."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from contract.tasks import EXPLAIN_TASK
from tests.processes import running_flower

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
    status, workers = get(f"{flower}/api/workers", AUTH, refresh=1)
    assert status == 200
    assert any(name.endswith("@localhost") for name in workers)
