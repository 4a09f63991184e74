"""The export: one flat, JSON-ready record per explanation, and one per failed document
(``results export``, ``results show --json``); streamed, so a corpus never has to fit in
memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Document, Explanation, Model, RunSettings, Status, explanation_columns
from db.queries import iso, require_batch, stream

EXPLANATION_FIELDS = (
    "method", "params", "label", "confidence", "probabilities", "tokens", "attributions",
    "convergence_delta", "relative_gap", "steps", "worker", "device", "timings",
    "quality", "extra", "windows", "execution", "offsets", "word_ids",
)  # fmt: skip
# "offsets": each token's character start and end in "text", flattened; "word_ids": each
# token's whitespace-delimited word of the text, -1 for special tokens (the ``words``
# column, renamed because ``results show --words --json`` calls its word view "words").
# Both null on rows without them (a slow tokenizer, or written before they were stored).
COLUMNS = {"word_ids": "words"}  # export key -> Explanation attribute, where they differ
# "truncated" stays in the export's schema for its readers: no row is truncated since long
# documents are windowed; a row from before keeps it in ``execution``.
EXPORT_FIELDS = (
    "batch_id", "document_id", "text", "metadata", "status", "error",
    "model", "model_path", "model_sha256", *EXPLANATION_FIELDS[:10], "truncated",
    *EXPLANATION_FIELDS[10:], "created_at",
)  # fmt: skip


def export_rows(
    session: Session, *, batch: str | None = None, method: str | None = None
) -> Iterator[dict[str, Any]]:
    """One record per explanation, then one per FAILED document (which has none, so its
    explanation fields are null), keyed by ``EXPORT_FIELDS``; streamed."""
    require_batch(session, batch)
    # Columns, not ORM objects: a million rows are read at tens of thousands a second.
    e = {column.name: column for column in explanation_columns()}
    d, m = Document.__table__.c, Model.__table__.c
    explained = select(
        *(e[COLUMNS.get(key, key)].label(key) for key in EXPLANATION_FIELDS),
        e["created_at"], d.batch_id, d.external_id, d.text, d.meta, d.error,
        m.name.label("model"), m.path.label("model_path"), m.sha256.label("model_sha256"),
    ).select_from(
        Explanation.__table__.join(Document.__table__).join(Model.__table__)
        .join(RunSettings.__table__, RunSettings.id == Explanation.settings_id)
    )  # fmt: skip
    failed = select(Document).where(Document.status == Status.FAILED).order_by(Document.id)
    if batch:  # along the (batch, document) index: the first record comes at once
        explained = explained.where(Explanation.batch_id == batch).order_by(
            Explanation.batch_id, Explanation.document_id, Explanation.id
        )
        failed = failed.where(Document.batch_id == batch)
    else:
        explained = explained.order_by(Explanation.id)
    if method:
        explained = explained.where(Explanation.method == method)
    for row in stream(session, explained):
        yield _explained(row)
    for (doc,) in stream(session, failed):
        yield export_record(doc, None, None)


def document_records(session: Session, document: Document) -> list[dict[str, Any]]:
    """A document's export records: one per explanation, or one bare record (any status)."""
    query = select(Explanation, Model).join(Model).where(Explanation.document_id == document.id)
    explained = session.execute(query.order_by(Explanation.id))
    records = [export_record(document, exp, model) for exp, model in explained]
    return records or [export_record(document, None, None)]


def _explained(row: Any) -> dict[str, Any]:
    """``export_record`` of an explanation read as columns."""
    values = row._mapping
    record = {key: values[key] for key in EXPORT_FIELDS if key in values}
    record.update(
        document_id=values["external_id"], metadata=values["meta"], status="done",
        truncated=bool((values["execution"] or {}).get("truncated", False)),
        created_at=iso(values["created_at"]),
    )  # fmt: skip
    return {key: record.get(key) for key in EXPORT_FIELDS}


def export_record(doc: Document, exp: Explanation | None, model: Model | None) -> dict[str, Any]:
    """The flat, JSON-ready record of one explanation (or of a document without one)."""
    record = dict.fromkeys(EXPORT_FIELDS)
    record.update(
        batch_id=doc.batch_id,
        document_id=doc.external_id,
        text=doc.text,
        metadata=doc.meta,
        status="done" if exp else doc.status.value.lower(),
        error=doc.error,
        created_at=iso(exp.created_at if exp else doc.updated_at),
    )
    if exp and model:
        record.update(model=model.name, model_path=model.path, model_sha256=model.sha256)
        record.update({key: getattr(exp, COLUMNS.get(key, key)) for key in EXPLANATION_FIELDS})
        record["truncated"] = bool((exp.execution or {}).get("truncated", False))
    return record
