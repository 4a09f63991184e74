"""Flower as docker-compose runs it is read-only for control actions: with basic auth
and ``--read-only`` (Flower >= 2.2's ``read_only`` option), GET requests work, and
every POST that would shut a worker down, revoke or run a task is refused with 403.
``--read-only=false`` (FLOWER_READ_ONLY=false in .env) gives the control back."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from contextlib import AbstractContextManager

import pytest

from contract.tasks import SWEEP_TASK
from tests.processes import Deployment, running_flower
from tests.test_deploy import argv

pytestmark = pytest.mark.slow
AUTH = "auditor:s3cret-pass"
CONTROL = [  # every kind of state-changing endpoint
    "/api/worker/shutdown/{worker}",
    "/api/worker/pool/restart/{worker}",
    "/api/worker/pool/shrink/{worker}",
    "/api/worker/queue/cancel-consumer/{worker}",
    "/api/task/revoke/00000000-0000-0000-0000-000000000000",
    "/api/task/rate-limit/" + SWEEP_TASK,
    "/api/task/async-apply/" + SWEEP_TASK,
    "/api/task/send-task/" + SWEEP_TASK,
]


def call(url: str, method: str = "GET", auth: str | None = AUTH) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def flower(deployment: Deployment, *options: str) -> AbstractContextManager[str]:
    return running_flower(deployment.env, AUTH, *options)


def test_compose_runs_flower_read_only_by_default():
    words = argv("flower")
    assert "--read-only=${FLOWER_READ_ONLY:-true}" in words


def test_read_only_flower_refuses_every_control_action(deployment):
    worker = deployment.start_worker("watched", wait=False)
    name = "watched@localhost"
    with flower(deployment, "--read-only=true") as base:
        deployment.wait_ready("watched", worker)
        assert call(f"{base}/api/workers?refresh=1")[0] == 200
        assert call(f"{base}/api/tasks")[0] == 200
        assert call(f"{base}/api/workers", auth=None)[0] == 401
        refused = {}
        for path in CONTROL:
            status, body = call(base + path.format(worker=name), "POST")
            refused[path] = status
            assert status == 403 and "Read only mode is enabled" in body, (path, status)
        time.sleep(1)
        deployment.wait_ready("watched", worker, timeout=10)  # still there, still consuming
        assert worker.poll() is None
    with flower(deployment, "--read-only=false") as base:  # the switch, not something else
        status, _ = call(f"{base}/api/task/revoke/00000000-0000-0000-0000-000000000000", "POST")
        assert status == 200
    print({"read_only_refused": refused})
