"""A model's vector index as its readers see it: the centroids (``Index``), read from
``vector_lists`` and kept per database and model while the index stays the same, so a
long-lived reader (the web app) does not read 1,000 centroids on every query.
``db.vector_index`` builds and keeps up the index; ``db.similar`` searches it."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import LargeBinary, func, select, type_coerce
from sqlalchemy.orm import Session

from db.kmeans import as_matrix, unit
from db.models import VectorList
from db.vector_fetch import fetch


class Index(NamedTuple):
    """A model's centroids: ``list_ids[i]`` names the row ``centroids[i]`` (unit length)."""

    list_ids: np.ndarray
    centroids: np.ndarray

    @property
    def lists(self) -> int:
        return len(self.list_ids)


# Centroids read per (database, model), kept while the index is the same: a long-lived
# reader (the web app) reads a few hundred bytes per query instead of every centroid.
_LOADED: dict[tuple[str, int], tuple[tuple[Any, ...], Index]] = {}
_LOADED_MAX = 16


def load(session: Session, model_id: int) -> Index | None:
    """The model's centroids, or None when it has no index. Cached per database and
    model under the index's stamp (its row count, highest id and newest row: a rebuild
    writes new rows, so the stamp changes), which one small query reads each time."""
    stamp = tuple(session.execute(
        select(func.count(), func.max(VectorList.id), func.max(VectorList.created_at))
        .where(VectorList.model_id == model_id)
    ).one())  # fmt: skip
    if not stamp[0]:
        return None
    key = (session.get_bind().url.render_as_string(hide_password=False), model_id)
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    index = _read(session, model_id)
    if index is not None:
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = (stamp, index)
    return index


def _read(session: Session, model_id: int) -> Index | None:
    rows = fetch(
        session,
        select(VectorList.list_id, type_coerce(VectorList.__table__.c.centroid, LargeBinary))
        .where(VectorList.model_id == model_id)
        .order_by(VectorList.list_id),
    )
    if not rows:
        return None
    centroids, kept = as_matrix([bytes(row[1]) for row in rows])
    list_ids = np.asarray([rows[i][0] for i in kept], dtype=np.int64)
    return Index(list_ids, unit(centroids))
