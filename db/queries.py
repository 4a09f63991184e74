"""The read side: what the results CLI and the demo ask of the database.

Only SQLAlchemy expressions build SQL here, and sort orders and statuses come from
whitelists, so nothing a user types reaches the database as SQL. Queries over all
explanations stream (``yield_per``) so a corpus never has to fit in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Result, Select, and_, func, select
from sqlalchemy.orm import Session

from db.models import ALL_BATCHES, Batch, Document, Explanation, Model, Status, TokenStat
from db.words import bare, merge_wordpieces, word_key

MAX_LIMIT = 10_000
STREAM_ROWS = 500
ORDERS = ("id", "confidence", "-confidence", "label", "status")
STATUSES = tuple(status.value.lower() for status in Status)


@dataclass(frozen=True)
class DocumentRow:
    """One line of ``results list``: a document and, once explained, its explanation."""

    id: int
    external_id: str
    batch_id: str
    status: str
    label: str | None
    confidence: float | None
    top_tokens: list[str]
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def top_words(
    tokens: Sequence[str],
    scores: Sequence[float],
    n: int = 3,
    offsets: Sequence[int] | None = None,
    words: Sequence[int] | None = None,
    text: str | None = None,
) -> list[str]:
    """The ``n`` words pushing hardest toward the predicted label (positive scores only),
    each once (as ``word_key`` counts words). With the row's ``offsets``, ``words`` and
    the document's ``text`` (``db.words``), words as the text writes them, without the
    punctuation around them; else BERT's ``##`` pieces merged."""
    fits = (
        offsets is not None and words is not None and text is not None
        and len(offsets) == 2 * len(tokens) and len(words) == len(tokens)
    )  # fmt: skip
    merged = merge_wordpieces(tokens, scores, *((offsets, words, text) if fits else ()))
    strongest: dict[str, str] = {}  # word_key -> the word as written, strongest first
    for word, score in sorted(merged, key=lambda pair: -pair[1]):
        if score > 0:
            strongest.setdefault(word_key(word), bare(word) or word)
    return list(strongest.values())[:n]


def parse_status(status: str) -> Status:
    """A status as users type it (any case), or a ValueError listing the valid ones."""
    if status.lower() not in STATUSES:
        raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
    return Status(status.upper())


def require_batch(session: Session, batch: str | None) -> None:
    """A LookupError naming the most recent batches when ``batch`` is not one: an empty
    table would pass for a batch with nothing in it."""
    if batch is None or session.get(Batch, batch) is not None:
        return
    recent = session.scalars(select(Batch.id).order_by(Batch.created_at.desc()).limit(5)).all()
    known = f"; recent: {', '.join(recent)} (`results batches`)" if recent else "; none yet"
    raise LookupError(f"no batch {batch!r}{known}")


def require_label(session: Session, label: str | None) -> None:
    """A LookupError listing the labels of every model when ``label`` is none of them
    (labels are case-sensitive: "Positive" is not "positive")."""
    if label is None:
        return
    known = sorted(
        {str(name) for labels in session.scalars(select(Model.labels)) for name in labels}
    )
    if known and label not in known:
        raise LookupError(f"unknown label {label!r}; known: {', '.join(known)}")


def find_document(session: Session, ref: int | str, batch: str | None = None) -> Document:
    """A document by the user's id, or by internal id (an ``int``, or digits).

    Raises LookupError when nothing matches and ValueError when the reference could be
    several documents (never a silent pick): a user's id in several batches, or digits
    that are one document's user id and another's internal id. With ``batch``, the
    user's id in that batch wins.
    """
    scoped = select(Document).order_by(Document.id)
    if batch:
        scoped = scoped.where(Document.batch_id == batch)
    text = str(ref)
    mine: Sequence[Document] = []
    if not isinstance(ref, int):
        mine = session.scalars(scoped.where(Document.external_id == text)).all()
    if len(mine) > 1:
        batches = ", ".join(doc.batch_id for doc in mine)
        raise ValueError(f"document {text!r} is in several batches ({batches}); pass a batch")
    by_id = None
    if text.isascii() and text.isdigit() and len(text) < 19 and not (batch and mine):
        by_id = session.scalars(scoped.where(Document.id == int(text))).first()
    if mine and by_id and by_id.id != mine[0].id:
        raise ValueError(
            f"{text!r} is ambiguous: your id of document {mine[0].id} (batch {mine[0].batch_id})"
            f" and the internal id of document {by_id.id} (your id {by_id.external_id!r}, batch"
            f" {by_id.batch_id}); pass a batch, or use that document's own id"
        )
    if not mine and by_id is None:
        raise LookupError(f"no document {text!r}" + (f" in batch {batch}" if batch else ""))
    return mine[0] if mine else by_id


def top_tokens(
    session: Session,
    *,
    label: str,
    batch: str | None = None,
    method: str = "lig",
    min_count: int = 2,
    limit: int = 20,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """The words that push documents toward ``label`` (a positive mean attribution per
    occurrence), over a batch or everything, from the aggregates the writes keep
    (``token_stats``): no scan of the corpus."""
    require_batch(session, batch)
    require_label(session, label)
    total, occurrences = func.sum(TokenStat.total), func.sum(TokenStat.occurrences)
    documents = func.sum(TokenStat.documents)
    mean = total / occurrences
    query = (
        select(TokenStat.word, mean, total, occurrences, documents)
        .where(TokenStat.scope == (batch or ALL_BATCHES), TokenStat.method == method,
               TokenStat.label == label)
        .group_by(TokenStat.word)
        .having(documents >= min_count, total > 0)
        .order_by(mean.desc(), TokenStat.word)
        .limit(max(0, min(limit, MAX_LIMIT)))
    )  # fmt: skip
    if model:
        query = query.where(TokenStat.model_id.in_(select(Model.id).where(Model.name == model)))
    return [
        {"token": word, "mean_attribution": float(mean_value), "total_attribution": float(sum_),
         "occurrences": int(n), "documents": int(docs)}
        for word, mean_value, sum_, n, docs in session.execute(query)
    ]  # fmt: skip


def batch_summaries(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent batches with their documents counted per status."""
    batches = session.scalars(
        select(Batch).order_by(Batch.created_at.desc()).limit(max(0, min(limit, MAX_LIMIT)))
    ).all()
    counts: dict[tuple[str, str], int] = {}
    if batches:
        rows = session.execute(
            select(Document.batch_id, Document.status, func.count())
            .where(Document.batch_id.in_([b.id for b in batches]))
            .group_by(Document.batch_id, Document.status)
        )
        counts = {(b, Status(s).value.lower()): n for b, s, n in rows}
    fields = ("source", "model", "methods", "submitted", "rejected")
    return [
        {"batch_id": b.id, "created_at": iso(b.created_at), **{f: getattr(b, f) for f in fields},
         **{status: counts.get((b.id, status), 0) for status in STATUSES}}
        for b in batches
    ]  # fmt: skip


def in_batch(batch: str) -> ColumnElement[bool]:
    """An explanation of ``batch``, found along the identity index: its documents' ids
    span a range (both ends read from the documents' (batch, id) index), which reads
    the batch's rows in document order without an index of their own."""
    first, last = (
        select(end(Document.id)).where(Document.batch_id == batch).scalar_subquery()
        for end in (func.min, func.max)
    )
    return and_(Explanation.batch_id == batch, Explanation.document_id.between(first, last))


def stream(session: Session, query: Select[Any]) -> Result[Any]:
    # The yield_per execution option is what makes the ORM build objects in chunks and
    # the driver use a server-side cursor; Result.yield_per alone only sets the fetch size.
    return session.execute(query.execution_options(yield_per=STREAM_ROWS)).yield_per(STREAM_ROWS)


def iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; they were written in UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
