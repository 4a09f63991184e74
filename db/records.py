"""What the workers write, as typed records defined once on the data side.

The worker encodes the engine's output into these; ``db.writes`` stores them. Their
fields are the tables' columns (an explanation's params, execution, worker and device are
its ``run_settings`` row's), so a column added to a table is added here and nowhere
else. The policy for non-finite numbers lives here too: JSON has no NaN (PostgreSQL
refuses it), and an undefined figure is better stored as unknown than as a number.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from db.arrays import pack, unpack
from db.digest import row_digest

# Recorded with the parameters but derived by the worker from the model (already part of
# a row's identity): a worker with another device must not make a second row.
DERIVED_PARAMS = frozenset({"node_density"})


def params_key(method: str, params: dict[str, Any], windowing: dict[str, Any] | None = None) -> str:
    """A stable hash of what makes an explanation what it is: the method, its parameters
    and, for a document cut into windows, how it was cut (the window's tokens and
    stride change its numbers; a document that fits one window is the same at any)."""
    chosen = {k: v for k, v in params.items() if k not in DERIVED_PARAMS}
    if windowing:
        chosen["windowing"] = windowing
    canonical = json.dumps({"method": method, **chosen}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def _shallow(record: Any) -> dict[str, Any]:
    """A record's fields as a dict, without ``asdict``'s deep copy of every list."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def all_finite(values: Any) -> bool:
    return all(math.isfinite(x) for x in values)


@dataclass(frozen=True)
class ExplanationRecord:
    """One method's explanation of one document, with its provenance (``explanations``)."""

    document_id: int
    model_id: int
    method: str
    params: dict[str, Any]
    label: str
    confidence: float
    probabilities: dict[str, float]
    tokens: list[str]
    attributions: list[float]
    worker: str
    device: str
    convergence_delta: float | None = None
    relative_gap: float | None = None
    steps: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float | None] | None = None
    extra: dict[str, Any] | None = None
    windows: int = 1
    batch_id: str | None = None  # the document's, repeated for keyset pages of a batch
    # Character (start, end) of each token in the text, flattened, and each token's word
    # (whitespace-delimited span; -1 for special tokens): None where the tokenizer has
    # no offsets (a slow tokenizer).
    offsets: list[int] | None = None
    words: list[int] | None = None
    # The settings of the run that change stored numbers: max_tokens and window_stride
    # (how a long document is cut) and quality (whether faithfulness was measured).
    execution: dict[str, Any] = field(default_factory=dict)

    def problem(self) -> str | None:
        """Why this must not be stored: non-finite scores or probabilities (a bf16
        overflow, say) are no explanation, so the document fails instead."""
        if not all_finite(self.probabilities.values()):
            return "probabilities"
        return None if all_finite(self.attributions) else self.method

    def columns(self) -> dict[str, Any]:
        windowing = None
        if self.windows > 1:
            windowing = {k: self.execution.get(k) for k in ("max_tokens", "window_stride")}
        return {
            **_shallow(self),
            "params_key": params_key(self.method, self.params, windowing),
            # as the database will give them back: the digest is computed from these
            "confidence": float(self.confidence),
            "attributions": unpack(pack(self.attributions, "f"), "f"),
            "convergence_delta": _finite_float(self.convergence_delta),
            "relative_gap": _finite_float(self.relative_gap),
            "quality": finite(self.quality),
            "extra": finite(self.extra),
        }


def _finite_float(value: float | None) -> float | None:
    # SQLite stores NaN as NULL: unknown on every backend, so the digest reads back alike
    return None if value is None else finite(float(value))


def digest_content(
    row: Mapping[str, Any], *, external_id: str, text: str, model_sha256: str
) -> dict[str, Any]:
    """What an explanation row asserts (``db.digest.ROW_FIELDS``), from its columns as
    stored (``row``: an ``ExplanationRecord.columns()``, or a row read back), its
    document's id and text and its model's weights hash."""
    return {
        "batch_id": row["batch_id"],
        "doc": row["document_id"],
        "document_id": external_id,
        "text": text,
        "model_sha256": model_sha256,
        **{name: row[name] for name in _DIGESTED_COLUMNS},
        "word_ids": row["words"],
    }


_DIGESTED_COLUMNS = (
    "method", "params_key", "params", "label", "confidence", "probabilities", "tokens",
    "attributions", "offsets", "quality", "extra", "convergence_delta", "relative_gap",
    "steps", "windows", "execution", "worker", "device",
)  # fmt: skip


def explanation_digest(
    row: Mapping[str, Any], *, external_id: str, text: str, model_sha256: str
) -> str:
    """The digest an explanation row carries (``explanations.digest``)."""
    content = digest_content(row, external_id=external_id, text=text, model_sha256=model_sha256)
    return row_digest(content)


@dataclass(frozen=True)
class RepresentationRecord:
    """A document's pooled vector under one model (``representations``)."""

    document_id: int
    model_id: int
    vector: list[float]

    def columns(self) -> dict[str, Any] | None:
        """The row, with the norm that makes cosine one dot product; None for a vector
        with a non-finite value, which would poison every similarity."""
        vector = [float(x) for x in self.vector]
        if not all_finite(vector):
            return None
        norm = math.sqrt(math.fsum(x * x for x in vector))
        return {**_shallow(self), "vector": vector, "norm": norm}


@dataclass(frozen=True)
class AgreementRecord:
    """How far two methods rank one document's tokens alike (``agreements``)."""

    document_id: int
    model_id: int
    methods: tuple[str, str]
    spearman: float | None

    def columns(self) -> dict[str, Any]:
        """Each pair stored sorted, so (a, b) and (b, a) are the same row."""
        method_a, method_b = sorted(self.methods)
        return {
            "document_id": self.document_id,
            "model_id": self.model_id,
            "method_a": method_a,
            "method_b": method_b,
            "spearman": finite(self.spearman),
        }


@dataclass
class ChunkRecords:
    """What a chunk writes in one transaction: its DONE documents' explanations, vectors
    and agreements, and its FAILED documents' errors."""

    explanations: list[ExplanationRecord] = field(default_factory=list)
    representations: list[RepresentationRecord] = field(default_factory=list)
    agreements: list[AgreementRecord] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)  # for the aggregates' words
