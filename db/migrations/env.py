"""Alembic environment: runs the migrations against the URL set by ``db.engine.migrate``
(or, when run through the ``alembic`` command, against ``EXPLAINQ_DATABASE_URL``)."""

from alembic import context

from db.engine import get_engine
from db.models import Base
from db.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url


def run_migrations_online() -> None:
    with get_engine(url).connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
