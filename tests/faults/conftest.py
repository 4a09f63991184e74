"""The faults suite's deployment: a fresh database (PostgreSQL when reachable), its own
queue on the test broker, the tiny model, and the workers each test starts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from db.engine import migrate
from tests.conftest import empty_database
from tests.processes import Deployment, explainq_env
from tests.services import postgres_available


@pytest.fixture
def deployment(broker_url, tiny_model, tmp_path) -> Iterator[Deployment]:
    kind = "postgresql" if postgres_available() else "sqlite"
    with empty_database(kind, tmp_path) as url:
        migrate(url)
        deployment = Deployment(
            env=explainq_env(home=tmp_path, database_url=url, broker_url=broker_url,
                             queue=f"faults-{uuid.uuid4().hex[:8]}", model=tiny_model,
                             n_steps=20, chunk_size=8, max_attempts=3),
            home=tmp_path,
        )  # fmt: skip
        yield deployment
        deployment.stop()
