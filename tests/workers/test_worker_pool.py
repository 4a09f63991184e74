"""A worker process holds one model: it refuses a pool that would run several tasks on
it at once."""

from __future__ import annotations

import subprocess

from tests.processes import BIN, explainq_env


def test_a_worker_refuses_a_thread_pool_of_more_than_one(tmp_path):
    refused = subprocess.run(
        [str(BIN / "celery"), "-A", "workers", "worker", "--pool=threads", "--concurrency=2"],
        env=explainq_env(home=tmp_path), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "would run several tasks on one model at once" in refused.stderr
    assert "--concurrency=1" in refused.stderr
