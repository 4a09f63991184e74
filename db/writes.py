"""The results' writes: a model's registration, and a chunk's records in one transaction.

Every write that a redelivered task may repeat is idempotent: explanations,
representations and agreements are inserted with ON CONFLICT DO NOTHING on their identity
(document x model x method x params; document x model; document x model x method pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Agreement, Explanation, Model, Representation, utcnow
from db.ownership import fail, finish
from db.records import AgreementRecord, ChunkRecords, ExplanationRecord, RepresentationRecord

# One multi-row VALUES per slice: SQLite allows 32,766 bound values, PostgreSQL 65,535.
MAX_BOUND_VALUES = 30_000


def register_model(
    session: Session, *, name: str, path: str, sha256: str, labels: list[str], info: dict[str, Any]
) -> int:
    insert = _insert(session)
    statement = insert(Model).values(
        name=name, path=path, sha256=sha256, labels=labels, info=info, created_at=utcnow()
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["name", "sha256"]))
    return session.scalars(select(Model.id).where(Model.name == name, Model.sha256 == sha256)).one()


def save_chunk(session: Session, records: ChunkRecords, task_id: str | None) -> None:
    """Everything a chunk produced, so that a document is DONE exactly when all it
    produced is stored (the caller's transaction), and its FAILED documents' errors."""
    save_explanations(session, records.explanations)
    save_representations(session, records.representations)
    save_agreements(session, records.agreements)
    finish(session, records.done)
    for document_id, error in records.failed:
        fail(session, document_id, error, task_id)


def save_explanations(session: Session, records: Sequence[ExplanationRecord]) -> int:
    """Inserts explanations, skipping any that already exist; returns how many were new."""
    rows = [record.columns() for record in records]
    return _insert_new(
        session, Explanation, rows, ["document_id", "model_id", "method", "params_key"]
    )


def save_representations(session: Session, records: Sequence[RepresentationRecord]) -> int:
    """Inserts pooled vectors (those with only finite values), skipping existing ones."""
    rows = [row for record in records if (row := record.columns()) is not None]
    return _insert_new(session, Representation, rows, ["document_id", "model_id"])


def save_agreements(session: Session, records: Sequence[AgreementRecord]) -> int:
    """Inserts method-agreement rows, skipping existing pairs."""
    rows = [record.columns() for record in records]
    return _insert_new(
        session, Agreement, rows, ["document_id", "model_id", "method_a", "method_b"]
    )


def _insert_new(
    session: Session,
    table: type[Explanation | Representation | Agreement],
    rows: Sequence[dict[str, Any]],
    identity: list[str],
) -> int:
    if not rows:
        return 0
    insert = _insert(session)
    stamped = [{"created_at": utcnow(), **row} for row in rows]
    per_statement = max(1, MAX_BOUND_VALUES // len(stamped[0]))
    new = 0
    for start in range(0, len(stamped), per_statement):
        values = stamped[start : start + per_statement]
        statement = insert(table).values(values).on_conflict_do_nothing(index_elements=identity)
        # RETURNING counts what was new on both backends (psycopg's rowcount here is -1).
        new += len(session.execute(statement.returning(table.id)).all())
    return new


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"idempotent inserts are not implemented for {dialect}")
