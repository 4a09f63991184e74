"""Alembic environment: runs the migrations against the URL set by ``db.engine.migrate``
(or, when run through the ``alembic`` command, against ``EXPLAINQ_DATABASE_URL``)."""

from alembic import context
from sqlalchemy import Connection

from contract.settings import Settings
from db.models import Base
from db.session import get_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url


def run_migrations_online() -> None:
    with get_engine(url).connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on,
            # the drop would delete every row that references the table (ON DELETE
            # CASCADE). The pragma only takes effect outside a transaction.
            _foreign_keys(connection, "OFF")
        try:
            context.configure(
                connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if sqlite:
                _foreign_keys(connection, "ON")  # the connection goes back to the pool


def _foreign_keys(connection: Connection, state: str) -> None:
    connection.exec_driver_sql(f"PRAGMA foreign_keys={state}")
    connection.commit()


run_migrations_online()
