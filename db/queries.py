"""The read side: what the results CLI and the demo ask of the database.

Only SQLAlchemy expressions build SQL here; sort orders and filters come from
whitelists, so nothing a user types reaches the database as SQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, aliased

from db.models import Batch, Document, Explanation, Model, Status

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})
MAX_LIMIT = 10_000
ORDERS = ("id", "confidence", "-confidence", "label", "status")


@dataclass(frozen=True)
class DocumentRow:
    id: int
    external_id: str
    batch_id: str
    status: str
    label: str | None
    confidence: float | None
    top_tokens: list[str]
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return self.__dict__


def merge_wordpieces(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
    """Words with their summed scores: a ``##`` piece joins the word before it."""
    words: list[tuple[str, float]] = []
    for token, score in zip(tokens, scores, strict=True):
        if token in SPECIAL_TOKENS:
            continue
        if token.startswith("##") and words:
            word, total = words[-1]
            words[-1] = (word + token[2:], total + score)
        else:
            words.append((token, score))
    return words


def top_words(tokens: Sequence[str], scores: Sequence[float], n: int = 3) -> list[str]:
    ranked = sorted(merge_wordpieces(tokens, scores), key=lambda pair: pair[1], reverse=True)
    return [word for word, score in ranked[:n] if score > 0]


def parse_status(status: str) -> Status:
    try:
        return Status(status.upper())
    except ValueError:
        known = ", ".join(s.value.lower() for s in Status)
        raise ValueError(f"unknown status {status!r}; known: {known}") from None


def list_documents(
    session: Session,
    *,
    batch: str | None = None,
    label: str | None = None,
    min_confidence: float | None = None,
    status: str | None = None,
    method: str = "lig",
    limit: int = 50,
    offset: int = 0,
    order: str = "id",
) -> list[DocumentRow]:
    """Documents with their explanation by ``method`` (none while pending or failed)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")
    explanation = aliased(Explanation)
    query = (
        select(Document, explanation)
        .outerjoin(
            explanation,
            (explanation.document_id == Document.id) & (explanation.method == method),
        )
        .order_by(*_order_by(order, explanation))
        .limit(max(0, min(limit, MAX_LIMIT)))
        .offset(max(0, offset))
    )
    if batch:
        query = query.where(Document.batch_id == batch)
    if label:
        query = query.where(explanation.label == label)
    if min_confidence is not None:
        query = query.where(explanation.confidence >= min_confidence)
    if status:
        query = query.where(Document.status == parse_status(status))
    return [
        DocumentRow(
            id=doc.id,
            external_id=doc.external_id,
            batch_id=doc.batch_id,
            status=doc.status.value.lower(),
            label=exp.label if exp else None,
            confidence=exp.confidence if exp else None,
            top_tokens=top_words(exp.tokens, exp.attributions) if exp else [],
            error=doc.error,
        )
        for doc, exp in session.execute(query)
    ]


def _order_by(order: str, explanation: Any) -> tuple[Any, ...]:
    return {
        "id": (Document.id,),
        "confidence": (explanation.confidence.asc().nulls_last(), Document.id),
        "-confidence": (explanation.confidence.desc().nulls_last(), Document.id),
        "label": (explanation.label.asc().nulls_last(), Document.id),
        "status": (Document.status, Document.id),
    }[order]


def find_document(session: Session, ref: str | int, batch: str | None = None) -> Document:
    """By internal id, or by the user's id (which must then be unambiguous)."""
    query = select(Document).where(Document.external_id == str(ref))
    if str(ref).isdigit():
        query = select(Document).where(
            or_(Document.id == int(ref), Document.external_id == str(ref))
        )
    if batch:
        query = query.where(Document.batch_id == batch)
    found = session.scalars(query).all()
    if not found:
        raise LookupError(f"no document {ref!r}" + (f" in batch {batch}" if batch else ""))
    if len(found) > 1:
        by_id = [d for d in found if d.id == int(ref)] if str(ref).isdigit() else []
        if len(by_id) == 1 and not batch:
            return by_id[0]
        batches = ", ".join(sorted({d.batch_id for d in found}))
        raise LookupError(f"document id {ref!r} is in several batches ({batches}); pass --batch")
    return found[0]


def top_tokens(
    session: Session,
    *,
    label: str,
    batch: str | None = None,
    method: str = "lig",
    min_count: int = 2,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Words that push documents toward ``label``, over a batch or the whole database:
    mean attribution per occurrence, in one streaming pass over the explanations."""
    query = (
        select(Explanation.document_id, Explanation.tokens, Explanation.attributions)
        .where(Explanation.label == label, Explanation.method == method)
        .execution_options(yield_per=500)
    )
    if batch:
        query = query.join(Document, Document.id == Explanation.document_id).where(
            Document.batch_id == batch
        )
    total: dict[str, float] = defaultdict(float)
    occurrences: dict[str, int] = defaultdict(int)
    documents: dict[str, int] = defaultdict(int)
    for _, tokens, scores in session.execute(query):
        seen = set()
        for word, score in merge_wordpieces(tokens, scores):
            word = word.lower()
            total[word] += score
            occurrences[word] += 1
            seen.add(word)
        for word in seen:
            documents[word] += 1
    rows = [
        {
            "token": word,
            "mean_attribution": total[word] / occurrences[word],
            "total_attribution": total[word],
            "occurrences": occurrences[word],
            "documents": documents[word],
        }
        for word in total
        if documents[word] >= min_count
    ]
    rows.sort(key=lambda row: (-row["mean_attribution"], row["token"]))
    return rows[: max(0, min(limit, MAX_LIMIT))]


def export_rows(
    session: Session, *, batch: str | None = None, method: str | None = None
) -> Iterator[dict[str, Any]]:
    """One record per explanation, then one per FAILED document (which has none)."""
    explained = (
        select(Explanation, Document, Model)
        .join(Document, Document.id == Explanation.document_id)
        .join(Model, Model.id == Explanation.model_id)
        .order_by(Explanation.id)
        .execution_options(yield_per=500)
    )
    failed: Select = (
        select(Document)
        .where(Document.status == Status.FAILED)
        .order_by(Document.id)
        .execution_options(yield_per=500)
    )
    if batch:
        explained = explained.where(Document.batch_id == batch)
        failed = failed.where(Document.batch_id == batch)
    if method:
        explained = explained.where(Explanation.method == method)
    for exp, doc, model in session.execute(explained):
        yield _export_record(doc, exp, model)
    for doc in session.scalars(failed):
        yield _export_record(doc, None, None)


def _export_record(doc: Document, exp: Explanation | None, model: Model | None) -> dict[str, Any]:
    return {
        "batch_id": doc.batch_id,
        "document_id": doc.external_id,
        "text": doc.text,
        "metadata": doc.meta,
        "status": "done" if exp else doc.status.value.lower(),
        "error": doc.error,
        "model": model.name if model else None,
        "model_path": model.path if model else None,
        "model_sha256": model.sha256 if model else None,
        "method": exp.method if exp else None,
        "params": exp.params if exp else None,
        "label": exp.label if exp else None,
        "confidence": exp.confidence if exp else None,
        "probabilities": exp.probabilities if exp else None,
        "tokens": exp.tokens if exp else None,
        "attributions": exp.attributions if exp else None,
        "convergence_delta": exp.convergence_delta if exp else None,
        "relative_gap": exp.relative_gap if exp else None,
        "steps": exp.steps if exp else None,
        "truncated": exp.truncated if exp else None,
        "worker": exp.worker if exp else None,
        "device": exp.device if exp else None,
        "timings": exp.timings if exp else None,
        "created_at": (exp.created_at if exp else doc.updated_at).isoformat(),
    }


def batch_summaries(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    batches = session.scalars(
        select(Batch).order_by(Batch.created_at.desc()).limit(min(limit, MAX_LIMIT))
    ).all()
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    if batches:
        rows = session.execute(
            select(Document.batch_id, Document.status, func.count())
            .where(Document.batch_id.in_([b.id for b in batches]))
            .group_by(Document.batch_id, Document.status)
        )
        for batch_id, status, count in rows:
            counts[batch_id][Status(status).value.lower()] = count
    return [
        {
            "batch_id": b.id,
            "created_at": b.created_at.isoformat(),
            "source": b.source,
            "model": b.model,
            "methods": b.methods,
            "submitted": b.submitted,
            "rejected": b.rejected,
            **{s.value.lower(): counts[b.id].get(s.value.lower(), 0) for s in Status},
        }
        for b in batches
    ]
