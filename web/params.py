"""The query parameters pages and API share, each from a whitelist or a bounded type:
what is not one of them is a 422 (FastAPI) or a 400 (here), never a 500."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import Path, Query

from contract.methods import METHODS
from db.queries import ORDERS
from web.errors import BadRequest

Order = Literal[ORDERS]  # type: ignore[valid-type]
StatusName = Literal["pending", "running", "done", "failed"]
MethodName = Literal[METHODS]  # type: ignore[valid-type]
FIELD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")  # a metadata field name
MAX_PAGE = 500
MAX_WHERE, MAX_WHERE_CHARS = 5, 200  # each filter is a JSON lookup on every row read
DOC_ID = Path(ge=1, le=2**31 - 1)


def field_name(name: str, what: str) -> str:
    if not FIELD.fullmatch(name):
        raise BadRequest(f"{what} {name!r}: a metadata field is letters, digits, _ . - (<= 64)")
    return name


def document_filters(
    batch: str | None = Query(None, max_length=36, description="Only this batch."),
    label: str | None = Query(None, max_length=200, description="Only this predicted label."),
    min_confidence: float | None = Query(None, ge=0, le=1, allow_inf_nan=False),
    max_confidence: float | None = Query(None, ge=0, le=1, allow_inf_nan=False),
    status: StatusName | None = Query(None),
    method: MethodName | None = Query(None, description="Default: the batch's lig or first."),
    where: list[str] = Query([], description="Metadata FIELD=VALUE (repeatable)."),
    errors: str | None = Query(
        None, max_length=64, description="Only documents predicted otherwise than this field."
    ),
    q: str | None = Query(None, max_length=200, description="Only texts containing this."),
    order: Order = Query("id"),  # type: ignore[valid-type]
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    after: str | None = Query(None, max_length=600, description="The cursor of the next page."),
) -> dict[str, Any]:
    """``db.listing.list_page``'s keywords."""
    if len(where) > MAX_WHERE:
        raise BadRequest(f"at most {MAX_WHERE} where filters, not {len(where)}")
    meta: dict[str, str] = {}
    for pair in where:
        if len(pair) > MAX_WHERE_CHARS:
            raise BadRequest(f"where {pair[:40]!r}...: at most {MAX_WHERE_CHARS} characters")
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadRequest(f"where {pair!r}: expected FIELD=VALUE")
        meta[field_name(key.strip(), "where")] = value
    return {
        "batch": batch, "label": label, "min_confidence": min_confidence,
        "max_confidence": max_confidence, "status": status, "method": method, "where": meta,
        "errors": field_name(errors, "errors") if errors else None, "text": q,
        "order": order, "limit": limit, "after": after,
    }  # fmt: skip
