"""The schema comes from the migrations, and the migrations match the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.engine import alembic_config, get_engine, migrate
from db.models import Base


def test_migrations_create_exactly_the_models_schema(database_url):
    migrate(database_url)
    migrate(database_url)  # idempotent
    with get_engine(database_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_downgrade_to_nothing_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(get_engine(url)).get_table_names()) == {"alembic_version"}
    migrate(url)
    assert {"batches", "documents", "explanations", "models", "rejections"} <= set(
        inspect(get_engine(url)).get_table_names()
    )
