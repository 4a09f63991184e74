"""Registering a batch: the batch, its rejected lines and its documents as PENDING."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from db.models import Batch, Document, Rejection, Status
from db.writes import dialect_insert


@dataclass(frozen=True)
class NewDocument:
    external_id: str
    line: int
    text: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class RejectedLine:
    line: int
    field: str | None
    reason: str


def create_batch(
    session: Session,
    *,
    source: str,
    model: str,
    methods: Sequence[str],
    params: dict[str, Any],
    documents: Sequence[NewDocument],
    rejections: Sequence[RejectedLine],
) -> tuple[str, list[tuple[int, int]]]:
    """Registers the batch and its documents as PENDING; returns the batch id and
    (document id, text length) pairs for enqueueing."""
    batch = Batch(
        id=str(uuid.uuid4()),
        source=source,
        model=model,
        methods=list(methods),
        params=params,
        submitted=len(documents),
        rejected=len(rejections),
    )
    session.add(batch)
    session.add_all(
        Rejection(batch_id=batch.id, line=r.line, field=r.field, reason=r.reason)
        for r in rejections
    )
    rows = [
        Document(
            batch_id=batch.id, external_id=d.external_id, line=d.line, text=d.text, meta=d.meta
        )
        for d in documents
    ]
    session.add_all(rows)
    session.flush()
    return batch.id, [(row.id, len(row.text)) for row in rows]


PAGE = 5_000  # documents inserted per statement while a file streams in


def register_batch(
    session: Session,
    *,
    source: str,
    model: str,
    methods: Sequence[str],
    params: dict[str, Any],
    verdicts: Iterable[NewDocument | RejectedLine],
    on_duplicate: Callable[[RejectedLine], None] | None = None,
) -> tuple[str, int, int]:
    """Registers a batch whose documents and rejected lines stream in (a million-line
    file in constant memory): inserted a page at a time, all in the caller's one
    transaction, so a batch is registered whole or not at all. A document whose id the
    batch already holds is rejected here, by the unique index, naming the first line
    (``on_duplicate`` hears each, a page after it was read): no table of every id seen
    grows in memory. Returns the batch id and the accepted and rejected counts;
    ``pending_lengths`` streams them back to enqueue."""
    batch_id = str(uuid.uuid4())
    session.add(Batch(id=batch_id, source=source, model=model, methods=list(methods),
                      params=params, submitted=0, rejected=0))  # fmt: skip
    session.flush()
    accepted = rejected = 0
    documents: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal accepted, rejected
        duplicates = _insert_documents(session, batch_id, documents)
        for duplicate in duplicates:
            rejections.append({"batch_id": batch_id, **vars(duplicate)})
            if on_duplicate:
                on_duplicate(duplicate)
        accepted += len(documents) - len(duplicates)
        rejected += len(rejections)
        if rejections:
            session.execute(insert(Rejection), rejections)
        documents.clear()
        rejections.clear()

    for verdict in verdicts:
        pending = documents if isinstance(verdict, NewDocument) else rejections
        pending.append({"batch_id": batch_id, **vars(verdict)})
        if len(documents) + len(rejections) >= PAGE:
            flush()
    flush()
    session.execute(
        update(Batch).where(Batch.id == batch_id).values(submitted=accepted, rejected=rejected)
    )
    return batch_id, accepted, rejected


def _insert_documents(
    session: Session, batch_id: str, documents: list[dict[str, Any]]
) -> list[RejectedLine]:
    """Inserts a page of documents in line order, each id once per batch; returns the
    lines whose id was taken (earlier in the page or in an earlier one), as rejections
    naming the line that has it."""
    if not documents:
        return []
    table = Document.__table__
    statement = (
        dialect_insert(session)(table)
        .on_conflict_do_nothing(index_elements=["batch_id", "external_id"])
        .returning(table.c.line)
    )
    inserted = set(session.scalars(statement, documents))
    taken = [d for d in documents if d["line"] not in inserted]
    if not taken:
        return []
    first = dict(session.execute(
        select(Document.external_id, Document.line).where(
            Document.batch_id == batch_id,
            Document.external_id.in_({d["external_id"] for d in taken}),
        )
    ).all())  # fmt: skip
    return [RejectedLine(d["line"], "id", f"duplicate id {d['external_id']!r} "
                         f"(first on line {first[d['external_id']]})") for d in taken]  # fmt: skip


def pending_lengths(session: Session, batch_id: str) -> Iterator[tuple[int, int]]:
    """The batch's (document id, text length), shortest first, streamed from the
    database: what ``db.ownership.iter_chunks`` cuts into chunks."""
    length = func.length(Document.text)
    query = (
        select(Document.id, length)
        .where(Document.batch_id == batch_id)
        .order_by(length, Document.id)
        .execution_options(yield_per=10_000)
    )
    yield from session.execute(query)


def status_counts(session: Session, batch_id: str) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    rows = session.execute(
        select(Document.status, func.count())
        .where(Document.batch_id == batch_id)
        .group_by(Document.status)
    )
    for status, count in rows:
        counts[Status(status)] = count
    return counts


def failure_reasons(session: Session, batch_id: str, limit: int = 5) -> list[tuple[str, int]]:
    """The batch's FAILED documents' errors by their first line, most frequent first."""
    rows = session.execute(
        select(Document.error, func.count())
        .where(Document.batch_id == batch_id, Document.status == Status.FAILED)
        .group_by(Document.error)
    )
    grouped: dict[str, int] = {}
    for error, count in rows:
        first = ((error or "no reason recorded").strip().splitlines() or ["?"])[0]
        grouped[first] = grouped.get(first, 0) + count
    return sorted(grouped.items(), key=lambda item: (-item[1], item[0]))[:limit]


def batch_routes(session: Session, batch_ids: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """Each batch's model and methods: where a re-sent chunk goes, and what it shows."""
    rows = session.execute(
        select(Batch.id, Batch.model, Batch.methods).where(Batch.id.in_(set(batch_ids)))
    )
    return {batch_id: (model, list(methods)) for batch_id, model, methods in rows}
