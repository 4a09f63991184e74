"""`make demo`'s program runs end to end on a bare configuration: embedded Redis,
SQLite under EXPLAINQ_HOME, a real worker process (with the tiny model)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import func, select

from db.models import Document, Explanation, Status
from db.session import session_scope
from tests.processes import explainq_env

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_with_embedded_redis_and_sqlite(tiny_model, tmp_path):
    env = explainq_env(home=tmp_path, model=tiny_model, n_steps=8)
    done = subprocess.run([sys.executable, "-m", "producer.demo"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "embedded redis-server" in done.stdout
    assert "results list --batch" in done.stdout
    assert "demo-0" in done.stdout  # the results table lists the sample's ids
    url = f"sqlite:///{tmp_path / 'explainq.db'}"
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(Explanation)) == 4
        assert set(session.scalars(select(Document.status))) == {Status.DONE}
    listed = subprocess.run(
        [f"{sys.prefix}/bin/results", "list", "--json"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0 and "demo-3" in listed.stdout
