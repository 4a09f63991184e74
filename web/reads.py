"""One read per page: each page and its /api/v1 twin call the same function here, which
asks the data layer (``db.queries``, ``db.listing``, ``db.export``, ``db.quality``,
``db.similar``, ``db.model_usage``) and returns the page's typed model. Nothing here
renders; ``web.errors.NotFound`` means 404 and ``BadRequest`` 400 (``web.app``), and the
data layer's own not-found errors are turned into them here, one call at a time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import batches as db_batches
from db import (
    export,
    listing,
    model_usage,
    quality,
    queries,
    similar,
    vector_centroids,
    vector_index,
)
from db.models import Batch, Document, Model, Rejection, Representation, Status
from web import schemas
from web.errors import BadRequest, NotFound, missing_is_404
from web.spans import scale_of, subword_pieces, word_pieces

SHOWN = 200  # rejections and failures listed on a batch's page (the counts say how many)
NEIGHBOURS = 10
TOP = 10  # top tokens per label and method on the corpus page


def batch_list(session: Session, limit: int = 50) -> schemas.BatchList:
    rows = queries.batch_summaries(session, limit)
    return schemas.BatchList(batches=[schemas.BatchSummary(**row) for row in rows])


def batch_detail(session: Session, batch_id: str) -> schemas.BatchDetail:
    with missing_is_404():
        queries.require_batch(session, batch_id)
    batch = session.get(Batch, batch_id)
    assert batch is not None
    counts = {s.value.lower(): n for s, n in db_batches.status_counts(session, batch_id).items()}
    summary = schemas.BatchSummary(
        batch_id=batch.id, created_at=queries.iso(batch.created_at), source=batch.source,
        model=batch.model, methods=list(batch.methods), submitted=batch.submitted,
        rejected=batch.rejected, **counts,
    )  # fmt: skip
    rejections = session.scalars(
        select(Rejection).where(Rejection.batch_id == batch_id)
        .order_by(Rejection.line, Rejection.id).limit(SHOWN)
    ).all()  # fmt: skip
    failures = session.scalars(
        select(Document).where(Document.batch_id == batch_id, Document.status == Status.FAILED)
        .order_by(Document.id).limit(SHOWN)
    ).all()  # fmt: skip
    return schemas.BatchDetail(
        batch=summary,
        params=dict(batch.params or {}),
        rejections=[schemas.RejectionOut(line=r.line, field=r.field, reason=r.reason)
                    for r in rejections],
        rejections_shown_of=batch.rejected,
        failures=[schemas.FailureOut(id=d.id, external_id=d.external_id, error=d.error)
                  for d in failures],
        failures_shown_of=counts["failed"],
        failure_reasons=db_batches.failure_reasons(session, batch_id, limit=10),
    )  # fmt: skip


def document_page(session: Session, **filters: Any) -> schemas.DocumentPage:
    """``filters``: list_page's keywords (batch, label, confidence range, status, method,
    where, errors, text, order, limit, after)."""
    with missing_is_404():
        queries.require_batch(session, filters.get("batch"))
        queries.require_label(session, filters.get("label"))
    try:
        rows, cursor = listing.list_page(session, **filters)
    except listing.BadCursor as error:
        raise BadRequest(str(error)) from error
    return schemas.DocumentPage(
        rows=[schemas.DocumentRowOut(**row.as_json()) for row in rows],
        next=cursor,
        filters={k: v for k, v in filters.items() if v not in (None, {}, "")},
    )


def document_detail(session: Session, document_id: int) -> schemas.DocumentDetail:
    document = session.get(Document, document_id)
    if document is None:
        raise NotFound(f"no document {document_id}")
    records = export.document_records(session, document)
    agreement = quality.document_agreement(session, document.id)
    explained = [r for r in records if r["tokens"] is not None]
    first = explained[0] if explained else records[0]
    info = None
    if first["model"] is not None:
        info = session.scalar(
            select(Model.info).where(Model.name == first["model"],
                                     Model.sha256 == first["model_sha256"])
        )  # fmt: skip
    neighbours, note = _neighbours(session, document, first["model_sha256"])
    return schemas.DocumentDetail(
        id=document.id, external_id=document.external_id, batch_id=document.batch_id,
        status=document.status.value.lower(), error=document.error, text=document.text,
        metadata=dict(document.meta or {}), model=first["model"],
        model_path=first["model_path"], model_sha256=first["model_sha256"], model_info=info,
        explanations=[_explanation(document.text, r, agreement) for r in explained],
        neighbours=neighbours, neighbours_note=note,
    )  # fmt: skip


def _explanation(
    text: str, record: dict[str, Any], agreement: dict[tuple[str, str], float | None]
) -> schemas.ExplanationOut:
    tokens, scores = record["tokens"], record["attributions"]
    offsets, word_ids = record["offsets"], record["word_ids"]
    words = word_pieces(text, tokens, scores, offsets, word_ids)
    subwords = subword_pieces(text, tokens, scores, offsets, word_ids)
    method = record["method"]
    mine = {(b if a == method else a): rho for (a, b), rho in agreement.items() if method in (a, b)}
    attention = (record["extra"] or {}).get("cls_attention")
    fields = ("method", "params", "label", "confidence", "probabilities", "tokens",
              "attributions", "offsets", "word_ids", "quality", "convergence_delta",
              "relative_gap", "steps", "windows", "worker", "device", "timings", "execution",
              "created_at")  # fmt: skip
    return schemas.ExplanationOut(
        **{key: record[key] for key in fields},
        scale=scale_of(words),
        words=words,
        subwords=subwords,
        subword_scale=scale_of(subwords),  # a token's own score: its view's own scale
        attention=attention if isinstance(attention, list) else None,
        agreement=mine,
    )


def _neighbours(
    session: Session, document: Document, sha256: str | None
) -> tuple[list[schemas.Neighbour], str | None]:
    """The ten nearest documents; a note instead where the search would scan a large
    model's vectors (no index yet: `results index` builds it) or there is no vector.
    The guard asks about the model of the document's own vector, the one searched (the
    explaining model's where the document has several)."""
    owners = session.execute(
        select(Representation.model_id, Model.name)
        .join(Model, Model.id == Representation.model_id)
        .where(Representation.document_id == document.id)
        .order_by((Model.sha256 == sha256).desc(), Model.id)
    ).all()
    if not owners:
        return [], "not explained yet"
    model_id, model = owners[0]
    if vector_centroids.load(session, model_id) is None:
        many = vector_index.count_at_most(
            session, vector_index.model_vectors(model_id), vector_index.EXACT_BELOW + 1
        )
        if many > vector_index.EXACT_BELOW:
            return [], "the model's vectors have no index yet: run `results index`"
    try:
        found = similar.nearest(session, document, limit=NEIGHBOURS, model=model, maintain=False)
    except (LookupError, ValueError) as error:
        return [], str(error)
    return [schemas.Neighbour(**n) for n in found["neighbours"]], None


def corpus(session: Session, batch: str | None = None, model: str | None = None) -> schemas.Corpus:
    """Per model name: top tokens per label and method, quality per method and the
    agreement between methods, all from the aggregates (no scan of the corpus)."""
    with missing_is_404():
        queries.require_batch(session, batch)
    names: dict[str, list[str]] = {}
    for name, labels in session.execute(select(Model.name, Model.labels).order_by(Model.id)):
        names.setdefault(name, [str(label) for label in labels or []])
    if model is not None and model not in names:
        raise NotFound(f"no model {model!r}; known: {', '.join(names) or 'none yet'}")
    out = []
    for name, labels in names.items():
        if model is not None and name != model:
            continue
        rows = quality.method_quality(session, batch=batch, model=name)
        if not rows:
            continue
        methods = [row["method"] for row in rows]
        tops = [
            schemas.TopTokens(
                label=label, method=method,
                tokens=queries.top_tokens(session, label=label, batch=batch, method=method,
                                          limit=TOP, model=name, min_count=1),
            )
            for label in labels
            for method in methods
        ]  # fmt: skip
        out.append(
            schemas.ModelCorpus(
                model=name, labels=labels, methods=methods, top_tokens=tops,
                quality=[schemas.QualityOut(**row) for row in rows],
                agreement=[schemas.AgreementOut(**row)
                           for row in quality.pair_agreement(session, batch=batch, model=name)],
            )
        )  # fmt: skip
    return schemas.Corpus(batch=batch, models=out)


def model_list(session: Session) -> schemas.ModelList:
    return schemas.ModelList(
        models=[schemas.ModelOut(**m) for m in model_usage.model_usage(session)]
    )
