"""The results' writes: a model's registration, and a chunk's records in one transaction.

Every explanation is written with its digest (``db.digest``: tamper evidence), and never
updated: on PostgreSQL, triggers refuse UPDATE and DELETE on it (migration 0006).

Every write that a redelivered task may repeat is idempotent: explanations,
representations and agreements are inserted with ON CONFLICT DO NOTHING on their identity
(document x model x method x params; document x model; document x model x method pair),
and only the rows that were new are counted in the aggregates (``db.aggregates``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db import aggregates
from db.models import Agreement, Document, Explanation, Model, Representation, utcnow
from db.ownership import fail, finish
from db.records import (
    AgreementRecord,
    ChunkRecords,
    ExplanationRecord,
    RepresentationRecord,
    explanation_digest,
)
from db.run_settings import attach_settings

EXPLANATION_IDENTITY = ["document_id", "model_id", "method", "params_key"]
AGREEMENT_IDENTITY = ["document_id", "model_id", "method_a", "method_b"]


def register_model(
    session: Session, *, name: str, path: str, sha256: str, labels: list[str], info: dict[str, Any]
) -> int:
    insert = dialect_insert(session)
    statement = insert(Model).values(
        name=name, path=path, sha256=sha256, labels=labels, info=info, created_at=utcnow()
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["name", "sha256"]))
    return session.scalars(select(Model.id).where(Model.name == name, Model.sha256 == sha256)).one()


def save_chunk(session: Session, records: ChunkRecords, task_id: str | None) -> None:
    """Everything a chunk produced, so that a document is DONE exactly when all it
    produced is stored (the caller's transaction), and its FAILED documents' errors."""
    save_explanations(session, records.explanations, records.texts)
    save_representations(session, records.representations)
    save_agreements(session, records.agreements)
    finish(session, records.done)
    for document_id, error in records.failed:
        fail(session, document_id, error, task_id)


def save_explanations(
    session: Session, records: Sequence[ExplanationRecord], texts: Mapping[int, str] | None = None
) -> int:
    """Inserts explanations, each with its digest (``db.digest``), skipping any that
    already exist, and counts the new ones in the aggregates (``texts`` by document:
    where their words are read); returns how many were new."""
    if not records:
        return 0
    # One query for the chunk's documents (their batch, the user's id and the text, which
    # the digest covers) and one for its models' weights hashes.
    query = select(Document.id, Document.batch_id, Document.external_id, Document.text).where(
        Document.id.in_({r.document_id for r in records})
    )
    documents = {row.id: row for row in session.execute(query)}
    model_ids = {r.model_id for r in records}
    query_models = select(Model.id, Model.sha256).where(Model.id.in_(model_ids))
    models = {row.id: row.sha256 for row in session.execute(query_models)}
    texts = {doc_id: row.text for doc_id, row in documents.items()} | dict(texts or {})
    records = [
        replace(r, batch_id=documents[r.document_id].batch_id) if r.batch_id is None else r
        for r in records
    ]
    rows = [record.columns() for record in records]
    for row in rows:
        document = documents[row["document_id"]]
        row["digest"] = explanation_digest(
            row, external_id=document.external_id, text=document.text,
            model_sha256=models[row["model_id"]],
        )  # fmt: skip
    attach_settings(session.connection(), rows)  # after the digest, which covers them
    new = _insert_new(session, Explanation, rows, EXPLANATION_IDENTITY)
    fresh = [
        r for r, row in zip(records, rows, strict=True) if _key(row, EXPLANATION_IDENTITY) in new
    ]
    aggregates.count(session, fresh, [], texts, {r.document_id: r.batch_id for r in fresh})
    return len(new)


def save_representations(session: Session, records: Sequence[RepresentationRecord]) -> int:
    """Inserts pooled vectors (those with only finite values), skipping existing ones."""
    rows = [row for record in records if (row := record.columns()) is not None]
    return len(_insert_new(session, Representation, rows, ["document_id", "model_id"]))


def save_agreements(session: Session, records: Sequence[AgreementRecord]) -> int:
    """Inserts method-agreement rows, skipping existing pairs, and counts the new ones."""
    rows = [record.columns() for record in records]
    new = _insert_new(session, Agreement, rows, AGREEMENT_IDENTITY)
    fresh = [
        r for r, row in zip(records, rows, strict=True) if _key(row, AGREEMENT_IDENTITY) in new
    ]
    aggregates.count(session, [], fresh, {}, _batches_of(session, {r.document_id for r in fresh}))
    return len(new)


def _batches_of(session: Session, document_ids: set[int]) -> dict[int, str | None]:
    if not document_ids:
        return {}
    query = select(Document.id, Document.batch_id).where(Document.id.in_(document_ids))
    return {doc_id: batch_id for doc_id, batch_id in session.execute(query)}


def _key(row: Mapping[str, Any], identity: list[str]) -> tuple[Any, ...]:
    return tuple(row[name] for name in identity)


def _insert_new(
    session: Session,
    table: type[Explanation | Representation | Agreement],
    rows: Sequence[dict[str, Any]],
    identity: list[str],
) -> set[tuple[Any, ...]]:
    """Inserts the rows whose identity is new; returns those identities."""
    if not rows:
        return set()
    now = utcnow()
    stamped = [{"created_at": now, **row} for row in rows]
    columns = [table.__table__.columns[name] for name in identity]
    core = dialect_insert(session)(table.__table__).on_conflict_do_nothing(index_elements=identity)
    # One Core statement, many parameter sets: SQLAlchemy sends them as batched multi-row
    # VALUES ("insertmanyvalues"), compiled once, without the ORM's bulk machinery;
    # RETURNING says what was new on both backends (psycopg's rowcount here is -1).
    result = session.connection().execute(core.returning(*columns), stamped)
    return {tuple(row) for row in result}


def dialect_insert(session: Session | Connection) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (SQLAlchemy's generic one has not)."""
    dialect = session.get_bind().dialect.name if isinstance(session, Session) else (
        session.dialect.name
    )  # fmt: skip
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"idempotent inserts are not implemented for {dialect}")
