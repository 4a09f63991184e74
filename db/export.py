"""The export: one flat, JSON-ready record per explanation, and one per failed document
(``results export``, ``results show --json``); streamed, so a corpus never has to fit in
memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import SETTINGS, Document, Explanation, Model, RunSettings, Status
from db.queries import in_batch, iso, require_batch, stream

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
    explanation fields are null), keyed by ``EXPORT_FIELDS``; streamed. Records of rows
    with the same settings share their ``params`` and ``execution`` objects."""
    require_batch(session, batch)
    # Columns as tuples, not ORM objects, and each settings set decoded once, not per
    # row: a batch is read at tens of thousands of rows a second.
    e, d, m = Explanation.__table__.c, Document.__table__.c, Model.__table__.c
    explained = select(
        *(e[COLUMNS.get(key, key)] for key in _OWN), e.settings_id, e.created_at,
        d.batch_id, d.external_id, d.text, d.meta, d.error, m.name, m.path, m.sha256,
    ).select_from(Explanation.__table__.join(Document.__table__).join(Model.__table__))  # fmt: skip
    failed = select(Document).where(Document.status == Status.FAILED).order_by(Document.id)
    if batch:  # along the identity index (in_batch): the first record comes at once
        explained = explained.where(in_batch(batch)).order_by(
            Explanation.document_id, Explanation.id
        )
        failed = failed.where(Document.batch_id == batch)
    else:
        explained = explained.order_by(Explanation.id)
    if method:
        explained = explained.where(Explanation.method == method)
    settings = _Settings(session)
    own = len(_OWN)
    # Core, not the ORM's loading of plain columns: a third of the time per row; still a
    # server-side cursor read in slices (yield_per)
    rows = session.connection().execute(explained.execution_options(yield_per=EXPORT_ROWS))
    for row in rows:
        params, execution, worker, device = settings[row[own]]
        values = dict(zip(_OWN, row, strict=False))
        created_at, batch_id, external_id, text, meta, error, name, path, sha256 = row[own + 1 :]
        values.update(params=params, execution=execution, worker=worker, device=device)
        yield {
            "batch_id": batch_id, "document_id": external_id, "text": text, "metadata": meta,
            "status": "done", "error": error, "model": name, "model_path": path,
            "model_sha256": sha256, **{key: values[key] for key in EXPLANATION_FIELDS[:10]},
            "truncated": bool((execution or {}).get("truncated", False)),
            **{key: values[key] for key in EXPLANATION_FIELDS[10:]},
            "created_at": iso(created_at),
        }  # fmt: skip
    for (doc,) in stream(session, failed):
        yield export_record(doc, None, None)


EXPORT_ROWS = 2000  # rows per fetch: fewer round trips, memory still constant
_OWN = tuple(key for key in EXPLANATION_FIELDS if key not in SETTINGS)


class _Settings(dict[int, tuple[Any, ...]]):
    """Settings sets by id, each read and decoded the first time a row names it."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def __missing__(self, settings_id: int) -> tuple[Any, ...]:
        query = select(*(RunSettings.__table__.c[name] for name in SETTINGS)).where(
            RunSettings.id == settings_id
        )
        self[settings_id] = found = tuple(self.session.execute(query).one())
        return found


def document_records(session: Session, document: Document) -> list[dict[str, Any]]:
    """A document's export records: one per explanation, or one bare record (any status)."""
    query = select(Explanation, Model).join(Model).where(Explanation.document_id == document.id)
    explained = session.execute(query.order_by(Explanation.id))
    records = [export_record(document, exp, model) for exp, model in explained]
    return records or [export_record(document, None, None)]


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
