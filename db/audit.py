"""Tamper evidence in the database: sealing a finished batch, checking every row against
its digest and every sealed batch against its seal, the rows of an audit bundle, and the
models over time.

The definitions (digest, Merkle root, seal line) are ``db.digest``'s; the digests are
computed as rows are written (``db.writes``). A seal is computed from the rows' stored
digests; ``verify_integrity`` recomputes every digest from the row's content.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from db.batches import status_counts
from db.digest import ALGORITHM, Merkle, parse_seal_line, seal_line
from db.models import (
    ALL_BATCHES,
    Document,
    Explanation,
    Model,
    QualityStat,
    Seal,
    SealRow,
    Status,
    utcnow,
)
from db.queries import iso, require_batch, stream
from db.records import digest_content, explanation_digest

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


def _seal_order(session: Session) -> list[Any]:
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
        .order_by(*_seal_order(session))
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


@dataclass(frozen=True)
class Problem:
    kind: str  # changed, no-digest, added, removed, seal, seal-line
    message: str
    batch_id: str | None = None
    row_id: int | None = None
    document: str | None = None
    method: str | None = None


@dataclass
class IntegrityReport:
    rows: int = 0
    sealed_batches: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "rows": self.rows,
            "sealed_batches": self.sealed_batches,
            "problems": [asdict(problem) for problem in self.problems],
        }


def verify_integrity(
    session: Session, *, batch: str | None = None, line: str | None = None
) -> IntegrityReport:
    """Recomputes every row's digest (of ``batch``, or all) from its content and
    compares it with the stored one and, in a sealed batch, with the sealed one; names
    the rows added and removed since a seal; recomputes each seal's root from its rows.
    ``line``: a seal line kept outside the database, checked too (its batch is the scope
    when ``batch`` is not given)."""
    expected = parse_seal_line(line) if line else None
    if expected and batch and expected["batch"] != batch:
        raise ValueError(f"the seal line is for batch {expected['batch']}, not {batch}")
    batch = batch or (expected["batch"] if expected else None)
    require_batch(session, batch)
    report = IntegrityReport()
    now: dict[str | None, Merkle] = {}
    in_scope: list[ColumnElement[bool]] = [] if batch is None else [Explanation.batch_id == batch]

    query = (
        select(
            *Explanation.__table__.columns,
            Document.external_id,
            Document.text,
            Model.sha256.label("model_sha256"),
            Seal.id.label("seal_id"),
            SealRow.digest.label("sealed_digest"),
        )
        .join(Document, Document.id == Explanation.document_id)
        .join(Model, Model.id == Explanation.model_id)
        .outerjoin(Seal, Seal.batch_id == Explanation.batch_id)
        .outerjoin(SealRow, and_(SealRow.seal_id == Seal.id, _same_row()))
        .where(*in_scope)
        .order_by(Explanation.batch_id, *_seal_order(session))
    )
    for row in stream(session, query).mappings():
        report.rows += 1
        stored = row["digest"]
        content = explanation_digest(
            row, external_id=row["external_id"], text=row["text"],
            model_sha256=row["model_sha256"],
        )  # fmt: skip
        now.setdefault(row["batch_id"], Merkle()).add(content)

        def problem(kind: str, what: str, row: Mapping[str, Any] = row) -> None:
            name = (
                f"row {row['id']} (document {row['external_id']}, method {row['method']}, "
                f"batch {row['batch_id']})"
            )
            report.problems.append(Problem(kind, f"{name}: {what}", row["batch_id"], row["id"],
                                           row["external_id"], row["method"]))  # fmt: skip

        if stored is None:
            problem("no-digest", "no digest (written around db.writes, or its digest erased)")
        elif content != stored:
            problem("changed", f"content changed since it was written (its digest "
                               f"{stored[:12]}…, its content now {content[:12]}…)")  # fmt: skip
        if row["seal_id"] is not None:
            sealed = row["sealed_digest"]
            if sealed is None:
                problem("added", "added since the batch was sealed")
            elif sealed != content and content == stored:  # its digest was rewritten too
                problem("changed", f"changed since the seal (sealed digest {sealed[:12]}…, "
                                   f"its content now {content[:12]}…)")  # fmt: skip

    seals = session.scalars(
        select(Seal).where(*([] if batch is None else [Seal.batch_id == batch])).order_by(Seal.id)
    ).all()
    for seal in seals:
        report.sealed_batches.append(seal.batch_id)
        _check_seal(session, seal, now.get(seal.batch_id, Merkle()), report)
    if expected:
        _check_line(expected, seals[0] if seals else None, now.get(expected["batch"]), report)
    return report


def _same_row() -> ColumnElement[bool]:
    """A sealed row and a row now are the same row: the same id, of the same document
    and method (SQLite gives a deleted last row's id to the next row inserted)."""
    return and_(
        SealRow.explanation_id == Explanation.id,
        SealRow.document_id == Explanation.document_id,
        SealRow.method == Explanation.method,
    )


def _check_seal(session: Session, seal: Seal, rows_now: Merkle, report: IntegrityReport) -> None:
    batch = seal.batch_id
    removed = (
        select(SealRow, Document.external_id)
        .outerjoin(Explanation, and_(_same_row(), Explanation.batch_id == batch))
        .outerjoin(Document, Document.id == SealRow.document_id)
        .where(SealRow.seal_id == seal.id, Explanation.id.is_(None))
        .order_by(SealRow.position)
    )
    for gone, external_id in session.execute(removed):
        document = external_id or f"#{gone.document_id}"
        report.problems.append(Problem(
            "removed",
            f"row {gone.explanation_id} (document {document}, method {gone.method}, batch "
            f"{batch}): removed since the batch was sealed (sealed digest {gone.digest[:12]}…)",
            batch, gone.explanation_id, document, gone.method,
        ))  # fmt: skip
    sealed = Merkle()
    rows = select(SealRow.digest).where(SealRow.seal_id == seal.id).order_by(SealRow.position)
    for (digest,) in stream(session, rows):
        sealed.add(digest)
    if (sealed.root(), sealed.count) != (seal.root, seal.count):
        report.problems.append(Problem("seal", (
            f"batch {batch}: the seal says root {seal.root} over {seal.count} rows, but its "
            f"recorded rows give {sealed.root()} over {sealed.count}: the seal was altered"
        ), batch))  # fmt: skip
    if (rows_now.root(), rows_now.count) != (seal.root, seal.count):
        report.problems.append(Problem("seal", (
            f"batch {batch}: sealed with root {seal.root} over {seal.count} rows; its rows "
            f"now give {rows_now.root()} over {rows_now.count}"
        ), batch))  # fmt: skip


def _check_line(
    expected: dict[str, Any], seal: Seal | None, rows_now: Merkle | None, report: IntegrityReport
) -> None:
    batch = expected["batch"]
    said = f"the seal line says root {expected['root']} over {expected['rows']} rows"
    if seal is None:
        report.problems.append(Problem("seal-line", f"batch {batch}: {said}, but the "
                                       "database has no seal for it", batch))  # fmt: skip
    elif (seal.root, seal.count) != (expected["root"], expected["rows"]):
        report.problems.append(Problem("seal-line", (
            f"batch {batch}: {said}; the database's seal says {seal.root} over {seal.count}"
        ), batch))  # fmt: skip
    rows_now = rows_now or Merkle()
    if (rows_now.root(), rows_now.count) != (expected["root"], expected["rows"]):
        report.problems.append(Problem("seal-line", (
            f"batch {batch}: {said}; its rows now give {rows_now.root()} over {rows_now.count}"
        ), batch))  # fmt: skip


def audit_rows(session: Session, batch_id: str) -> Iterator[dict[str, Any]]:
    """The audit bundle's records (rows.jsonl), in seal order: each row's content as
    digested (``db.digest.ROW_FIELDS``), its row id and its stored digest."""
    query = (
        select(
            *Explanation.__table__.columns,
            Document.external_id,
            Document.text,
            Model.sha256.label("model_sha256"),
        )
        .join(Document, Document.id == Explanation.document_id)
        .join(Model, Model.id == Explanation.model_id)
        .where(Explanation.batch_id == batch_id)
        .order_by(*_seal_order(session))
    )
    for row in stream(session, query).mappings():
        content = digest_content(
            row, external_id=row["external_id"], text=row["text"],
            model_sha256=row["model_sha256"],
        )  # fmt: skip
        yield {**content, "row_id": row["id"], "digest": row["digest"]}


def _first_or_last(session: Session, model_id: int, last: bool) -> Any:
    """Along ix_explanations_model_created: one index probe, whatever the rows."""
    order = Explanation.created_at.desc() if last else Explanation.created_at
    return session.scalar(
        select(Explanation.created_at).where(Explanation.model_id == model_id).order_by(order)
        .limit(1)
    )  # fmt: skip


def model_usage(session: Session) -> list[dict[str, Any]]:
    """Every model (each version of a name's weights its own row) with its first and
    last use and how many explanations it made. First and last: two probes of the
    (model, created_at) index; the count: the aggregates the writes keep (quality_stats
    over all batches counts every new row), so nothing scans the explanations."""
    made = (
        select(QualityStat.model_id, func.sum(QualityStat.rows).label("rows"))
        .where(QualityStat.scope == ALL_BATCHES)
        .group_by(QualityStat.model_id)
    )
    counts = {row.model_id: row.rows for row in session.execute(made)}
    listing = []
    for model in session.scalars(select(Model).order_by(Model.name, Model.created_at, Model.id)):
        first = _first_or_last(session, model.id, last=False)
        last = _first_or_last(session, model.id, last=True)
        listing.append({
            "id": model.id,
            "name": model.name,
            "sha256": model.sha256,
            "labels": list(model.labels or []),
            "path": model.path,
            "registered": iso(model.created_at),
            "first_used": iso(first) if first else None,
            "last_used": iso(last) if last else None,
            "explanations": int(counts.get(model.id) or 0),
        })  # fmt: skip
    return listing


def last_weights(session: Session, name: str) -> str | None:
    """The weights hash last used under model ``name`` (by its last explanation, or
    its registration when it has none yet); None for a name never seen."""
    latest: tuple[datetime, str] | None = None
    for model in session.scalars(select(Model).where(Model.name == name)):
        used = _aware(_first_or_last(session, model.id, last=True) or model.created_at)
        if latest is None or used > latest[0]:
            latest = (used, model.sha256)
    return latest[1] if latest else None


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
