"""How faithful each method is and how far methods agree, over a batch or the database,
read from the aggregates the writes keep (``quality_stats``, ``agreement_stats``): no
scan of the corpus. Spread is the population standard deviation, sqrt(E[x^2] - E[x]^2);
with it, each mean's 95% confidence interval, for figures measured on a sample.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.models import ALL_BATCHES, QUALITY_COLUMNS, Agreement, AgreementStat, Model, QualityStat

METRICS = tuple(QUALITY_COLUMNS)


def method_quality(
    session: Session, *, batch: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Per method: explained rows ("documents"), measured rows, mean and spread of every
    metric, and the share of rows where the method beats its random ranking
    (comprehensiveness above, sufficiency below the random one's)."""
    counted = [c for c in QualityStat.__table__.columns if not c.primary_key]
    query = select(QualityStat.method, *[func.sum(c).label(c.name) for c in counted])
    query = _scoped(query, QualityStat, batch, model).group_by(QualityStat.method)
    out = []
    for row in session.execute(query.order_by(QualityStat.method)).mappings():
        record: dict[str, Any] = {"method": row["method"], "documents": int(row["rows"]),
                                  "measured": int(row["measured"])}  # fmt: skip
        for name, short in QUALITY_COLUMNS.items():
            record[name] = _mean_std(row[f"{short}_n"], row[f"{short}_sum"], row[f"{short}_sq"])
        record["beats_random"] = {
            "comprehensiveness": _share(row["beats_comp"], row["beats_comp_known"]),
            "sufficiency": _share(row["beats_suff"], row["beats_suff_known"]),
        }
        out.append(record)
    return out


def pair_agreement(
    session: Session, *, batch: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Per pair of methods: documents, and mean and spread of their Spearman correlation
    (documents where a ranking is constant have none and are not counted)."""
    n, total, total_sq = (func.sum(AgreementStat.n), func.sum(AgreementStat.total),
                          func.sum(AgreementStat.total_sq))  # fmt: skip
    query = select(AgreementStat.method_a, AgreementStat.method_b, n, total, total_sq)
    query = _scoped(query, AgreementStat, batch, model)
    query = query.group_by(AgreementStat.method_a, AgreementStat.method_b)
    rows = session.execute(query.order_by(AgreementStat.method_a, AgreementStat.method_b))
    return [
        {"methods": [a, b], "documents": int(count), "spearman": _mean_std(count, sum_, sq)}
        for a, b, count, sum_, sq in rows
        if count
    ]


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
    table: type[QualityStat | AgreementStat],
    batch: str | None,
    model: str | None,
) -> Select[Any]:
    query = query.where(table.scope == (batch or ALL_BATCHES))
    if model:
        query = query.where(table.model_id.in_(select(Model.id).where(Model.name == model)))
    return query


def _mean_std(n: int | None, total: float | None, total_sq: float | None) -> dict[str, Any]:
    """Mean, spread and the half-width of the mean's 95% confidence interval (normal
    approximation, sample variance): what a figure measured on a sample of the
    documents (``EXPLAINQ_QUALITY=sample:F``) is worth for the whole corpus."""
    if not n:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    mean = total / n
    variance = max(total_sq / n - mean * mean, 0.0)
    ci95 = 1.96 * math.sqrt(variance * n / (n - 1) / n) if n > 1 else None
    return {"mean": mean, "std": math.sqrt(variance), "n": n, "ci95": ci95}


def _share(wins: int | None, known: int | None) -> float | None:
    return wins / known if known else None
