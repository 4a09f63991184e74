"""Example-based explanation: the documents a model represents most like a given one.

One streaming pass over the stored vectors of the same model, scored in blocks with
numpy and kept in a bounded heap, so the corpus never has to fit in memory.
"""

from __future__ import annotations

import heapq
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Document, Explanation, Model, Representation

BLOCK = 500  # vectors scored per numpy call (and fetched per round trip)
SNIPPET = 80


def nearest(
    session: Session,
    document: Document,
    *,
    limit: int = 10,
    model: str | None = None,
    batch: str | None = None,
) -> dict[str, Any]:
    """The ``limit`` documents whose vectors (same model) have the highest cosine
    similarity to ``document``'s, best first, with their predicted label and a snippet.
    LookupError when the document has no vector; ValueError when several models gave it
    one and ``model`` does not say which."""
    import numpy as np  # only this command needs numpy

    mine = _own_vector(session, document, model)
    query_vector = np.asarray(mine.vector, dtype=np.float64)
    candidates = (
        select(Representation.document_id, Representation.vector, Representation.norm)
        .where(Representation.model_id == mine.model_id, Representation.document_id != document.id)
        .execution_options(yield_per=BLOCK)
    )
    if batch:
        candidates = candidates.join(Document, Document.id == Representation.document_id).where(
            Document.batch_id == batch
        )
    best: list[tuple[float, int]] = []  # a min-heap of (similarity, -document id)
    keep = max(0, limit)
    for block in session.execute(candidates).partitions(BLOCK):
        ids = [row[0] for row in block]
        vectors = np.asarray([row[1] for row in block], dtype=np.float64)
        norms = np.asarray([row[2] for row in block], dtype=np.float64) * (mine.norm or 1.0)
        scores = vectors @ query_vector / np.where(norms > 0, norms, 1.0)
        for doc_id, score in zip(ids, scores.tolist(), strict=True):
            item = (score, -doc_id)  # ties: the lower id first
            if len(best) < keep:
                heapq.heappush(best, item)
            elif keep and item > best[0]:
                heapq.heapreplace(best, item)
    ranked = sorted(best, reverse=True)
    return {
        "document": document.id,
        "external_id": document.external_id,
        "model": mine.model_name,
        "neighbours": _describe(session, [(-neg, score) for score, neg in ranked], mine.model_id),
    }


class OwnVector(NamedTuple):
    vector: list[float]
    norm: float
    model_id: int
    model_name: str


def _own_vector(session: Session, document: Document, model: str | None) -> OwnVector:
    query = (
        select(Representation.vector, Representation.norm, Model.id, Model.name)
        .join(Model, Model.id == Representation.model_id)
        .where(Representation.document_id == document.id)
        .order_by(Model.id)
    )
    if model:
        query = query.where(Model.name == model)
    rows = session.execute(query).all()
    if not rows:
        which = f" from model {model!r}" if model else ""
        raise LookupError(
            f"document {document.external_id!r} has no stored vector{which}"
            " (not explained yet, or explained before vectors were kept)"
        )
    names = sorted({row[3] for row in rows})
    if len(rows) > 1:
        raise ValueError(f"several models have a vector of this document; pass --model: {names}")
    return OwnVector(*rows[0])


def _describe(session: Session, ranked: list[tuple[int, float]], model_id: int) -> list[dict]:
    """Id, similarity, predicted label, confidence and a snippet per neighbour."""
    ids = [doc_id for doc_id, _ in ranked]
    docs = {d.id: d for d in session.scalars(select(Document).where(Document.id.in_(ids)))}
    labels: dict[int, tuple[str, float]] = {}
    predicted = (
        select(Explanation.document_id, Explanation.label, Explanation.confidence)
        .where(Explanation.document_id.in_(ids), Explanation.model_id == model_id)
        .order_by(Explanation.id)
    )
    for doc_id, label, confidence in session.execute(predicted):
        labels.setdefault(doc_id, (label, confidence))  # every method shares the prediction
    out = []
    for doc_id, similarity in ranked:
        doc = docs[doc_id]
        label, confidence = labels.get(doc_id, (None, None))
        text = " ".join(doc.text.split())
        out.append(
            {"id": doc.id, "external_id": doc.external_id, "batch_id": doc.batch_id,
             "similarity": similarity, "label": label, "confidence": confidence,
             "snippet": text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"}
        )  # fmt: skip
    return out
