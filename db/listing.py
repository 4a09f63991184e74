"""``results list``: a batch's documents, page by page, by keyset.

A page costs the same on page 1 and page 10,000: each page starts where the last one
ended (a cursor: the last row's sort value and id), read along an index, never by
OFFSET. Ordered by confidence or label, the explained documents come first, straight from
the explanations' index (batch, method, confidence, document); then those without that
explanation (pending, running, failed), by id.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, select, tuple_
from sqlalchemy.orm import Session, aliased

from db.models import Batch, Document, Explanation, Status
from db.queries import (
    MAX_LIMIT,
    ORDERS,
    DocumentRow,
    parse_status,
    require_batch,
    require_label,
    top_words,
)

EXPLAINED_ORDERS = {"confidence": "asc", "-confidence": "desc", "label": "asc"}


class BadCursor(ValueError):
    """An ``--after`` that is not a cursor of this listing: the caller's mistake."""


def encode_cursor(phase: str, value: Any, doc_id: int) -> str:
    raw = json.dumps([phase, value, doc_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, Any, int]:
    """The cursor's (phase, value, id); a ValueError for anything ``encode_cursor`` did
    not write: the parts' types are checked here, before the database sees them."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        if not isinstance(parts, list) or len(parts) != 3:
            raise ValueError
        phase, value, doc_id = parts
        # bool is an int to Python, not to a database; ids fit a signed 64-bit column
        if phase not in ("a", "b") or type(doc_id) is not int or not 1 <= doc_id < 2**63:
            raise ValueError
        if value is not None and type(value) not in (int, float, str):
            raise ValueError
        if type(value) is int and not -(2**63) <= value < 2**63:
            raise ValueError
    except (TypeError, ValueError):
        raise BadCursor(f"--after {cursor!r} is not a cursor printed by results list") from None
    return phase, value, doc_id


def meta_value(text: str) -> Any:
    """A --where value as its JSON type where it reads as one (1, true), else text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) else text


def list_page(
    session: Session,
    *,
    batch: str | None = None,
    label: str | None = None,
    min_confidence: float | None = None,
    max_confidence: float | None = None,
    status: str | None = None,
    method: str | None = None,
    where: dict[str, str] | None = None,
    errors: str | None = None,
    text: str | None = None,
    order: str = "id",
    limit: int = 50,
    after: str | None = None,
    offset: int = 0,
) -> tuple[list[DocumentRow], str | None]:
    """One page of documents with their ``method`` explanation, and the cursor of the
    next page (None on the last). ``where`` keeps documents whose metadata field equals
    the value; ``errors`` names the metadata field with the true label and keeps the
    documents predicted otherwise; ``text`` keeps those whose text contains it, in any
    case (read row by row: a rare phrase on a large batch reads far). ``offset`` skips
    rows the old way (it reads them): use the cursor."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")
    require_batch(session, batch)
    require_label(session, label)
    skip = max(0, offset)
    limit = max(1, min(limit, MAX_LIMIT)) + skip
    chosen = _method(session, batch, method)
    explanation = aliased(Explanation)
    on = and_(explanation.document_id == Document.id, explanation.method == chosen)
    filters = _document_filters(session, batch, status, where, text)
    wanted = _explanation_filters(explanation, label, min_confidence, max_confidence, errors)
    narrows = [condition for condition in wanted if condition is not None]
    phase, value, last = decode_cursor(after) if after else ("a", None, None)
    if after and not _fits(order, phase, value):  # a cursor of another order, or forged
        raise BadCursor(f"--after {after!r} is not a cursor of --order {order}")
    rows: list[tuple[Document, Explanation | None]] = []
    if order in EXPLAINED_ORDERS and phase == "a":
        query = select(Document, explanation).join(explanation, on).where(*filters, *narrows)
        if batch:
            query = query.where(explanation.batch_id == batch)
        column = explanation.confidence if "confidence" in order else explanation.label
        key = tuple_(column, explanation.document_id)
        if last is not None:
            query = query.where(key < (value, last) if EXPLAINED_ORDERS[order] == "desc"
                                else key > (value, last))  # fmt: skip
        direction = "desc" if EXPLAINED_ORDERS[order] == "desc" else "asc"
        # the batch and method first, though fixed: the index's own order, read straight
        leading = [explanation.batch_id, explanation.method] if batch else []
        sort = [getattr(c, direction)() for c in (*leading, column, explanation.document_id)]
        rows = [tuple(row) for row in session.execute(query.order_by(*sort).limit(limit + 1))]
        if len(rows) <= limit and not narrows:  # then the documents without it, by id
            rest = _unexplained(chosen, filters, None, limit + 1 - len(rows), batch)
            rows += [(doc, None) for doc in session.scalars(rest)]
    elif order in EXPLAINED_ORDERS:
        if not narrows:
            rest = _unexplained(chosen, filters, last, limit + 1, batch)
            rows = [(doc, None) for doc in session.scalars(rest)]
    else:
        query = select(Document, explanation).outerjoin(explanation, on).where(*filters, *narrows)
        if order == "status":
            key = tuple_(Document.status, Document.id)
            if last is not None:
                query = query.where(key > (value, last))
            query = query.order_by(*([Document.batch_id] if batch else []), Document.status,
                                   Document.id)  # fmt: skip
        else:
            if last is not None:
                query = query.where(Document.id > last)
            elif batch and session.get_bind().dialect.name == "postgresql":
                # where its rows start: else PostgreSQL may walk the ids from 1 (SQLite's
                # planner takes the batch's index by itself, and is slower with this)
                query = query.where(Document.id >= _first_id(batch))
            # (batch, id): the index's order, so the planner reads the batch's rows alone
            query = query.order_by(*([Document.batch_id] if batch else []), Document.id)
        rows = [tuple(row) for row in session.execute(query.limit(limit + 1))]
    page = rows[skip:limit]
    cursor = _next_cursor(order, page[-1]) if len(rows) > limit and page else None
    return [_row(doc, exp) for doc, exp in page], cursor


def _first_id(batch: str) -> Any:
    return select(func.min(Document.id)).where(Document.batch_id == batch).scalar_subquery()


def _method(session: Session, batch: str | None, method: str | None) -> Any:
    """The method a row shows: the one asked for; else the batch's lig, or its first; with
    no batch, lig where a document has it, else its first."""
    if method:
        return method
    if batch:
        methods = session.scalar(select(Batch.methods).where(Batch.id == batch)) or ["lig"]
        return "lig" if "lig" in methods else methods[0]
    return (
        select(Explanation.method)
        .where(Explanation.document_id == Document.id)
        .order_by(Explanation.method != "lig", Explanation.id)
        .limit(1)
        .scalar_subquery()
    )


def _document_filters(
    session: Session,
    batch: str | None,
    status: str | None,
    where: dict[str, str] | None,
    text: str | None = None,
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if text:  # LIKE with % and _ escaped: the words as typed, never a pattern
        filters.append(Document.text.icontains(text, autoescape=True))
    if batch:
        filters.append(Document.batch_id == batch)
    if status:
        filters.append(Document.status == parse_status(status))
    sqlite = session.get_bind().dialect.name == "sqlite"
    for key, text in (where or {}).items():
        value = meta_value(text)
        field = Document.meta[key]
        if isinstance(value, bool):  # JSON true/false: SQLite's json_extract gives 1/0
            filters.append(
                field.as_integer() == int(value) if sqlite else field.as_string() == text
            )
        elif isinstance(value, int | float):  # 1 and 1.0 alike, and never the text "1"
            number = field.as_float() if sqlite else case(
                (func.json_typeof(field) == "number", field.as_float())
            )  # fmt: skip
            filters.append(number == float(value))
        else:
            filters.append(field.as_string() == value)
    return filters


def _explanation_filters(
    explanation: Any,
    label: str | None,
    min_confidence: float | None,
    max_confidence: float | None,
    errors: str | None,
) -> list[ColumnElement[bool] | None]:
    gold = Document.meta[errors].as_string() if errors else None
    return [
        explanation.label == label if label else None,
        explanation.confidence >= min_confidence if min_confidence is not None else None,
        explanation.confidence <= max_confidence if max_confidence is not None else None,
        and_(gold.is_not(None), explanation.label != gold) if gold is not None else None,
    ]


def _unexplained(
    chosen: Any,
    filters: list[ColumnElement[bool]],
    after_id: int | None,
    limit: int,
    batch: str | None,
) -> Select[Any]:
    has = exists().where(Explanation.document_id == Document.id)
    if isinstance(chosen, str):  # else no method nor batch: any explanation is the one shown
        has = has.where(Explanation.method == chosen)
    query = select(Document).where(*filters, ~has)
    if after_id is not None:
        query = query.where(Document.id > after_id)
    # by id alone, as the cursor: (batch, id) only where the batch is fixed (the index)
    return query.order_by(*([Document.batch_id] if batch else []), Document.id).limit(limit)


def _fits(order: str, phase: str, value: Any) -> bool:
    """Whether a cursor's value is of the kind ``_next_cursor`` writes for ``order``."""
    if phase == "b" or order == "id":
        return value is None and (phase == "a" or order in EXPLAINED_ORDERS)
    if "confidence" in order:
        return type(value) in (int, float) and math.isfinite(value)
    if order == "status":
        return value in {s.value for s in Status}
    return type(value) is str


def _next_cursor(order: str, last: tuple[Document, Explanation | None]) -> str:
    doc, exp = last
    if order in EXPLAINED_ORDERS:
        if exp is None:
            return encode_cursor("b", None, doc.id)
        value = exp.confidence if "confidence" in order else exp.label
        return encode_cursor("a", value, doc.id)
    if order == "status":
        return encode_cursor("a", doc.status.value, doc.id)
    return encode_cursor("a", None, doc.id)


def _row(doc: Document, exp: Explanation | None) -> DocumentRow:
    return DocumentRow(
        id=doc.id,
        external_id=doc.external_id,
        batch_id=doc.batch_id,
        status=doc.status.value.lower(),
        label=exp.label if exp else None,
        confidence=exp.confidence if exp else None,
        top_tokens=top_words(exp.tokens, exp.attributions, 3, exp.offsets, exp.words, doc.text)
        if exp
        else [],
        error=doc.error,
    )
