"""The API's typed responses: what every page shows, and what /openapi.json documents.
Each page renders exactly one of these, built by one function of ``web.reads``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class BatchSummary(BaseModel):
    batch_id: str
    created_at: str
    source: str
    model: str
    methods: list[str]
    submitted: int
    rejected: int
    pending: int
    running: int
    done: int
    failed: int


class BatchList(BaseModel):
    batches: list[BatchSummary]


class RejectionOut(BaseModel):
    line: int
    field: str | None
    reason: str


class FailureOut(BaseModel):
    id: int
    external_id: str
    error: str | None


class BatchDetail(BaseModel):
    batch: BatchSummary
    params: dict[str, Any]
    rejections: list[RejectionOut]
    rejections_shown_of: int
    failures: list[FailureOut]
    failures_shown_of: int
    failure_reasons: list[tuple[str, int]]


class DocumentRowOut(BaseModel):
    id: int
    external_id: str
    batch_id: str
    status: str
    label: str | None
    confidence: float | None
    top_tokens: list[str]
    error: str | None


class DocumentPage(BaseModel):
    rows: list[DocumentRowOut]
    next: str | None  # the cursor of the next page (pass as ``after``); None on the last
    filters: dict[str, Any]


class Piece(BaseModel):
    """A run of the text: a word (or subword) with its score, or the text between (None)."""

    text: str
    score: float | None
    token: str | None = None


class ExplanationOut(BaseModel):
    method: str
    params: dict[str, Any]
    label: str
    confidence: float
    probabilities: dict[str, float]
    tokens: list[str]
    attributions: list[float]
    offsets: list[int] | None
    word_ids: list[int] | None
    scale: float  # the largest |word score|: the colour scale's full strength
    subword_scale: float  # the largest |token score|: the subword view's full strength
    words: list[Piece]
    subwords: list[Piece]
    # layers x tokens ([CLS] row), attention only; None where a weight was not finite
    attention: list[list[float | None]] | None
    quality: dict[str, float | None] | None
    agreement: dict[str, float | None]
    convergence_delta: float | None
    relative_gap: float | None
    steps: int | None
    windows: int | None
    worker: str | None
    device: str | None
    timings: dict[str, Any] | None
    execution: dict[str, Any] | None
    created_at: str


class Neighbour(BaseModel):
    id: int
    external_id: str
    batch_id: str
    similarity: float
    label: str | None
    confidence: float | None
    snippet: str


class DocumentDetail(BaseModel):
    id: int
    external_id: str
    batch_id: str
    status: str
    error: str | None
    text: str
    metadata: dict[str, Any]
    model: str | None
    model_path: str | None
    model_sha256: str | None
    model_info: dict[str, Any] | None
    explanations: list[ExplanationOut]
    neighbours: list[Neighbour]
    neighbours_note: str | None


class TokenOut(BaseModel):
    token: str
    mean_attribution: float
    total_attribution: float
    occurrences: int
    documents: int


class TopTokens(BaseModel):
    label: str
    method: str
    tokens: list[TokenOut]


class MeanStd(BaseModel):
    mean: float | None
    std: float | None


class QualityOut(BaseModel):
    method: str
    documents: int
    measured: int
    comprehensiveness: MeanStd
    sufficiency: MeanStd
    random_comprehensiveness: MeanStd
    random_sufficiency: MeanStd
    beats_random: dict[str, float | None]


class AgreementOut(BaseModel):
    methods: list[str]
    documents: int
    spearman: MeanStd


class ModelCorpus(BaseModel):
    model: str
    labels: list[str]
    methods: list[str]
    top_tokens: list[TopTokens]
    quality: list[QualityOut]
    agreement: list[AgreementOut]


class Corpus(BaseModel):
    batch: str | None
    models: list[ModelCorpus]


class ModelOut(BaseModel):
    id: int
    name: str
    sha256: str
    labels: list[Any]
    path: str
    registered: str
    first_used: str | None
    last_used: str | None
    explanations: int


class ModelList(BaseModel):
    models: list[ModelOut]


class Problem(BaseModel):
    detail: str
