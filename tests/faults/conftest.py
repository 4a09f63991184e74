"""The faults suite's deployments: a fresh database (PostgreSQL when reachable), its own
queue on the test broker (or a private one), the tiny model, and the workers each test
starts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from db.session import migrate
from tests.conftest import empty_database
from tests.processes import Deployment, explainq_env
from tests.services import postgres_available

DeploymentFactory = Callable[..., Deployment]


@contextmanager
def make_deployment(
    kind: str, broker_url: str, model: Path, home: Path, **env: object
) -> Iterator[Deployment]:
    """A migrated database of ``kind`` and the environment of one deployment on it;
    its workers are stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    with empty_database(kind, home) as url:
        migrate(url)
        values = {"n_steps": 20, "chunk_size": 8, "max_attempts": 3} | env
        deployment = Deployment(
            env=explainq_env(home=home, database_url=url, broker_url=broker_url,
                             queue=f"faults-{uuid.uuid4().hex[:8]}", model=model, **values),
            home=home,
        )  # fmt: skip
        try:
            yield deployment
        finally:
            deployment.stop()


@pytest.fixture
def deployment(broker_url, tiny_model, tmp_path) -> Iterator[Deployment]:
    kind = "postgresql" if postgres_available() else "sqlite"
    with make_deployment(kind, broker_url, tiny_model, tmp_path) as deployment:
        yield deployment


@pytest.fixture
def deploy(broker_url, tiny_model, tmp_path) -> Iterator[DeploymentFactory]:
    """``deploy(kind=..., broker_url=..., **env)``: more deployments for one test, each in
    its own directory; all stopped (and their databases dropped) at the end."""
    with ExitStack() as stack:

        def factory(kind: str | None = None, broker: str | None = None, **env) -> Deployment:
            kind = kind or ("postgresql" if postgres_available() else "sqlite")
            home = tmp_path / f"{kind}-{uuid.uuid4().hex[:6]}"
            return stack.enter_context(
                make_deployment(kind, broker or broker_url, tiny_model, home, **env)
            )

        yield factory
