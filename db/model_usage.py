"""The models over time: every name and weights version, when it was first and last
used, and how many explanations it made."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (
    ALL_BATCHES,
    Explanation,
    Model,
    QualityStat,
)
from db.queries import iso


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
