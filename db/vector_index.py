"""An inverted-file (IVF) index of each model's pooled vectors, kept in the database
itself, for ``results similar`` where no vector extension is installed.

pgvector is not available on these machines (Debian 12's PostgreSQL has no package for
it, and the standard library's sqlite3 cannot load extensions), so the index is plain
tables: k-means centroids per model in ``vector_lists``, and on every representation
``list_id``, the centroid nearest its vector (``ix_representations_model`` indexes
``(model_id, list_id)``). ``pgvector_available`` only says whether a PostgreSQL server
could have it; nothing here uses it.

Building (``build``; ``results index``): the model's vectors are counted, ``lists``
(about the square root of the count, capped) centroids are trained by spherical k-means
(cosine: rows and centroids of unit length) on a seeded sample of at most
``TRAIN_SAMPLE`` vectors, and every vector is then filed under its nearest centroid, in
one transaction: readers see the old index or the new one, never half of each.

Keeping up (``maintain``, which ``db.similar`` calls): vectors written after the build
have ``list_id`` null (the workers' writes know nothing of the index) and every query
scans them exactly, in addition to its lists, so they are always found. Once there are
``ASSIGN_AT`` of them, the next query files them under the existing centroids (cheap:
only they are read and written); when the model has grown so much that it wants twice
the lists it has, or when it has no index at all, the index is trained again. That
maintenance runs in its own transaction, at most one at a time per model on PostgreSQL
(an advisory lock), and is best effort: when it cannot write, the query still answers,
scanning more.

Vectors travel as the raw float32 bytes of the column (``raw_vector``), which numpy reads
with ``frombuffer``: no Python float per component.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from db.kmeans import (
    SEED,
    TRAIN_SAMPLE,
    as_matrix,
    nearest_centroid,
    target_lists,
    train,
    unit,
)
from db.models import Document, Model, Representation, VectorList, utcnow
from db.vector_centroids import Index, load
from db.vector_fetch import IN_SLICE, fetch, raw_vector, stream

EXACT_BELOW = 10_000  # at most this many vectors of the model: exact
# A batch within an indexed model: exact below this. Its rows are spread over the whole
# table (a 10,000-document batch scanned exactly took 0.5 s on SQLite at 100k).
EXACT_BATCH_BELOW = 2_000
# (an exact scan of 10,000 vectors takes about 0.2 s on PostgreSQL, of 20,000 about 0.35 s)
ASSIGN_AT = 2_000  # unindexed vectors that a query files under the existing centroids
SLICE = 10_000  # rows per UPDATE when lists are written


# --- reading and writing the index ----------------------------------------------------


def count_at_most(session: Session, query: Select[Any], most: int) -> int:
    """``count(*)`` of ``query``'s rows, counting no further than ``most`` + 1 (cheap
    where the exact count of a large table would not be)."""
    bounded = query.limit(most + 1).subquery()
    return session.scalar(select(func.count()).select_from(bounded)) or 0


def vector_count(session: Session, model_id: int) -> int:
    query = select(func.count()).select_from(Representation)
    return session.scalar(query.where(Representation.model_id == model_id)) or 0


def model_vectors(model_id: int) -> Select[Any]:
    return select(Representation.id).where(Representation.model_id == model_id)


def batch_documents(batch: str) -> Select[Any]:
    return select(Document.id).where(Document.batch_id == batch)


def unindexed(model_id: int) -> Select[Any]:
    return model_vectors(model_id).where(Representation.list_id.is_(None))


def build(
    session: Session, model_id: int, *, lists: int | None = None, seed: int = SEED
) -> dict[str, Any]:
    """(Re)builds the model's index in the caller's transaction; returns what it did:
    vectors, lists, the rows whose list changed, seconds."""
    started = time.perf_counter()
    _lock(session, model_id, wait=True)
    ids = np.asarray(session.scalars(model_vectors(model_id).order_by(Representation.id)).all())
    n = len(ids)
    wanted = max(1, min(lists or target_lists(n), n))
    centroids = np.zeros((0, 0), dtype=np.float32)
    if n:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(ids, min(n, TRAIN_SAMPLE), replace=False))
        sample = unit(_vectors_by_id(session, chosen.tolist()))
        centroids = train(sample, wanted, seed=seed)
    changed = _file_all(session, model_id, centroids) if n else 0
    session.execute(delete(VectorList).where(VectorList.model_id == model_id))
    if len(centroids):
        session.execute(
            insert(VectorList),
            [{"model_id": model_id, "list_id": i, "centroid": row.tolist(), "created_at": utcnow()}
             for i, row in enumerate(centroids)],
        )  # fmt: skip
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE representations"))  # the planner learns list_id
    return {"model_id": model_id, "vectors": n, "lists": len(centroids), "changed": changed,
            "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip


def build_models(
    session: Session, *, model: str | None = None, lists: int | None = None
) -> list[dict[str, Any]]:
    """``results index``: builds the index of every model with vectors (or of those named
    ``model``). A model with at most EXACT_BELOW vectors is searched exactly and gets
    none (any it had is dropped), unless ``lists`` is given. LookupError for an unknown
    model name."""
    query = select(Model.id, Model.name).order_by(Model.id)
    if model:
        query = query.where(Model.name == model)
    models = session.execute(query).all()
    if model and not models:
        known = sorted(set(session.scalars(select(Model.name))))
        raise LookupError(f"no model named {model!r}; known: {', '.join(known) or 'none yet'}")
    done = []
    for model_id, name in models:
        small = count_at_most(session, model_vectors(model_id), EXACT_BELOW) <= EXACT_BELOW
        if small and lists is None:
            session.execute(delete(VectorList).where(VectorList.model_id == model_id))
            vectors = vector_count(session, model_id)
            report = {"model_id": model_id, "vectors": vectors, "lists": 0, "changed": 0,
                      "seconds": 0.0}  # fmt: skip
        else:
            report = build(session, model_id, lists=lists)
        if report["vectors"] or model:
            done.append({"model": name, **report, "search": "ivf" if report["lists"] else "exact"})
    return done


def assign(session: Session, model_id: int, index: Index) -> int:
    """Files the model's unindexed vectors under their nearest existing centroid;
    returns how many."""
    rows = fetch(
        session,
        select(Representation.id, raw_vector()).where(
            Representation.model_id == model_id, Representation.list_id.is_(None)
        ),
    )
    if not rows:
        return 0
    matrix, kept = as_matrix([bytes(row[1]) for row in rows], index.centroids.shape[1])
    nearest, _ = nearest_centroid(unit(matrix), index.centroids)
    ids = np.asarray([rows[i][0] for i in kept], dtype=np.int64)
    _write_lists(session, ids, index.list_ids[nearest])
    return len(ids)


def maintain(session: Session, model_id: int, index: Index | None) -> str | None:
    """What ``similar`` does before an indexed query: builds the index when the model
    has none or has outgrown it, files unindexed vectors once there are ASSIGN_AT of
    them; in a transaction of its own, skipped when another process holds the model's
    lock or the database refuses the write. Returns "built", "assigned" or None."""
    from sqlalchemy.exc import DBAPIError

    if index is not None and count_at_most(session, unindexed(model_id), ASSIGN_AT) < ASSIGN_AT:
        return None
    try:
        with Session(session.get_bind()) as own, own.begin():
            if not _lock(own, model_id, wait=False):
                return None  # someone else is at it
            current = load(own, model_id)
            if current is not None:
                total = vector_count(own, model_id)
                if target_lists(total) < 2 * current.lists:
                    return "assigned" if assign(own, model_id, current) else None
            build(own, model_id)
            return "built"
    except DBAPIError:  # a read-only user, a locked SQLite file: answer anyway
        return None


def _lock(session: Session, model_id: int, *, wait: bool) -> bool:
    """One index writer per model at a time, and a write first of all: an UPDATE of no
    row fails at once where the user or the database may not write (a replica, a
    read-only grant) before any vector is read, and on SQLite takes the database's one
    write lock (so that what is read is what is written over); on PostgreSQL, an
    advisory lock per model besides. False: another process holds it (``wait=False``)."""
    session.execute(update(VectorList).where(VectorList.id < 0).values(list_id=0))
    if session.get_bind().dialect.name != "postgresql":
        return True
    key = zlib.crc32(f"explainq.vector_index.{model_id}".encode())
    if wait:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}))


def _vectors_by_id(session: Session, ids: Sequence[int]) -> np.ndarray:
    blobs: list[bytes] = []
    for start in range(0, len(ids), IN_SLICE):
        chunk = ids[start : start + IN_SLICE]
        query = select(raw_vector()).where(Representation.id.in_(chunk)).order_by(Representation.id)
        blobs.extend(bytes(row[0]) for row in fetch(session, query))
    return as_matrix(blobs)[0]


def _file_all(session: Session, model_id: int, centroids: np.ndarray) -> int:
    """Files every vector of the model under its nearest of ``centroids`` (list ids
    0..n-1); returns how many rows changed list."""
    every = select(Representation.id, Representation.list_id, raw_vector()).where(
        Representation.model_id == model_id
    )
    ids: list[np.ndarray] = []
    lists: list[np.ndarray] = []
    for block in stream(session, every):
        matrix, kept = as_matrix([bytes(row[2]) for row in block], centroids.shape[1])
        nearest, _ = nearest_centroid(unit(matrix), centroids)
        before = np.asarray([-1 if block[i][1] is None else block[i][1] for i in kept])
        moved = nearest != before
        ids.append(np.asarray([block[i][0] for i in kept], dtype=np.int64)[moved])
        lists.append(nearest[moved])
    if not ids:
        return 0
    all_ids, all_lists = np.concatenate(ids), np.concatenate(lists)
    _write_lists(session, all_ids, all_lists)
    return len(all_ids)


def _write_lists(session: Session, ids: np.ndarray, lists: np.ndarray) -> None:
    """``list_id`` of many rows: one statement per slice on PostgreSQL (unnest), one
    executemany on SQLite; list by list, so that PostgreSQL, which writes a row's new
    version where there is room (at the end of the table, once its pages are full),
    leaves the rows of a list side by side: a query then reads a few pages per list,
    not one per vector."""
    postgres = session.get_bind().dialect.name == "postgresql"
    order = np.lexsort((ids, lists))
    ids, lists = ids[order], lists[order]
    for start in range(0, len(ids), SLICE):
        some_ids = ids[start : start + SLICE].tolist()
        some_lists = lists[start : start + SLICE].tolist()
        if postgres:
            session.execute(
                text(
                    "UPDATE representations SET list_id = v.list_id FROM unnest("
                    "CAST(:ids AS integer[]), CAST(:lists AS integer[])) AS v(id, list_id) "
                    "WHERE representations.id = v.id"
                ),
                {"ids": some_ids, "lists": some_lists},
            )
        else:
            session.connection().execute(
                update(Representation.__table__)
                .where(Representation.__table__.c.id == bindparam("row_id"))
                .values(list_id=bindparam("new_list")),
                [{"row_id": i, "new_list": k} for i, k in zip(some_ids, some_lists, strict=True)],
            )
