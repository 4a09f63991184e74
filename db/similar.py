"""Example-based explanation: the documents a model represents most like a given one.

Cosine similarity of the pooled vectors, scored with numpy from the stored float32 bytes
(``db.vector_fetch.raw_vector``), and read one of two ways (``result["index"]``):

- ``"exact"``: every vector of the model (or of the ``--within`` batch) in one streaming
  pass, in blocks, so the corpus never has to fit in memory. Taken when the model has no
  index and at most ``EXACT_BELOW`` (10,000) vectors (small databases get exact
  answers), or when the batch has at most that many documents.
- ``"ivf"``: the inverted-file index of ``db.vector_index``. The query's nearest
  centroids are ranked, and only the vectors of the ``probes`` nearest lists (1/64 of
  them, at least 8) are read and ranked exactly, plus the vectors written since the
  index was built (``list_id`` null: always read, so always found). ``result["probed"]``
  says how many lists were read. Filters (``--within``, the model) are applied to those
  vectors; while fewer than ``limit`` passed, twice as many lists are read again (and so
  on, to every list), so a filtered query still returns ``limit`` neighbours when they
  exist. A filter costs recall: the batch's nearest vectors are farther away, in lists
  not always read (1,000,000 clustered vectors, 16 of 1,000 lists read: recall@10 0.98
  unfiltered and within a batch of 27% of them, 0.91 within one of 3%). The index is
  built or kept up by the query itself when needed (``vector_index.maintain``), or ahead
  of time by ``results index``.

On PostgreSQL a list's vectors cross as one row (``_packed_lists``: ids, the vectors
concatenated, norms), not a row each: at 1,000,000 vectors a query reads about 20,000
of them, and the client's cost per row was most of the time.

pgvector is not available on these machines, and no path uses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import LargeBinary, Select, case, func, literal, select, type_coerce
from sqlalchemy.orm import Session

from db import kmeans, vector_centroids, vector_fetch, vector_index
from db.models import Document, Explanation, Model, Representation

BLOCK = 5_000  # vectors scored per numpy call (and fetched per round trip)
SNIPPET = 80


def nearest(
    session: Session,
    document: Document,
    *,
    limit: int = 10,
    model: str | None = None,
    batch: str | None = None,
    maintain: bool = True,
) -> dict[str, Any]:
    """The ``limit`` documents whose vectors (same model) have the highest cosine
    similarity to ``document``'s, best first, with their predicted label and a snippet;
    ``index`` says how they were found ("exact" or "ivf", with ``probed`` lists).
    LookupError when the document has no vector; ValueError when several models gave it
    one and ``model`` does not say which. ``maintain=False``: never write the index."""
    mine = _own_vector(session, document, model)
    query = np.asarray(mine.vector, dtype=np.float32)
    keep = max(0, limit)
    top = TopK(keep, query, mine.norm)
    result: dict[str, Any] = {"index": "exact"}
    index = _index_for(session, mine.model_id, batch, maintain) if keep else None
    if index is not None:
        candidates = _candidates(mine.model_id, document.id, batch, listed=True)
        result = {"index": "ivf", "probed": _search_lists(session, candidates, index, top)}
    elif keep:
        candidates = _candidates(mine.model_id, document.id, batch, listed=False)
        stream = candidates.execution_options(yield_per=BLOCK)
        for block in session.execute(stream).partitions(BLOCK):
            top.add(block)
    return {
        "document": document.id,
        "external_id": document.external_id,
        "model": mine.model_name,
        "neighbours": _describe(session, top.ranked(), mine.model_id),
        **result,
    }


class TopK:
    """The best ``keep`` (document id, cosine) so far; ties go to the lower id."""

    def __init__(self, keep: int, query: np.ndarray, norm: float | None) -> None:
        self.keep, self.query, self.norm = keep, query, norm or 1.0
        self.ids = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0, dtype=np.float64)

    def add(self, rows: Any) -> int:
        """Scores rows of (document id, vector bytes or None, norm); a row whose vector
        is None did not pass the filters. Returns how many did."""
        if not rows:
            return 0
        all_ids, blobs, all_norms = zip(*rows, strict=True)
        if None in blobs:
            rows = [row for row in rows if row[1] is not None]
            if not rows:
                return 0
            all_ids, blobs, all_norms = zip(*rows, strict=True)
        if not blobs or not self.keep:
            return len(blobs)
        matrix, kept = kmeans.as_matrix(blobs, len(self.query))
        ids = np.asarray(all_ids, dtype=np.int64)[kept]
        self._keep(ids, matrix, np.asarray(all_norms, dtype=np.float64)[kept])
        return len(blobs)

    def add_packed(self, ids: Sequence[int], joined: bytes, norms: Sequence[float]) -> int:
        """Scores vectors given as one buffer (``ids[i]``'s vector at ``i``, all of the
        query's length, as ``_packed_lists`` returns them). Returns how many."""
        if not ids:
            return 0
        matrix = np.frombuffer(joined, dtype=kmeans.DTYPE).reshape(len(ids), len(self.query))
        matrix = matrix.astype(np.float32, copy=False)
        self._keep(np.asarray(ids, dtype=np.int64), matrix, np.asarray(norms, dtype=np.float64))
        return len(ids)

    def _keep(self, ids: np.ndarray, matrix: np.ndarray, norms: np.ndarray) -> None:
        norms = norms * self.norm
        scores = (matrix @ self.query).astype(np.float64) / np.where(norms > 0, norms, 1.0)
        if len(scores) > self.keep:  # the best keep, and any tied with the last of them
            cut = -np.partition(-scores, self.keep - 1)[self.keep - 1]
            ids, scores = ids[scores >= cut], scores[scores >= cut]
        ids, scores = np.concatenate([self.ids, ids]), np.concatenate([self.scores, scores])
        best = np.lexsort((ids, -scores))[: self.keep]
        self.ids, self.scores = ids[best], scores[best]

    def ranked(self) -> list[tuple[int, float]]:
        return list(zip(self.ids.tolist(), self.scores.tolist(), strict=True))


def _candidates(model_id: int, document_id: int, batch: str | None, *, listed: bool) -> Select[Any]:
    """(document id, vector bytes, norm) of every other vector of the model, of the
    batch's documents only. ``listed`` (to read lists of the index): the batch is asked
    of each row read (a correlated EXISTS on ``ix_documents_batch_id``, where a join
    would hash the whole batch), and a row of another batch comes with a null vector."""
    vector = vector_fetch.raw_vector()
    query = select(Representation.document_id, vector, Representation.norm).where(
        Representation.model_id == model_id, Representation.document_id != document_id
    )
    if not batch:
        return query
    if not listed:  # an exact scan of a small batch: from its documents
        return query.join(Document, Document.id == Representation.document_id).where(
            Document.batch_id == batch
        )
    in_batch = (
        select(Document.id)
        .where(Document.id == Representation.document_id, Document.batch_id == batch)
        .exists()
    )
    filtered = type_coerce(case((in_batch, vector), else_=None), LargeBinary)
    return query.with_only_columns(Representation.document_id, filtered, Representation.norm)


def _index_for(
    session: Session, model_id: int, batch: str | None, maintain: bool
) -> vector_centroids.Index | None:
    """The model's index, when the search is large enough to want one (built or kept up
    first, when ``maintain``); None: scan exactly. A model without an index is scanned
    exactly while it has at most EXACT_BELOW vectors (and gets one past that)."""
    small = vector_index.EXACT_BELOW
    index = vector_centroids.load(session, model_id)
    if index is None:
        count = vector_index.count_at_most(session, vector_index.model_vectors(model_id), small)
        if count <= small or not maintain:
            return None
    if maintain and vector_index.maintain(session, model_id, index):
        index = vector_centroids.load(session, model_id)
    if index is not None and batch:
        few = vector_index.EXACT_BATCH_BELOW
        count = vector_index.count_at_most(session, vector_index.batch_documents(batch), few)
        if count <= few:
            return None  # the batch's vectors are few: read them all
    return index


def _search_lists(
    session: Session, candidates: Select[Any], index: vector_centroids.Index, top: TopK
) -> int:
    """Ranks the vectors of the lists nearest the query, and the unindexed ones, into
    ``top``: the first ``probes`` lists, then twice as many as read so far while fewer
    than ``limit`` vectors passed the filters. Returns how many lists were read."""
    order = kmeans.probe_order(index, top.query)
    unlisted = vector_fetch.fetch(session, candidates.where(Representation.list_id.is_(None)))
    passed = top.add(unlisted)
    packed = session.get_bind().dialect.name == "postgresql"
    taken, step = 0, kmeans.probes(index.lists)
    while taken < len(order) and (not taken or passed < top.keep):
        for chunk in vector_fetch.in_slices(order[taken : taken + step]):
            if packed:
                for ids, joined, norms in _packed_lists(session, candidates, chunk, len(top.query)):
                    passed += top.add_packed(ids, joined, norms)
            else:
                lists = candidates.where(Representation.list_id.in_(chunk))
                passed += top.add(vector_fetch.fetch(session, lists))
        taken += len(order[taken : taken + step])
        step = taken
    return taken


def _packed_lists(
    session: Session, lists: Select[Any], chunk: list[int], dim: int
) -> Iterator[tuple[list[int], bytes, list[float]]]:
    """The rows of each list of ``chunk`` that passed the filters, one list at a time and
    in one row on PostgreSQL: the ids, the vectors concatenated in one buffer, the norms.
    A list of 1,000 vectors crosses as one value instead of 1,000 rows (the client's
    per-row cost was two thirds of a query); one list per statement, so that no sort
    spills and no value nears bytea's 1 GB. Aggregates of one query see the rows in the
    same order. Vectors of another length are left out, as ``kmeans.as_matrix`` does."""
    for list_id in chunk:
        rows = lists.where(Representation.list_id == list_id).subquery()
        document_id, vector, norm = rows.c
        passed = vector.is_not(None) & (func.octet_length(vector) == 4 * dim)
        packed = select(
            func.array_agg(document_id).filter(passed),
            func.string_agg(vector, literal(b"", LargeBinary)).filter(passed),
            func.array_agg(norm).filter(passed),
        )
        for ids, joined, norms in vector_fetch.fetch(session, packed):
            yield ids or [], bytes(joined or b""), norms or []


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
