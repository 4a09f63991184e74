"""The HTML pages: each calls the same read (``web.reads``) as its /api/v1 twin and
renders it; templates only render (Jinja2, autoescaped)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from contract.methods import METHODS
from db.queries import ORDERS
from web import reads
from web.params import DOC_ID, document_filters
from web.session import session

router = APIRouter(include_in_schema=False)


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, name, context)


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/batches")


@router.get("/batches", response_class=HTMLResponse)
def batches(request: Request, db: Session = Depends(session)) -> HTMLResponse:
    return page(request, "batches.html", data=reads.batch_list(db))


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(
    request: Request, batch_id: str = Path(max_length=36), db: Session = Depends(session)
) -> HTMLResponse:
    return page(request, "batch.html", data=reads.batch_detail(db, batch_id))


@router.get("/documents", response_class=HTMLResponse)
def documents(
    request: Request,
    filters: dict[str, Any] = Depends(document_filters),
    db: Session = Depends(session),
) -> HTMLResponse:
    data = reads.document_page(db, **filters)
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "after" and v]
    following = "/documents?" + urlencode([*kept, ("after", data.next)]) if data.next else None
    return page(request, "documents.html", data=data, query=dict(request.query_params),
                wheres=request.query_params.getlist("where"), next_url=following,
                orders=ORDERS, methods=METHODS)  # fmt: skip


@router.get("/documents/{document_id}", response_class=HTMLResponse)
def document(
    request: Request,
    document_id: int = DOC_ID,
    view: Literal["words", "subwords"] = Query("words"),
    db: Session = Depends(session),
) -> HTMLResponse:
    return page(request, "document.html", data=reads.document_detail(db, document_id), view=view)


@router.get("/corpus", response_class=HTMLResponse)
def corpus(
    request: Request,
    batch: str | None = Query(None, max_length=36),
    model: str | None = Query(None, max_length=200),
    db: Session = Depends(session),
) -> HTMLResponse:
    return page(request, "corpus.html", data=reads.corpus(db, batch, model))


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, db: Session = Depends(session)) -> HTMLResponse:
    return page(request, "models.html", data=reads.model_list(db))
