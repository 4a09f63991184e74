"""What replay reads: which rows to recompute (a document's, or a batch's: a sample or
all), and each row as stored, with its text and the model that made it.

Row ids are what a verify task carries (never texts); the worker reads the rows again
from its own database, which is the source of truth.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Batch, Document, Explanation, Model
from db.queries import find_document, require_batch

READ_CHUNK = 1000  # rows per query: far below 65,535 bound parameters; memory stays flat


def choose_rows(
    session: Session,
    *,
    doc: str | None = None,
    batch: str | None = None,
    sample: int | None = None,
    method: str | None = None,
) -> list[int]:
    """Explanation row ids to replay, in row order: every row of ``doc`` (within
    ``batch`` if given), or of ``batch``, at most ``sample`` of them drawn at random
    (unpredictably: a forger cannot know which rows will be checked). LookupError when
    nothing matches."""
    query = select(Explanation.id).order_by(Explanation.id)
    if doc is not None:
        document = find_document(session, doc, batch)
        query = query.where(Explanation.document_id == document.id)
        where = f"document {doc!r}"
    elif batch is not None:
        require_batch(session, batch)
        query = query.where(Explanation.batch_id == batch)
        where = f"batch {batch}"
    else:
        raise ValueError("replay needs a document or --batch")
    if method is not None:
        query = query.where(Explanation.method == method)
    ids = list(session.scalars(query))
    if not ids:
        raise LookupError(f"no explanations of {where}" + (f" by {method}" if method else ""))
    if sample is not None and sample < len(ids):
        ids = sorted(random.SystemRandom().sample(ids, sample))
    return ids


def row_models(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """Each row's batch's model spec, as the producer routed its chunks: a verify task
    goes to the queue of the workers that hold that model."""
    out: dict[int, str] = {}
    for start in range(0, len(ids), READ_CHUNK):
        query = (
            select(Explanation.id, Batch.model)
            .join(Batch, Batch.id == Explanation.batch_id)
            .where(Explanation.id.in_(ids[start : start + READ_CHUNK]))
        )
        out.update(session.execute(query).all())
    return out


def stored_chunks(
    session: Session, ids: Sequence[int], chunk: int = READ_CHUNK
) -> Iterator[list[dict[str, Any]]]:
    """The rows ``ids`` as stored (``stored_rows``), ``chunk`` at a time, in order: one
    query per chunk keeps its bound parameters under the drivers' limit (65,535 on
    psycopg) and memory to a chunk's texts and scores."""
    for start in range(0, len(ids), chunk):
        yield stored_rows(session, ids[start : start + chunk])


def stored_rows(session: Session, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The rows ``ids`` (at most READ_CHUNK: ``stored_chunks`` reads more) as stored, in
    that order, with what a replay needs: the text, the batch's model spec, the model's
    recorded path and weights hash."""
    if len(ids) > READ_CHUNK:
        raise ValueError(f"{len(ids)} rows in one query: read them with stored_chunks")
    query = (
        select(
            Explanation.id, Explanation.method, Explanation.params, Explanation.label,
            Explanation.probabilities, Explanation.tokens, Explanation.attributions,
            Explanation.convergence_delta, Explanation.relative_gap, Explanation.steps,
            Explanation.device, Explanation.windows, Explanation.execution,
            Explanation.batch_id, Document.external_id, Document.text,
            Batch.model.label("model_spec"), Model.name.label("model_name"),
            Model.path.label("model_path"), Model.sha256.label("model_sha256"),
        )
        .join(Document, Document.id == Explanation.document_id)
        .join(Batch, Batch.id == Document.batch_id)
        .join(Model, Model.id == Explanation.model_id)
        .where(Explanation.id.in_(list(ids)))
    )  # fmt: skip
    found = {row["id"]: dict(row) for row in session.execute(query).mappings()}
    missing = [i for i in ids if i not in found]
    if missing:
        raise LookupError(f"no explanation rows {', '.join(map(str, missing[:5]))}")
    return [found[i] for i in ids]
