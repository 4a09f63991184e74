"""The tables: batches of submitted documents, the models that explained them, the
explanations themselves, and per document the pooled representation and how far the
methods agree. The schema is created by the Alembic migrations in ``db/migrations``;
these classes must stay in step with them."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

from db.arrays import Float32Array
from db.compact import CompactDict, DeltaIntArray, TokenList

# JSON text on SQLite, binary JSONB on PostgreSQL (smaller, and indexable with GIN).
Json = JSON().with_variant(JSONB(), "postgresql")
NullableJson = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: Json,
        list[Any]: Json,
        datetime: DateTime(timezone=True),
    }


class Status(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (Status.DONE, Status.FAILED)


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text, doc="Model spec as submitted: a name or a path.")
    methods: Mapped[list[Any]] = mapped_column(doc="Attribution methods to run, e.g. ['lig'].")
    params: Mapped[dict[str, Any]] = mapped_column(doc="Method parameters, e.g. n_steps.")
    submitted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    documents: Mapped[list[Document]] = relationship(back_populates="batch")
    rejections: Mapped[list[Rejection]] = relationship(back_populates="batch")


class Rejection(Base):
    """An input line the producer refused, with where and why."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)

    batch: Mapped[Batch] = relationship(back_populates="rejections")


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("batch_id", "external_id", name="uq_documents_batch_external_id"),
        Index("ix_documents_batch_status", "batch_id", "status"),
        Index("ix_documents_external_id", "external_id"),  # `results show <your id>`
        Index("ix_documents_status_updated", "status", "updated_at"),  # the sweeper
        Index("ix_documents_batch_id", "batch_id", "id"),  # keyset pages of a batch
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(512), doc="The user's id for the document.")
    line: Mapped[int] = mapped_column(Integer, doc="Line of the input file it came from.")
    text: Mapped[str] = mapped_column(Text)
    # JSON, not JSONB, on PostgreSQL too: JSONB cannot hold \u0000, and metadata is kept
    # verbatim.
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[Status] = mapped_column(
        Enum(Status, native_enum=False, length=16), default=Status.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(
        String(255),
        doc="The Celery task that owns it: set by the claim, handed to the re-sent task "
        "by the sweeper or `producer resume`; other tasks skip it while it is RUNNING.",
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    batch: Mapped[Batch] = relationship(back_populates="documents")
    explanations: Mapped[list[Explanation]] = relationship(back_populates="document")


class Model(Base):
    """A classifier as it was on disk when it explained something."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "sha256", name="uq_models_name_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), doc="SHA-256 over the weight files.")
    labels: Mapped[list[Any]] = mapped_column(doc="Label names by class index.")
    info: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="Architecture, versions.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunSettings(Base):
    """What the rows of a run repeat, stored once: the method's parameters, the settings
    of the run that change stored numbers, and the worker and device that explained
    them; an explanation refers to its set by id (issue 16: the row within 1 KB)."""

    __tablename__ = "run_settings"
    __table_args__ = (UniqueConstraint("key", name="uq_run_settings_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), doc="SHA-256 of the canonical set (db.settings).")
    params: Mapped[dict[str, Any]] = mapped_column()
    execution: Mapped[dict[str, Any] | None] = mapped_column(NullableJson)
    worker: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(64))


def _setting(column: Any, settings_id: Any) -> Any:
    """A column of the row's settings, read with the row by a primary-key probe (not
    deferred: a row read in a session is complete after it closes, as before)."""
    return column_property(
        select(column).where(RunSettings.id == settings_id).correlate_except(RunSettings)
        .scalar_subquery()
    )  # fmt: skip


class Explanation(Base):
    """One method's attribution of one document by one model, with its provenance."""

    __tablename__ = "explanations"
    __table_args__ = (
        UniqueConstraint(
            "document_id", "model_id", "method", "params_key", name="uq_explanations_identity"
        ),
        # keyset pages of a batch by confidence (`results list --order -confidence`); a
        # batch's rows in document order (export, audit) are read along the identity
        # index instead (db.queries.in_batch)
        Index("ix_explanations_batch_order", "batch_id", "method", "confidence", "document_id"),
        # a model's first and last use (`results models`): two probes, not a scan
        Index("ix_explanations_model_created", "model_id", "created_at"),
        # pages of all batches by confidence: read down this index, not sorted
        Index("ix_explanations_confidence", "confidence", "document_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    batch_id: Mapped[str | None] = mapped_column(
        String(36), doc="The document's batch, repeated here so a batch's rows page by keyset."
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    method: Mapped[str] = mapped_column(String(64))
    params_key: Mapped[str] = mapped_column(String(64), doc="Hash of the canonical params.")
    settings_id: Mapped[int] = mapped_column(
        ForeignKey("run_settings.id", name="fk_explanations_settings_id"),
        doc="Parameters, execution, worker and device.",
    )
    # read-only here, written through ``settings_id`` (db.settings)
    params: Mapped[dict[str, Any]] = _setting(RunSettings.params, settings_id)
    execution: Mapped[dict[str, Any] | None] = _setting(RunSettings.execution, settings_id)
    worker: Mapped[str] = _setting(RunSettings.worker, settings_id)
    device: Mapped[str] = _setting(RunSettings.device, settings_id)
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float, doc="Probability of the predicted label.")
    probabilities: Mapped[dict[str, Any]] = mapped_column(CompactDict)
    tokens: Mapped[list[Any]] = mapped_column(TokenList)
    attributions: Mapped[list[Any]] = mapped_column(Float32Array, doc="Score per token.")
    offsets: Mapped[list[Any] | None] = mapped_column(
        DeltaIntArray, doc="Character start and end of each token in the text, flattened."
    )
    words: Mapped[list[Any] | None] = mapped_column(
        DeltaIntArray, doc="The word (whitespace-delimited span) of each token; -1 special."
    )
    convergence_delta: Mapped[float | None] = mapped_column(Float)
    relative_gap: Mapped[float | None] = mapped_column(
        Float, doc="|convergence_delta| / |f(x) - f(baseline)|: the completeness check."
    )
    steps: Mapped[int | None] = mapped_column(Integer, doc="Integration steps actually taken.")
    timings: Mapped[dict[str, Any]] = mapped_column(
        CompactDict, default=dict, doc="Seconds per stage."
    )
    quality: Mapped[dict[str, Any] | None] = mapped_column(
        CompactDict,
        doc="Faithfulness: comprehensiveness, sufficiency and their random baselines.",
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(
        NullableJson, doc="Method-specific output, e.g. attention's cls_attention."
    )
    windows: Mapped[int] = mapped_column(
        Integer, default=1, server_default="1", doc="Overlapping windows the text was cut into."
    )
    digest: Mapped[str | None] = mapped_column(
        String(64),
        doc="SHA-256 over what the row asserts (db.digest), computed as it is written; "
        "null only for a row written around db.writes, which `verify --integrity` names.",
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    document: Mapped[Document] = relationship(back_populates="explanations")
    model: Mapped[Model] = relationship()


SETTINGS = ("params", "execution", "worker", "device")  # an explanation's, in run_settings


def explanation_columns() -> list[ColumnElement[Any]]:
    """An explanation's columns as its readers know them: its own, and its settings'
    (``params``, ``execution``, ``worker``, ``device``); select them with
    ``.join(RunSettings, RunSettings.id == Explanation.settings_id)``."""
    own = [c for c in Explanation.__table__.columns if c.name != "settings_id"]
    return [*own, *(RunSettings.__table__.c[name] for name in SETTINGS)]


def explanation_values(exp: Explanation) -> dict[str, Any]:
    """A loaded explanation's values by those names (what ``db.records.digest_content``
    reads)."""
    return {column.name: getattr(exp, column.name) for column in explanation_columns()}


class Seal(Base):
    """A finished batch's rows, sealed: the Merkle root of their digests (db.digest), how
    many they were and when; one per batch. Append-only on PostgreSQL (triggers)."""

    __tablename__ = "seals"
    __table_args__ = (UniqueConstraint("batch_id", name="uq_seals_batch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"))
    root: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[str] = mapped_column(String(64), doc="db.digest.ALGORITHM")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SealRow(Base):
    """One sealed row, in seal order: which explanation, of which document and method,
    with which digest; what names a row removed or added since the seal."""

    __tablename__ = "seal_rows"
    __table_args__ = (
        UniqueConstraint("seal_id", "explanation_id", name="uq_seal_rows_explanation"),
    )

    seal_id: Mapped[int] = mapped_column(ForeignKey("seals.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # no foreign key: the row may be gone, which is what the seal is there to say
    explanation_id: Mapped[int] = mapped_column(Integer)
    document_id: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))


class Representation(Base):
    """A document's pooled representation under one model: what ``results similar``
    compares. Stored once per (document, model), whatever the methods."""

    __tablename__ = "representations"
    __table_args__ = (
        UniqueConstraint("document_id", "model_id", name="uq_representations_identity"),
        Index("ix_representations_model", "model_id", "list_id"),  # `similar`'s lists
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    vector: Mapped[list[Any]] = mapped_column(Float32Array, doc="The pooled vector.")
    norm: Mapped[float] = mapped_column(Float, doc="Euclidean norm, so cosine is one dot.")
    list_id: Mapped[int | None] = mapped_column(
        Integer, doc="The nearest centroid of the model's vector index (null: not indexed)."
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Agreement(Base):
    """How far two methods rank one document's tokens alike (Spearman), one row per
    pair with ``method_a < method_b``, so agreement is a plain SQL aggregate."""

    __tablename__ = "agreements"
    __table_args__ = (
        UniqueConstraint(
            "document_id", "model_id", "method_a", "method_b", name="uq_agreements_identity"
        ),
        Index("ix_agreements_methods", "method_a", "method_b"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    method_a: Mapped[str] = mapped_column(String(64))
    method_b: Mapped[str] = mapped_column(String(64))
    spearman: Mapped[float | None] = mapped_column(
        Float, doc="Rank correlation; null when a ranking is constant."
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VectorList(Base):
    """A centroid of a model's vector index: ``similar`` scores only the vectors of the
    lists nearest the query (an inverted-file index, where pgvector is not installed)."""

    __tablename__ = "vector_lists"
    __table_args__ = (UniqueConstraint("model_id", "list_id", name="uq_vector_lists_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    list_id: Mapped[int] = mapped_column(Integer)
    centroid: Mapped[list[Any]] = mapped_column(Float32Array)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


ALL_BATCHES = "*"  # the scope of the corpus-wide rows of the aggregates


class TokenStat(Base):
    """Top tokens without scanning the corpus: per scope (a batch, or ``*`` for all),
    model, method, predicted label and word, the sum of its scores, its occurrences and
    the documents it is in; kept up to date as explanations are written."""

    __tablename__ = "token_stats"

    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), primary_key=True)
    word: Mapped[str] = mapped_column(String(200), primary_key=True)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    occurrences: Mapped[int] = mapped_column(Integer, default=0)
    documents: Mapped[int] = mapped_column(Integer, default=0)


# The faithfulness metrics as the aggregates name them (db.quality.METRICS, abbreviated).
QUALITY_COLUMNS = {
    "comprehensiveness": "comp",
    "sufficiency": "suff",
    "random_comprehensiveness": "rcomp",
    "random_sufficiency": "rsuff",
}


class QualityStat(Base):
    """The quality summary without scanning the corpus: per scope, model and method, the
    rows, and per metric its count, sum and sum of squares; and how often the method beat
    its random ranking, among the rows where both are known."""

    __tablename__ = "quality_stats"

    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    measured: Mapped[int] = mapped_column(Integer, default=0)
    comp_n: Mapped[int] = mapped_column(Integer, default=0)
    comp_sum: Mapped[float] = mapped_column(Float, default=0.0)
    comp_sq: Mapped[float] = mapped_column(Float, default=0.0)
    suff_n: Mapped[int] = mapped_column(Integer, default=0)
    suff_sum: Mapped[float] = mapped_column(Float, default=0.0)
    suff_sq: Mapped[float] = mapped_column(Float, default=0.0)
    rcomp_n: Mapped[int] = mapped_column(Integer, default=0)
    rcomp_sum: Mapped[float] = mapped_column(Float, default=0.0)
    rcomp_sq: Mapped[float] = mapped_column(Float, default=0.0)
    rsuff_n: Mapped[int] = mapped_column(Integer, default=0)
    rsuff_sum: Mapped[float] = mapped_column(Float, default=0.0)
    rsuff_sq: Mapped[float] = mapped_column(Float, default=0.0)
    beats_comp: Mapped[int] = mapped_column(Integer, default=0)
    beats_comp_known: Mapped[int] = mapped_column(Integer, default=0)
    beats_suff: Mapped[int] = mapped_column(Integer, default=0)
    beats_suff_known: Mapped[int] = mapped_column(Integer, default=0)


class AgreementStat(Base):
    """Agreement between two methods without scanning the corpus: per scope, model and
    pair, the count, sum and sum of squares of their Spearman correlation."""

    __tablename__ = "agreement_stats"

    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    method_a: Mapped[str] = mapped_column(String(64), primary_key=True)
    method_b: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    total_sq: Mapped[float] = mapped_column(Float, default=0.0)
