"""Sealing a finished batch: the Merkle root of its rows' stored digests, kept in the
database and printed as one line for the auditor to keep outside it (``db.digest``
defines the root and the line)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from db.batches import status_counts
from db.digest import ALGORITHM, Merkle, seal_line
from db.models import (
    Explanation,
    Seal,
    SealRow,
    Status,
    utcnow,
)
from db.queries import iso, require_batch, stream

INSERT_ROWS = 1000


class SealRefused(ValueError):
    """The batch cannot be sealed (unfinished, rows without a digest), or it was sealed
    and its rows no longer give that seal."""


@dataclass(frozen=True)
class SealFacts:
    batch_id: str
    rows: int
    root: str
    at: str
    algorithm: str = ALGORITHM

    @property
    def line(self) -> str:
        return seal_line(self.batch_id, self.rows, self.root, self.at)

    @classmethod
    def of(cls, seal: Seal) -> SealFacts:
        return cls(seal.batch_id, seal.count, seal.root, iso(seal.created_at), seal.algorithm)


def _bytewise(session: Session, column: Any) -> Any:
    """``column`` ordered by code point, as db.digest orders strings (PostgreSQL's own
    collation may not; SQLite compares bytes of UTF-8, which is the same order)."""
    return column.collate("C") if session.get_bind().dialect.name == "postgresql" else column


def seal_order(session: Session) -> list[Any]:
    """db.digest.seal_order in SQL: document, method, params_key, digest."""
    return [
        Explanation.document_id,
        _bytewise(session, Explanation.method),
        _bytewise(session, Explanation.params_key),
        _bytewise(session, Explanation.digest),
    ]


def _leaves(session: Session, batch_id: str) -> Select[Any]:
    return (
        select(Explanation.id, Explanation.document_id, Explanation.method, Explanation.digest)
        .where(Explanation.batch_id == batch_id)
        .order_by(*seal_order(session))
    )


def current_root(session: Session, batch_id: str) -> tuple[str, int]:
    """The Merkle root and count of the batch's rows as their stored digests give them."""
    tree = Merkle()
    for row in stream(session, _leaves(session, batch_id)):
        tree.add(row.digest or "")
    return tree.root(), tree.count


def find_seal(session: Session, batch_id: str) -> SealFacts | None:
    seal = session.scalars(select(Seal).where(Seal.batch_id == batch_id)).one_or_none()
    return None if seal is None else SealFacts.of(seal)


def seal_batch(session: Session, batch_id: str) -> SealFacts:
    """Seals a finished batch: the Merkle root of its rows' digests in seal order, their
    count and the time, and the rows themselves (``seal_rows``). Sealing again gives the
    same seal, or is refused when the rows now give another root. LookupError for an
    unknown batch, SealRefused for an unfinished one."""
    require_batch(session, batch_id)
    counts = status_counts(session, batch_id)
    unfinished = counts[Status.PENDING] + counts[Status.RUNNING]
    if unfinished:
        raise SealRefused(
            f"batch {batch_id}: {unfinished} document{'' if unfinished == 1 else 's'} "
            "unfinished; a batch is sealed once every document is done or failed"
        )
    if (existing := find_seal(session, batch_id)) is not None:
        return _same_seal(session, existing)
    undigested = session.scalars(
        select(Explanation.id)
        .where(Explanation.batch_id == batch_id, Explanation.digest.is_(None))
        .order_by(Explanation.id)
        .limit(5)
    ).all()
    if undigested:
        shown = ", ".join(map(str, undigested))
        raise SealRefused(
            f"batch {batch_id}: rows without a digest (written around db.writes): {shown}; "
            "not sealed"
        )
    root, count = current_root(session, batch_id)
    from db.writes import dialect_insert  # one place knows the dialects' upserts

    statement = dialect_insert(session)(Seal).values(
        batch_id=batch_id, root=root, count=count, algorithm=ALGORITHM, created_at=utcnow()
    )
    seal_id = session.scalar(
        statement.on_conflict_do_nothing(index_elements=["batch_id"]).returning(Seal.id)
    )
    if seal_id is None:  # sealed meanwhile by another process (producer wait, say)
        return _same_seal(session, find_seal(session, batch_id))  # type: ignore[arg-type]
    _store_rows(session, seal_id, batch_id, root)
    return find_seal(session, batch_id)  # type: ignore[return-value]


def _same_seal(session: Session, seal: SealFacts) -> SealFacts:
    root, count = current_root(session, seal.batch_id)
    if (root, count) != (seal.root, seal.rows):
        raise SealRefused(
            f"batch {seal.batch_id}: already sealed with root {seal.root} ({seal.rows} rows); "
            f"rows now give {root} ({count} rows)"
        )
    return seal


def _store_rows(session: Session, seal_id: int, batch_id: str, root: str) -> None:
    """The sealed rows in seal order, read a second time: a batch whose rows changed
    between the two reads is not sealed (the transaction fails)."""
    connection = session.connection()
    tree = Merkle()
    pending: list[dict[str, Any]] = []
    for row in stream(session, _leaves(session, batch_id)):
        pending.append({"seal_id": seal_id, "position": tree.count, "explanation_id": row.id,
                        "document_id": row.document_id, "method": row.method,
                        "digest": row.digest})  # fmt: skip
        tree.add(row.digest)
        if len(pending) >= INSERT_ROWS:
            connection.execute(SealRow.__table__.insert(), pending)
            pending = []
    if pending:
        connection.execute(SealRow.__table__.insert(), pending)
    if tree.root() != root:
        raise SealRefused(f"batch {batch_id}: rows changed while it was being sealed")
