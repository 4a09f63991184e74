"""The aggregates behind corpus-wide views, kept up to date as results are written:
top tokens (``token_stats``), the quality summary (``quality_stats``) and agreement
between methods (``agreement_stats``), each per batch and for all batches (``*``).

Only rows that a write actually inserted are counted (a redelivered task adds nothing),
and every count is an increment in one upsert (``x = x + excluded.x``), so concurrent
writers add up: PostgreSQL locks each aggregate row, SQLite serialises writers. Keys are
sorted within a statement, so two writers lock rows in the same order and never deadlock.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, TableClause, TextClause, select, text
from sqlalchemy.orm import Session

from db.arrays import pack, unpack
from db.models import (
    ALL_BATCHES,
    QUALITY_COLUMNS,
    Agreement,
    AgreementStat,
    Document,
    Explanation,
    QualityStat,
    TokenStat,
)
from db.records import AgreementRecord, ExplanationRecord
from db.words import merge_wordpieces, word_key

Key = tuple[Any, ...]
AGGREGATES = {t.__tablename__: t for t in (TokenStat, QualityStat, AgreementStat)}


def count(
    session: Session,
    explanations: Sequence[ExplanationRecord],
    agreements: Sequence[AgreementRecord],
    texts: Mapping[int, str],
    batches: Mapping[int, str | None],
) -> None:
    """Adds newly stored rows to the aggregates (``texts`` and ``batches`` by document)."""
    tokens: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0, 0])
    quality: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    pairs: dict[Key, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for record in explanations:
        words = _word_scores(record, texts.get(record.document_id))  # once for both scopes
        for scope in _scopes(batches.get(record.document_id)):
            head = (scope, record.model_id, record.method)
            _add_tokens(tokens, (*head, record.label), words)
            _add_quality(quality[head], record.quality)
    for agreement in agreements:
        if agreement.spearman is None or not math.isfinite(agreement.spearman):
            continue
        method_a, method_b = sorted(agreement.methods)
        for scope in _scopes(batches.get(agreement.document_id)):
            sums = pairs[(scope, agreement.model_id, method_a, method_b)]
            sums[0] += 1
            sums[1] += agreement.spearman
            sums[2] += agreement.spearman**2
    _increment(session, TokenStat, ["scope", "model_id", "method", "label", "word"],
               [(k, dict(zip(("total", "occurrences", "documents"), v, strict=True)))
                for k, v in tokens.items()])  # fmt: skip
    _increment(session, QualityStat, ["scope", "model_id", "method"],
               [(k, dict(v)) for k, v in quality.items()])  # fmt: skip
    _increment(session, AgreementStat, ["scope", "model_id", "method_a", "method_b"],
               [(k, dict(zip(("n", "total", "total_sq"), v, strict=True)))
                for k, v in pairs.items()])  # fmt: skip


def _scopes(batch_id: str | None) -> list[str]:
    return [ALL_BATCHES] if batch_id is None else [batch_id, ALL_BATCHES]


def _word_scores(record: ExplanationRecord, text: str | None) -> list[tuple[str, float]]:
    """(counted word, score) of a row's words, its scores as stored (float32), so that
    the sums equal a recomputation from the rows."""
    scores = unpack(pack(record.attributions, "f"), "f")
    words = merge_wordpieces(record.tokens, scores, record.offsets, record.words, text)
    return [(word_key(word), score) for word, score in words]


def _add_tokens(totals: dict[Key, list[float]], head: Key, words: list[tuple[str, float]]) -> None:
    seen = set()
    for key, score in words:
        sums = totals[(*head, key)]
        sums[0] += score
        sums[1] += 1
        if key not in seen:
            seen.add(key)
            sums[2] += 1


def _add_quality(sums: dict[str, float], quality: Mapping[str, float | None] | None) -> None:
    sums["rows"] += 1
    if not quality:
        return
    sums["measured"] += 1
    values = {}
    for metric, short in QUALITY_COLUMNS.items():
        value = quality.get(metric)
        if value is None or not math.isfinite(value):
            continue
        values[short] = value
        sums[f"{short}_n"] += 1
        sums[f"{short}_sum"] += value
        sums[f"{short}_sq"] += value * value
    if "comp" in values and "rcomp" in values:
        sums["beats_comp_known"] += 1
        sums["beats_comp"] += values["comp"] > values["rcomp"]
    if "suff" in values and "rsuff" in values:
        sums["beats_suff_known"] += 1
        sums["beats_suff"] += values["suff"] < values["rsuff"]


def _increment(
    session: Session | Connection,
    table: type[TokenStat | QualityStat | AgreementStat],
    keys: list[str],
    rows: Iterable[tuple[Key, dict[str, float]]],
) -> None:
    from db.writes import dialect_insert  # one place knows the dialects' upserts

    values = [{**dict(zip(keys, key, strict=True)), **_defaults(table, sums)}
              for key, sums in sorted(rows, key=lambda row: row[0])]  # fmt: skip
    if not values:
        return
    connection = session.connection() if isinstance(session, Session) else session
    if connection.dialect.name == "postgresql":
        # One statement over the rows as one JSON parameter, in key order: an executemany
        # would run one statement per row (a chunk of 16 short documents: ~400), and
        # arrays are dumped by psycopg in Python (json.dumps is C).
        kinds = [table.__table__.columns[name].type.python_type for name in values[0]]
        rows = json.dumps([[kind(value) for kind, value in zip(kinds, row.values(), strict=True)]
                           for row in values], allow_nan=False)  # fmt: skip
        connection.execute(_json_upsert(table.__tablename__, tuple(values[0]), tuple(keys)),
                           {"rows": rows})  # fmt: skip
        return
    columns = table.__table__.columns
    statement = dialect_insert(session)(table.__table__)
    added = {
        name: columns[name] + statement.excluded[name] for name in values[0] if name not in keys
    }
    # SQLite: one statement per key (executemany, in-process: no round trips), in order.
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=added), values)


@cache
def _json_upsert(table_name: str, names: tuple[str, ...], keys: tuple[str, ...]) -> TextClause:
    """``INSERT INTO t SELECT ... FROM json_array_elements(:rows) ON CONFLICT (keys) DO
    UPDATE SET c = t.c + excluded.c`` for every counted column; ``:rows`` is a JSON array
    of rows, each the values of ``names`` in order (the array's order: keys sorted, so
    writers lock rows in one order)."""
    from sqlalchemy.dialects import postgresql

    columns = AGGREGATES[table_name].__table__.columns
    dialect = postgresql.dialect()
    typed = ", ".join(
        f"CAST(r->>{i} AS {columns[name].type.compile(dialect=dialect)})"
        for i, name in enumerate(names)
    )
    added = ", ".join(f"{name} = {table_name}.{name} + excluded.{name}"
                      for name in names if name not in keys)  # fmt: skip
    return text(
        f"INSERT INTO {table_name} ({', '.join(names)}) SELECT {typed} "
        "FROM json_array_elements(CAST(:rows AS json)) AS rows(r) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"
    )


def _defaults(table: type[Any], sums: Mapping[str, float]) -> dict[str, float]:
    """Every counted column of ``table``, 0 where this write adds nothing to it."""
    return {name: sums.get(name, 0) for name in _counted(table)}


@cache
def _counted(table: type[Any]) -> tuple[str, ...]:
    keys = {column.name for column in table.__table__.primary_key.columns}
    return tuple(c.name for c in table.__table__.columns if c.name not in keys)


def rebuild(bind: Session | Connection, explanations: TableClause | None = None) -> None:
    """Recomputes every aggregate from the stored rows (the migration that introduced
    them, and a check in tests); streamed, in slices of documents. ``explanations``: the
    table as a migration knows it (its columns typed as they were then)."""
    session = bind if isinstance(bind, Session) else Session(bind=bind)
    for table in (TokenStat, QualityStat, AgreementStat):
        session.execute(table.__table__.delete())
    # The columns counted, not the whole model: migration 0005 runs this on the table as
    # it was then, without the columns added since.
    table = Explanation.__table__ if explanations is None else explanations
    rows = (
        select(*(table.c[c.key] for c in RECOUNTED), Document.text,
               Document.batch_id.label("document_batch"))
        .select_from(table)
        .join(Document, Document.id == table.c.document_id)
        .order_by(table.c.id)
    )  # fmt: skip
    batch: list[ExplanationRecord] = []
    texts: dict[int, str] = {}
    batches: dict[int, str | None] = {}
    for exp in session.execute(rows.execution_options(yield_per=1000)):
        batch.append(_record(exp))
        texts[exp.document_id], batches[exp.document_id] = exp.text, exp.document_batch
        if len(batch) >= 1000:
            count(session, batch, [], texts, batches)
            batch, texts = [], {}
    count(session, batch, [], texts, batches)
    pairs = select(Agreement, Document.batch_id).join(
        Document, Document.id == Agreement.document_id
    )
    chunk: list[AgreementRecord] = []
    for agreement, batch_id in session.execute(pairs.execution_options(yield_per=1000)):
        batches[agreement.document_id] = batch_id
        pair = (agreement.method_a, agreement.method_b)
        chunk.append(
            AgreementRecord(agreement.document_id, agreement.model_id, pair, agreement.spearman)
        )
        if len(chunk) >= 1000:
            count(session, [], chunk, {}, batches)
            chunk = []
    count(session, [], chunk, {}, batches)
    session.flush()


RECOUNTED = (
    Explanation.document_id, Explanation.model_id, Explanation.method, Explanation.label,
    Explanation.confidence, Explanation.tokens, Explanation.attributions, Explanation.quality,
    Explanation.offsets, Explanation.words,
)  # fmt: skip


def _record(exp: Any) -> ExplanationRecord:
    return ExplanationRecord(
        document_id=exp.document_id, model_id=exp.model_id, method=exp.method, params={},
        label=exp.label, confidence=exp.confidence, probabilities={}, tokens=exp.tokens,
        attributions=exp.attributions, worker="", device="", quality=exp.quality,
        offsets=exp.offsets, words=exp.words,
    )  # fmt: skip
