"""Read-only sessions for the web app: an engine of its own whose connections refuse to
write (SQLite ``query_only``; PostgreSQL ``default_transaction_read_only``), on top of
the read-only role the README recommends, and each request's transaction rolled back.
Each statement is bounded in time (EXPLAINQ_WEB_STATEMENT_TIMEOUT_MS: PostgreSQL's
``statement_timeout``; on SQLite a progress handler that interrupts past the deadline),
so that no request, whatever its filters, holds the database long; the streamed exports,
which read a whole batch on purpose, are not bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from fastapi import Request
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db.session import SQLITE_BUSY_TIMEOUT_MS

DEFAULT_TIMEOUT_MS = 5000  # contract.settings' default, for callers without settings
UNBOUNDED = "explainq_unbounded"  # the execution option of an export's session
SQLITE_STEPS = 10_000  # virtual-machine steps between two looks at the clock


@cache
def read_engine(url: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        # a streamed export is read on the server's worker threads, one after another
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})  # fmt: skip
        event.listen(engine, "connect", _sqlite_read_only)
        if timeout_ms:
            event.listen(engine, "before_cursor_execute", _sqlite_deadline(timeout_ms))
        return engine
    options = "-c default_transaction_read_only=on"
    options += f" -c statement_timeout={int(timeout_ms)}"  # 0: none
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options})


def _sqlite_read_only(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()
    info = record.info

    def expired() -> int:  # non-zero: SQLite stops the statement ("interrupted")
        deadline = info.get("deadline")
        return int(deadline is not None and time.monotonic() > deadline)

    dbapi_connection.set_progress_handler(expired, SQLITE_STEPS)


def _sqlite_deadline(timeout_ms: int) -> Any:
    def start(conn: Connection, *_args: Any) -> None:
        unbounded = conn.get_execution_options().get(UNBOUNDED)
        conn.info["deadline"] = None if unbounded else time.monotonic() + timeout_ms / 1000

    return start


def timed_out(error: DBAPIError) -> bool:
    """Whether the database stopped the statement at the web's time bound."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) == "57014":  # PostgreSQL: query_canceled
        return True
    return type(orig).__module__ == "sqlite3" and "interrupted" in str(orig)


@cache
def _factory(url: str, timeout_ms: int) -> sessionmaker[Session]:
    return sessionmaker(read_engine(url, timeout_ms), expire_on_commit=False)


@contextmanager
def read_session(
    url: str, timeout_ms: int = DEFAULT_TIMEOUT_MS, bounded: bool = True
) -> Iterator[Session]:
    """A session whose transaction is rolled back at the end: a read leaves nothing.
    ``bounded=False`` (an export): no time bound on its statements."""
    with _factory(url, timeout_ms)() as session, session.begin():
        try:
            if not bounded:
                connection = session.connection(execution_options={UNBOUNDED: True})
                if connection.dialect.name == "postgresql":
                    session.execute(text("SET LOCAL statement_timeout = 0"))
            yield session
        finally:
            session.rollback()


def session(request: Request) -> Iterator[Session]:
    """The request's read-only session (FastAPI dependency): ``create_app`` sets how."""
    yield from request.app.state.sessions()
