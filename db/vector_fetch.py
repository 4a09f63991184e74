"""Reading vectors fast: the raw float32 bytes of the column, fetched in psycopg's binary
format where the database is PostgreSQL, in slices; and whether pgvector could be had."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, LargeBinary, Select, text, type_coerce
from sqlalchemy.orm import Session

from db.models import Representation

IN_SLICE = 900  # ids per IN (...) list
SLICE = 10_000  # vectors per streamed fetch


def raw_vector() -> ColumnElement[bytes]:
    """The vector column as its stored bytes (not the list that ``Float32Array`` makes)."""
    return type_coerce(Representation.__table__.c.vector, LargeBinary)


def fetch(session: Session, statement: Select[Any]) -> list[Any]:
    """The rows of ``statement``; on psycopg, in PostgreSQL's binary format (the vector
    bytes as they are: half the bytes of hex text, and no decoding)."""
    return next(iter(stream(session, statement, size=0)), [])


def stream(session: Session, statement: Select[Any], size: int = SLICE) -> Iterable[list[Any]]:
    """The rows of ``statement`` in lists of ``size`` (0: all at once), from a server-
    side cursor in binary format on psycopg (straight on the session's connection, in
    its transaction, but unseen by SQLAlchemy's cursor events; for statements whose
    parameters need no bind processing: numbers and strings); elsewhere through
    SQLAlchemy."""
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        if not size:
            yield session.execute(statement).all()
            return
        streamed = session.execute(statement.execution_options(yield_per=size))
        yield from (list(rows) for rows in streamed.partitions(size))
        return
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    driver = connection.connection.driver_connection
    named = {"name": f"explainq_vectors_{id(statement):x}"} if size else {}
    with driver.cursor(binary=True, **named) as cursor:
        cursor.execute(str(compiled), compiled.params)
        if not size:
            yield cursor.fetchall()
            return
        while rows := cursor.fetchmany(size):
            yield rows


def in_slices(values: Iterable[int], size: int = IN_SLICE) -> Iterable[list[int]]:
    chunk: list[int] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pgvector_available(session: Session) -> bool:
    """Whether the server could install pgvector (never on these machines; not used)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    query = text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    return session.scalar(query) is not None
