"""The vector index's arithmetic, in numpy alone: float32 rows from stored bytes, the
number of lists and probes, spherical k-means, and which lists a query reads first."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from db.vector_centroids import Index

MAX_LISTS = 4_096
TRAIN_SAMPLE = 50_000  # vectors the centroids are trained on, at most
ITERATIONS = 10  # Lloyd iterations
SEED = 0
MIN_PROBES = 8  # lists a query reads at least ...
PROBE_SHARE = 1 / 64  # ... or this share of them, whichever is more
DTYPE = np.dtype("<f4")  # db.arrays: float32, little-endian


def as_matrix(blobs: Sequence[bytes], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float32 rows from stored vectors, and which of ``blobs`` they are: those of
    ``dim`` components (the first one's when not given); any other length is left out."""
    if not blobs:
        return np.zeros((0, dim or 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    width = 4 * (dim if dim is not None else len(blobs[0]) // 4)
    joined = b"".join(blobs)
    if len(joined) == width * len(blobs) and all(len(blob) == width for blob in blobs):
        kept = np.arange(len(blobs))
    else:  # a vector of another length (another model's?) cannot be compared
        kept = np.asarray([i for i, blob in enumerate(blobs) if len(blob) == width], np.int64)
        joined = b"".join(blobs[i] for i in kept)
    matrix = np.frombuffer(joined, dtype=DTYPE).reshape(len(kept), width // 4)
    return matrix.astype(np.float32, copy=False), kept


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def target_lists(vectors: int) -> int:
    """The lists for this many vectors: about their square root (at most MAX_LISTS)."""
    return max(1, min(MAX_LISTS, round(math.sqrt(vectors))))


def probes(lists: int) -> int:
    """The lists a query reads first (more when filters leave too few candidates)."""
    return min(lists, max(MIN_PROBES, math.ceil(lists * PROBE_SHARE)))


# --- training -----------------------------------------------------------------------


def nearest_centroid(rows: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of unit ``rows``: the index of the most similar centroid, and the cosine."""
    out = np.empty(len(rows), dtype=np.int64)
    best = np.empty(len(rows), dtype=np.float32)
    step = max(1, (1 << 24) // max(1, len(centroids)))  # at most 64 MB of scores at once
    for start in range(0, len(rows), step):
        scores = rows[start : start + step] @ centroids.T
        out[start : start + step] = np.argmax(scores, axis=1)
        best[start : start + step] = scores[np.arange(len(scores)), out[start : start + step]]
    return out, best


def train(
    sample: np.ndarray, lists: int, *, seed: int = SEED, iterations: int = ITERATIONS
) -> np.ndarray:
    """Spherical k-means: ``lists`` unit centroids for the unit rows of ``sample``,
    started from distinct seeded rows; a list left empty is started again from the row
    its centroid fits worst."""
    rng = np.random.default_rng(seed)
    lists = max(1, min(lists, len(sample)))
    centroids = sample[np.sort(rng.choice(len(sample), lists, replace=False))].copy()
    for _ in range(iterations):
        assigned, fit = nearest_centroid(sample, centroids)
        order = np.argsort(assigned, kind="stable")
        counts = np.bincount(assigned, minlength=lists)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        filled = counts > 0
        sums = np.add.reduceat(sample[order], starts[filled], axis=0)
        centroids[filled] = unit(sums)
        empty = np.flatnonzero(~filled)
        if len(empty):  # the worst-fitting rows start the empty lists again
            centroids[empty] = sample[np.argsort(fit, kind="stable")[: len(empty)]]
    return centroids


def probe_order(index: Index, query: np.ndarray) -> list[int]:
    """The list ids, the most similar centroid to ``query`` first."""
    scores = index.centroids @ unit(query.reshape(1, -1).astype(np.float32))[0]
    return index.list_ids[np.argsort(-scores, kind="stable")].tolist()
