"""How faithful each method is and how far methods agree, over a batch or the database.

Computed by the database as aggregates (JSON fields read with SQLAlchemy's JSON
accessors, which both SQLite and PostgreSQL evaluate), so nothing is loaded row by row.
Spread is the population standard deviation, sqrt(E[x^2] - E[x]^2).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, Select, case, distinct, func, select
from sqlalchemy.orm import Session

from db.models import Agreement, Document, Explanation, Model

METRICS = ("comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency")


def _metric(name: str) -> ColumnElement[float]:
    return Explanation.quality[name].as_float()


def _share(condition: ColumnElement[bool], known: ColumnElement[bool]) -> ColumnElement[Any]:
    """The fraction of rows where ``condition`` holds, among those where ``known``."""
    return func.avg(case((condition, 1.0), (known, 0.0), else_=None))


def method_quality(
    session: Session, *, batch: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Per method: documents, measured rows, mean and spread of every metric, and the
    share of documents where the method beats its random ranking (comprehensiveness
    above, sufficiency below the random one's)."""
    comp, suff = _metric("comprehensiveness"), _metric("sufficiency")
    rcomp, rsuff = _metric("random_comprehensiveness"), _metric("random_sufficiency")
    columns: list[Any] = [
        Explanation.method,
        func.count(distinct(Explanation.document_id)).label("documents"),
        func.count(comp).label("measured"),
        _share(comp > rcomp, comp <= rcomp).label("beats_random_comprehensiveness"),
        _share(suff < rsuff, suff >= rsuff).label("beats_random_sufficiency"),
    ]
    for name in METRICS:
        value = _metric(name)
        columns += [func.avg(value).label(name), func.avg(value * value).label(f"{name}__sq")]
    query = _scoped(select(*columns), Explanation.document_id, Explanation.model_id, batch, model)
    rows = session.execute(query.group_by(Explanation.method).order_by(Explanation.method))
    out = []
    for row in rows.mappings():
        record = {key: row[key] for key in ("method", "documents", "measured")}
        for name in METRICS:
            record[name] = {"mean": row[name], "std": _std(row[name], row[f"{name}__sq"])}
        record["beats_random"] = {
            "comprehensiveness": row["beats_random_comprehensiveness"],
            "sufficiency": row["beats_random_sufficiency"],
        }
        out.append(record)
    return out


def pair_agreement(
    session: Session, *, batch: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Per pair of methods: documents, and mean and spread of their Spearman correlation
    (documents where a ranking is constant have none and are not counted)."""
    rho = Agreement.spearman
    query = select(
        Agreement.method_a,
        Agreement.method_b,
        func.count(rho).label("documents"),
        func.avg(rho).label("mean"),
        func.avg(rho * rho).label("sq"),
    )
    query = _scoped(query, Agreement.document_id, Agreement.model_id, batch, model)
    query = query.group_by(Agreement.method_a, Agreement.method_b)
    rows = session.execute(query.order_by(Agreement.method_a, Agreement.method_b)).mappings()
    return [
        {"methods": [row["method_a"], row["method_b"]], "documents": row["documents"],
         "spearman": {"mean": row["mean"], "std": _std(row["mean"], row["sq"])}}
        for row in rows
    ]  # fmt: skip


def document_agreement(session: Session, document_id: int) -> dict[tuple[str, str], float | None]:
    """One document's Spearman correlation per method pair (first model that has any)."""
    query = (
        select(Agreement.method_a, Agreement.method_b, Agreement.spearman)
        .where(Agreement.document_id == document_id)
        .order_by(Agreement.model_id, Agreement.method_a, Agreement.method_b)
    )
    pairs: dict[tuple[str, str], float | None] = {}
    for method_a, method_b, spearman in session.execute(query):
        pairs.setdefault((method_a, method_b), spearman)
    return pairs


def _scoped(
    query: Select[Any],
    document_id: Any,
    model_id: Any,
    batch: str | None,
    model: str | None,
) -> Select[Any]:
    if batch:
        query = query.join(Document, Document.id == document_id).where(Document.batch_id == batch)
    if model:
        query = query.join(Model, Model.id == model_id).where(Model.name == model)
    return query


def _std(mean: float | None, mean_square: float | None) -> float | None:
    if mean is None or mean_square is None:
        return None
    return math.sqrt(max(mean_square - mean * mean, 0.0))
