"""/api/v1: every page's data as JSON, from the same read (``web.reads``) as the page,
and the streamed exports."""

from __future__ import annotations

import string
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from web import reads, schemas
from web.export import check_batch, csv_chunks, jsonl_chunks
from web.params import DOC_ID, MethodName, document_filters
from web.session import session

router = APIRouter(prefix="/api/v1", tags=["api"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Problem},
    404: {"model": schemas.Problem},
}


@router.get("/batches", response_model=schemas.BatchList)
def batches(limit: int = Query(50, ge=1, le=1000), db: Session = Depends(session)) -> Any:
    return reads.batch_list(db, limit)


@router.get("/batches/{batch_id}", response_model=schemas.BatchDetail, responses=ERRORS)
def batch(batch_id: str = Path(max_length=36), db: Session = Depends(session)) -> Any:
    return reads.batch_detail(db, batch_id)


@router.get("/documents", response_model=schemas.DocumentPage, responses=ERRORS)
def documents(
    filters: dict[str, Any] = Depends(document_filters), db: Session = Depends(session)
) -> Any:
    return reads.document_page(db, **filters)


@router.get("/documents/{document_id}", response_model=schemas.DocumentDetail, responses=ERRORS)
def document(document_id: int = DOC_ID, db: Session = Depends(session)) -> Any:
    return reads.document_detail(db, document_id)


@router.get("/corpus", response_model=schemas.Corpus, responses=ERRORS)
def corpus(
    batch: str | None = Query(None, max_length=36),
    model: str | None = Query(None, max_length=200),
    db: Session = Depends(session),
) -> Any:
    return reads.corpus(db, batch, model)


@router.get("/models", response_model=schemas.ModelList)
def models(db: Session = Depends(session)) -> Any:
    return reads.model_list(db)


@router.get("/export.jsonl", responses=ERRORS, response_class=StreamingResponse)
def export_jsonl(
    request: Request,
    batch: str | None = Query(None, max_length=36),
    method: MethodName | None = Query(None),
) -> StreamingResponse:
    """One record per explanation, then one per failed document (as `results export`)."""
    url, timeout_ms = request.app.state.url, request.app.state.timeout_ms
    check_batch(url, batch, timeout_ms)
    return StreamingResponse(jsonl_chunks(url, batch, method), media_type="application/x-ndjson",
                             headers=_attachment(batch, "jsonl"))  # fmt: skip


@router.get("/export.csv", responses=ERRORS, response_class=StreamingResponse)
def export_csv(
    request: Request,
    batch: str | None = Query(None, max_length=36),
    method: MethodName | None = Query(None),
) -> StreamingResponse:
    """As export.jsonl; cells a spreadsheet would run as a formula start with a quote."""
    url, timeout_ms = request.app.state.url, request.app.state.timeout_ms
    check_batch(url, batch, timeout_ms)
    return StreamingResponse(csv_chunks(url, batch, method), media_type="text/csv; charset=utf-8",
                             headers=_attachment(batch, "csv"))  # fmt: skip


SAFE_NAME = frozenset(string.ascii_letters + string.digits + "-")


def _attachment(batch: str | None, suffix: str) -> dict[str, str]:
    # the name from a known batch id (checked above), reduced to ASCII letters, digits and
    # '-' anyway: a header is latin-1, and no browser reads anything odd into these
    safe = "".join(c for c in (batch or "all") if c in SAFE_NAME)
    return {"content-disposition": f'attachment; filename="explainq-{safe}.{suffix}"'}
