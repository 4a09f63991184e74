"""Who runs a document: the claim, the owner task, the end of a run, and the hand-over of
documents left unfinished (the sweeper and ``producer resume``).

A task may run PENDING documents and the RUNNING ones it owns; a copy of a chunk that
another task is running skips them. Each UPDATE re-checks its condition on the rows it
writes, so of two racing claims one takes a document and the other skips it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, String, and_, cast, func, or_, select, update
from sqlalchemy.orm import Session

from contract.cost import TYPICAL_CHARS
from db.models import Batch, Document, Status, utcnow

UNFINISHED = (Status.PENDING, Status.RUNNING)


class Claimed(NamedTuple):
    id: int
    text: str
    attempts: int


def _owned_by(task_id: str | None) -> ColumnElement[bool]:
    """RUNNING documents the task owns (it claimed them, or a sweep handed them to it), or
    that no task owns (claimed before owners were recorded, or by a task called directly,
    without an id)."""
    return and_(
        Document.status == Status.RUNNING,
        or_(Document.task_id.is_(None), Document.task_id == task_id),
    )


def claim(
    session: Session,
    document_ids: Iterable[int],
    max_attempts: int,
    *,
    task_id: str | None,
    allowance: int = 0,
) -> list[Claimed]:
    """Marks the chunk's documents that ``task_id`` may run RUNNING, makes it their owner
    and counts the attempt; returns them by id.

    A task may run PENDING documents and the RUNNING ones it owns: a redelivery of its
    own message after its worker died, or its retry after a database error. A RUNNING
    document of another task is still being run by it, so a late copy of the chunk (a
    message re-sent while it waited in the queue) skips it instead of computing it twice.

    A document that already used up its attempts (its worker kept dying) is FAILED
    here instead of being run again, so a poison document cannot loop forever. Every
    delivery counts; ``allowance`` adds the task's retries after database errors (not
    the documents' fault, and bounded by EXPLAINQ_DB_RETRIES) to the limit, so a blip
    never fails a document and a poison document still ends.
    """
    ids = list(document_ids)
    if session.get_bind().dialect.name == "postgresql":
        # Lock in id order, so that overlapping claims queue instead of deadlocking.
        session.execute(
            select(Document.id).where(Document.id.in_(ids)).order_by(Document.id)
            .with_for_update()
        ).all()  # fmt: skip
    # Each UPDATE re-checks its condition on the rows it writes, so of two copies that
    # race, one takes a document and the other skips it (SQLite serialises the writes).
    runnable = and_(Document.id.in_(ids), or_(Document.status == Status.PENDING,
                                               _owned_by(task_id)))  # fmt: skip
    limit = max_attempts + allowance
    gave_up = "gave up after " + cast(Document.attempts, String) + " attempts"
    session.execute(
        update(Document)
        .where(runnable, Document.attempts >= limit)
        .values(status=Status.FAILED, error=gave_up + " (EXPLAINQ_MAX_ATTEMPTS)")
        .execution_options(synchronize_session=False)
    )
    claimed = session.execute(
        update(Document)
        .where(runnable, Document.attempts < limit)
        .values(status=Status.RUNNING, attempts=Document.attempts + 1, task_id=task_id)
        .returning(Document.id, Document.text, Document.attempts)
        .execution_options(synchronize_session=False)
    )
    return sorted(Claimed(*row) for row in claimed)


def owned_running(session: Session, document_ids: Iterable[int], task_id: str | None) -> int:
    """How many of the chunk's documents the task already holds RUNNING: it is a
    redelivery, and its worker died, perhaps because of one of them."""
    owned = select(func.count()).select_from(Document)
    where = owned.where(Document.id.in_(list(document_ids)), _owned_by(task_id))
    return session.scalar(where) or 0


def finish(session: Session, document_ids: Iterable[int]) -> None:
    session.execute(
        update(Document)
        .where(Document.id.in_(list(document_ids)))
        .values(status=Status.DONE, error=None, updated_at=utcnow())
    )


def fail(session: Session, document_id: int, error: str, task_id: str | None) -> None:
    """FAILED with the reason, if the task still owns the document: a superseded run that
    fails late must not fail a document that its new owner runs or has finished."""
    session.execute(
        update(Document)
        .where(Document.id == document_id, _owned_by(task_id))
        .values(status=Status.FAILED, error=error[:10_000], updated_at=utcnow())
    )


def unfinished(
    session: Session, batch_id: str | None, older_than: float
) -> list[tuple[str, int, int]]:
    """(batch id, document id, text length) of documents still PENDING or RUNNING whose
    last change is more than ``older_than`` seconds ago, locked until the transaction
    ends (PostgreSQL; rows another transaction holds, a claim say, are left out)."""
    query = (
        select(Document.batch_id, Document.id, func.length(Document.text))
        .where(_stale(older_than))
        .order_by(Document.id)
        .with_for_update(skip_locked=True)
    )
    if batch_id:
        query = query.where(Document.batch_id == batch_id)
    return [tuple(row) for row in session.execute(query)]


def _stale(older_than: float) -> ColumnElement[bool]:
    cutoff = utcnow() - timedelta(seconds=older_than)
    return and_(Document.status.in_(UNFINISHED), Document.updated_at <= cutoff)


def length_chunks(
    lengths: Iterable[tuple[int, int]], size: int, cost: Callable[[int], float] | None = None
) -> list[list[int]]:
    """Document ids (with their text lengths) in chunks by length: ``iter_chunks``."""
    return list(iter_chunks(sorted(lengths, key=lambda pair: (pair[1], pair[0])), size, cost))


def iter_chunks(
    ordered: Iterable[tuple[int, int]], size: int, cost: Callable[[int], float] | None = None
) -> Iterator[list[int]]:
    """Document ids, given shortest first with their text lengths, in chunks of at most
    ``size`` of similar length, so a worker pads little. With ``cost`` (characters ->
    estimated token-passes, ``contract.cost``), a chunk also closes before it would cost
    more than ``size`` documents of 128 tokens: a long document with an expensive method
    goes alone, and does not hold short ones back for minutes."""
    budget = math.inf if cost is None else size * cost(TYPICAL_CHARS)
    chunk: list[int] = []
    spent = 0.0
    for doc_id, chars in ordered:
        price = 0.0 if cost is None else cost(chars)
        if chunk and (len(chunk) == size or spent + price > budget):
            yield chunk
            chunk, spent = [], 0.0
        chunk.append(doc_id)
        spent += price
    if chunk:
        yield chunk


def touch_running(session: Session, document_ids: Iterable[int]) -> None:
    """Restarts the staleness clock of documents a worker is still explaining (its
    heartbeat), so that the sweeper does not re-send work in progress."""
    session.execute(
        update(Document)
        .where(Document.id.in_(list(document_ids)), Document.status == Status.RUNNING)
        .values(updated_at=utcnow())
    )


@dataclass(frozen=True)
class Resend:
    """A chunk to send again, under the id of the task that now owns its documents."""

    batch_id: str
    task_id: str
    document_ids: list[int]


Pricing = Callable[[list[str], dict[str, Any]], Callable[[int], float]]


def hand_over(
    session: Session,
    batch_id: str | None,
    older_than: float,
    chunk_size: int,
    pricing: Pricing | None = None,
) -> list[Resend]:
    """Hands the documents left PENDING or RUNNING longer than ``older_than`` seconds to
    new tasks, in chunks of similar length; the caller sends each under its task id.
    ``pricing`` (a batch's methods and parameters -> its documents' cost by characters,
    ``contract.cost.batch_cost``): chunks are cut by cost as at submit, so a re-sent long
    document with an expensive method does not hold short ones back either.

    Each chunk's new task becomes its documents' owner, so a late copy of the task that
    had them (a redelivery of a message thought lost) skips them. Their staleness clock
    restarts, so a long queue is not flooded with copies on every sweep.
    """
    stale = _stale(older_than)
    by_batch: dict[str, list[tuple[int, int]]] = {}
    for batch, doc_id, length in unfinished(session, batch_id, older_than):
        by_batch.setdefault(batch, []).append((doc_id, length))
    costs = {}
    if pricing is not None and by_batch:
        found = select(Batch.id, Batch.methods, Batch.params).where(Batch.id.in_(list(by_batch)))
        costs = {b: pricing(list(methods), dict(params or {}))
                 for b, methods, params in session.execute(found)}  # fmt: skip
    resends = []
    for batch, lengths in by_batch.items():
        for chunk in length_chunks(lengths, chunk_size, costs.get(batch)):
            task_id = str(uuid.uuid4())
            # Still stale (on SQLite, which cannot lock the query's rows): a document
            # claimed since then stays with its runner and out of the chunk.
            taken = set(session.scalars(
                update(Document)
                .where(Document.id.in_(chunk), stale)
                .values(task_id=task_id, updated_at=utcnow())
                .returning(Document.id)
                .execution_options(synchronize_session=False)
            ))  # fmt: skip
            if kept := [doc_id for doc_id in chunk if doc_id in taken]:
                resends.append(Resend(batch, task_id, kept))
    return resends
