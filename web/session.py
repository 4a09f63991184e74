"""Read-only sessions for the web app: an engine of its own whose connections refuse to
write (SQLite ``query_only``; PostgreSQL ``default_transaction_read_only``), on top of
the read-only role the README recommends, and each request's transaction rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.session import SQLITE_BUSY_TIMEOUT_MS


@cache
def read_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        # a streamed export is read on the server's worker threads, one after another
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})  # fmt: skip
        event.listen(engine, "connect", _sqlite_read_only)
        return engine
    return create_engine(
        url, pool_pre_ping=True, connect_args={"options": "-c default_transaction_read_only=on"}
    )


def _sqlite_read_only(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


@cache
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(read_engine(url), expire_on_commit=False)


@contextmanager
def read_session(url: str) -> Iterator[Session]:
    """A session whose transaction is rolled back at the end: a read leaves nothing."""
    with _factory(url)() as session, session.begin():
        try:
            yield session
        finally:
            session.rollback()
