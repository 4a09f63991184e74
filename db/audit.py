"""Checking the record: every row against its digest, every sealed batch against its
seal (and a seal line kept outside the database), and the rows of an audit bundle.

The definitions (digest, Merkle root, seal line) are ``db.digest``'s; the digests are
computed as rows are written (``db.writes``), the seals by ``db.seals``.
``verify_integrity`` recomputes every digest from the row's content.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from db.digest import Merkle, parse_seal_line
from db.models import (
    Document,
    Explanation,
    Model,
    RunSettings,
    Seal,
    SealRow,
    explanation_columns,
)
from db.queries import in_batch, require_batch, stream
from db.records import digest_content, explanation_digest
from db.seals import seal_order


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
    in_scope: list[ColumnElement[bool]] = [] if batch is None else [in_batch(batch)]

    query = (
        select(
            *explanation_columns(),
            Document.external_id,
            Document.text,
            Model.sha256.label("model_sha256"),
            Seal.id.label("seal_id"),
            SealRow.digest.label("sealed_digest"),
        )
        .join(RunSettings, RunSettings.id == Explanation.settings_id)
        .join(Document, Document.id == Explanation.document_id)
        .join(Model, Model.id == Explanation.model_id)
        .outerjoin(Seal, Seal.batch_id == Explanation.batch_id)
        .outerjoin(SealRow, and_(SealRow.seal_id == Seal.id, _same_row()))
        .where(*in_scope)
        .order_by(Explanation.batch_id, *seal_order(session))
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
            *explanation_columns(),
            Document.external_id,
            Document.text,
            Model.sha256.label("model_sha256"),
        )
        .join(RunSettings, RunSettings.id == Explanation.settings_id)
        .join(Document, Document.id == Explanation.document_id)
        .join(Model, Model.id == Explanation.model_id)
        .where(in_batch(batch_id))
        .order_by(*seal_order(session))
    )
    for row in stream(session, query).mappings():
        content = digest_content(
            row, external_id=row["external_id"], text=row["text"],
            model_sha256=row["model_sha256"],
        )  # fmt: skip
        yield {**content, "row_id": row["id"], "digest": row["digest"]}
