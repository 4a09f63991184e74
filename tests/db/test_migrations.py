"""The schema comes from the migrations, and the migrations match the models."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from db.arrays import Float32Array, Int32Array
from db.models import (
    Base,
    Explanation,
    Json,
    NullableJson,
    QualityStat,
    Representation,
    RunSettings,
    TokenStat,
    explanation_values,
    utcnow,
)
from db.session import alembic_config, get_engine, migrate, session_scope


def test_migrations_create_exactly_the_models_schema(database_url):
    migrate(database_url)
    migrate(database_url)  # idempotent
    with get_engine(database_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_downgrade_to_nothing_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(get_engine(url)).get_table_names()) == {"alembic_version"}
    migrate(url)
    assert {"batches", "documents", "explanations", "models", "rejections"} <= set(
        inspect(get_engine(url)).get_table_names()
    )


ROWS_0001 = (
    "INSERT INTO batches (id, source, model, methods, params, submitted, rejected, created_at)"
    " VALUES ('b', 's', 'm', '[]', '{}', 1, 0, CURRENT_TIMESTAMP)",
    "INSERT INTO documents (id, batch_id, external_id, line, text, meta, status, attempts,"
    " created_at, updated_at) VALUES (1, 'b', 'x', 1, 't', '{}', 'DONE', 1, CURRENT_TIMESTAMP,"
    " CURRENT_TIMESTAMP)",
    "INSERT INTO models (id, name, path, sha256, labels, info, created_at)"
    " VALUES (1, 'm', '/m', 'h', '[]', '{}', CURRENT_TIMESTAMP)",
    "INSERT INTO explanations (document_id, model_id, method, params_key, params, label,"
    " confidence, probabilities, tokens, attributions, truncated, worker, device, timings,"
    " created_at) VALUES (1, 1, 'lig', 'k', '{}', 'pos', 0.9, '{}', '[]', '[]', false, 'w',"
    " 'cpu', '{}', CURRENT_TIMESTAMP)",
)


def test_0002_keeps_existing_explanations_and_downgrades_to_0001(fresh_database_url):
    url = fresh_database_url
    migrate(url, "0001")
    with get_engine(url).begin() as connection:
        for statement in ROWS_0001:
            connection.execute(text(statement))
    migrate(url)
    with get_engine(url).connect() as connection:
        windows, quality = connection.execute(
            text("SELECT windows, quality FROM explanations")
        ).one()
    assert (windows, quality) == (1, None)  # explained in one piece, quality unknown
    assert {"representations", "agreements"} <= set(inspect(get_engine(url)).get_table_names())
    command.downgrade(alembic_config(url), "0001")
    tables = set(inspect(get_engine(url)).get_table_names())
    assert "representations" not in tables and "agreements" not in tables
    columns = {c["name"] for c in inspect(get_engine(url)).get_columns("explanations")}
    assert not {"quality", "extra", "windows"} & columns
    with get_engine(url).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM explanations")).scalar() == 1


def test_0004_retires_truncated_keeping_old_rows_facts_and_downgrades(fresh_database_url):
    url = fresh_database_url
    migrate(url, "0001")
    with get_engine(url).begin() as connection:
        for statement in ROWS_0001:
            connection.execute(text(statement))
        connection.execute(text(ROWS_0001[-1].replace("'lig'", "'saliency'").replace(
            "'[]', false", "'[]', true")))  # fmt: skip
    migrate(url, "0004")
    columns = {c["name"] for c in inspect(get_engine(url)).get_columns("explanations")}
    assert "truncated" not in columns and "execution" in columns
    migrate(url)
    with session_scope(url) as session:
        kept = {e.method: e.execution for e in session.scalars(select(Explanation))}
    assert kept == {"lig": None, "saliency": {"truncated": True}}
    command.downgrade(alembic_config(url), "0003")
    with get_engine(url).connect() as connection:
        rows = connection.execute(text("SELECT method, truncated FROM explanations")).all()
    assert {method: bool(flag) for method, flag in rows} == {"lig": False, "saliency": True}


ROWS_0004 = (
    *ROWS_0001[:3],
    "INSERT INTO explanations (document_id, model_id, method, params_key, params, label,"
    " confidence, probabilities, tokens, attributions, worker, device, timings, quality,"
    " windows, created_at) VALUES (1, 1, 'lig', 'k', '{}', 'pos', 0.9, '{\"pos\": 0.9}',"
    " '[\"[CLS]\", \"good\", \"film\", \"[SEP]\"]', '[0.0, 0.5, -0.25, 0.0]', 'w', 'cpu',"
    ' \'{}\', \'{"comprehensiveness": 0.4, "sufficiency": 0.1,'
    ' "random_comprehensiveness": 0.2, "random_sufficiency": 0.3}\', 1, CURRENT_TIMESTAMP)',
    "INSERT INTO representations (document_id, model_id, vector, norm, created_at)"
    " VALUES (1, 1, '[3.0, 4.0]', 5.0, CURRENT_TIMESTAMP)",
)


def test_0005_converts_a_database_written_before_in_place_and_back(fresh_database_url):
    """Rows as the previous release wrote them (numbers as JSON text) come out of the
    upgrade as the same numbers, with their batch and the aggregates computed from them;
    the downgrade gives the JSON back."""
    url = fresh_database_url
    migrate(url, "0004")
    with get_engine(url).begin() as connection:
        for statement in ROWS_0004:
            connection.execute(text(statement))
    migrate(url)
    with session_scope(url) as session:
        (row,) = session.scalars(select(Explanation))
        assert row.attributions == [0.0, 0.5, -0.25, 0.0] and row.batch_id == "b"
        assert session.scalars(select(Representation.vector)).one() == [3.0, 4.0]
        words = dict(session.execute(
            select(TokenStat.word, TokenStat.total).where(TokenStat.scope == "b")
        ).all())  # fmt: skip
        assert words == {"good": 0.5, "film": -0.25}
        (stat,) = session.scalars(select(QualityStat).where(QualityStat.scope == "*"))
        assert (stat.rows, stat.comp_sum, stat.beats_comp, stat.beats_suff) == (1, 0.4, 1, 1)
    command.downgrade(alembic_config(url), "0004")
    with get_engine(url).connect() as connection:
        scores, vector = connection.execute(text(
            "SELECT e.attributions, r.vector FROM explanations e JOIN representations r"
            " ON r.document_id = e.document_id"
        )).one()  # fmt: skip
    decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
    assert (decode(scores), decode(vector)) == ([0.0, 0.5, -0.25, 0.0], [3.0, 4.0])


def test_sqlite_foreign_keys_are_back_on_after_migrating(tmp_path):
    """Migrations switch them off (a batch rebuild would cascade deletes), never the
    connections the application gets afterwards."""
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    migrate(url)
    with get_engine(url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_0006_digests_the_rows_already_there_and_makes_them_append_only(fresh_database_url):
    """Rows written before 0006 get their digest (the writes' own computation), verify
    as intact; on PostgreSQL an UPDATE is refused after it and allowed after the
    downgrade, which drops the triggers, the seals and the column."""
    from sqlalchemy.exc import DBAPIError

    from db.audit import verify_integrity
    from db.records import explanation_digest
    from db.seals import seal_batch

    url = fresh_database_url
    postgres = url.startswith("postgresql")
    migrate(url, "0004")
    with get_engine(url).begin() as connection:
        for statement in ROWS_0004:
            connection.execute(text(statement))
    migrate(url)
    with session_scope(url) as session:
        (row,) = session.scalars(select(Explanation))
        columns = explanation_values(row)
        assert row.digest == explanation_digest(columns, external_id="x", text="t",
                                                model_sha256="h")  # fmt: skip
        assert verify_integrity(session).intact
        assert seal_batch(session, "b").rows == 1
    update = text("UPDATE explanations SET label = 'neg'")
    if postgres:
        try:
            with get_engine(url).begin() as connection:
                connection.execute(update)
            raise AssertionError("the UPDATE was not refused")
        except DBAPIError as error:
            assert "explanations is append-only: UPDATE refused" in str(error)
    command.downgrade(alembic_config(url), "0005")
    tables = set(inspect(get_engine(url)).get_table_names())
    assert not {"seals", "seal_rows"} & tables
    assert "digest" not in {c["name"] for c in inspect(get_engine(url)).get_columns("explanations")}
    with get_engine(url).begin() as connection:
        assert connection.execute(update).rowcount == 1


# Explanations as 0006 left them: what 0007 converts.
EXPLANATIONS_0006 = sa.table(
    "explanations",
    *(sa.column(name, sa.Integer()) for name in ("id", "document_id", "model_id", "windows")),
    *(
        sa.column(n, sa.String())
        for n in ("batch_id", "method", "params_key", "label", "worker", "device", "digest")
    ),
    *(sa.column(n, Json) for n in ("params", "probabilities", "tokens", "timings")),
    *(sa.column(n, NullableJson) for n in ("quality", "extra", "execution")),
    *(sa.column(n, Int32Array()) for n in ("offsets", "words")),
    sa.column("attributions", Float32Array()),
    *(sa.column(n, sa.Float()) for n in ("confidence", "convergence_delta", "relative_gap")),
    sa.column("steps", sa.Integer()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
LIG = {"n_steps": "auto", "nodes": "calibrated", "tolerance": 0.01,
       "node_density": {"rule": "gauss", "alpha": [0.5, 1.25]}}  # fmt: skip
ROWS_0006 = [
    {"method": "lig", "params": LIG, "timings": {"predict": 0.0123, "lig": 1.5e-3,
     "lig_nodes": 33, "fp32_fallback": 1, "oom_retries": 0, "seconds": 2.0},
     "quality": {"comprehensiveness": 0.4, "sufficiency": None,
                 "random_comprehensiveness": -0.2, "random_sufficiency": 0.3},
     "offsets": [0, 0, 0, 4, 5, 9, 9, 10, 0, 0], "words": [-1, 0, 1, 1, -1],
     "execution": {"max_tokens": 512, "window_stride": 128, "quality": True},
     "worker": "celery@host-1", "device": "cuda:0 (NVIDIA H200, bf16)"},
    {"method": "saliency", "params": {"norm": "l2"}, "timings": {}, "quality": None,
     "offsets": None, "words": None, "execution": None, "worker": "w", "device": "cpu"},
    {"method": "attention", "params": {}, "timings": {"custom stage": 1, "nested": [1, 2]},
     "quality": {"comprehensiveness": 70000.5, "other": "kept"}, "offsets": [0, 70000, 3, 9],
     "words": [0, 1], "execution": {"quality": False}, "worker": "celery@host-1",
     "tokens": ["a\x1fb", "", "é"], "probabilities": {"pos": 1, "neg": 0.0},
     "device": "cuda:0 (NVIDIA H200, bf16)", "extra": {"cls_attention": [0.25, 0.75]}},
]  # fmt: skip
ROWS_0006.append({**ROWS_0006[0], "method": "occlusion"})  # the same settings as lig's


def _explanations_0006(connection: Any) -> dict[str, dict[str, Any]]:
    rows = connection.execute(sa.select(EXPLANATIONS_0006)).mappings()
    return {row["method"]: {k: v for k, v in row.items() if k != "created_at"} for row in rows}


def test_0007_stores_repeated_settings_once_keeping_every_value_and_digest(fresh_database_url):
    """Rows written at 0006 and sealed come out of 0007 with the same values (read
    through the models), the same digests, an intact seal, and one run_settings row per
    distinct set; the downgrade gives the 0006 columns back as they were."""
    from db.audit import verify_integrity
    from db.records import explanation_digest
    from db.seals import seal_batch

    url = fresh_database_url
    migrate(url, "0006")
    with get_engine(url).begin() as connection:
        for statement in ROWS_0004[:3]:
            connection.execute(text(statement))
        for i, row in enumerate(ROWS_0006):
            values = {
                "document_id": 1, "model_id": 1, "batch_id": "b", "params_key": f"k{i}",
                "label": "pos", "confidence": 0.75, "probabilities": {"pos": 0.75, "neg": 0.25},
                "tokens": ["[CLS]", "good", "fi", "##lm", "[SEP]"],
                "attributions": [0.0, 0.5, -0.25, 0.125, 0.0], "convergence_delta": 1e-4,
                "relative_gap": None, "steps": 33, "windows": 1, "extra": None, **row,
            }  # fmt: skip
            values["digest"] = explanation_digest(
                values, external_id="x", text="t", model_sha256="h"
            )
            connection.execute(EXPLANATIONS_0006.insert().values(**values, created_at=utcnow()))
        before = _explanations_0006(connection)
    with session_scope(url) as session:
        sealed = seal_batch(session, "b")
    migrate(url)
    with session_scope(url) as session:
        after = {e.method: explanation_values(e) for e in session.scalars(select(Explanation))}
        report = verify_integrity(session, batch="b", line=sealed.line)
        assert report.intact and report.rows == 4
        assert session.scalar(select(func.count()).select_from(RunSettings)) == 3
    for method, row in before.items():
        assert {k: after[method][k] for k in row} == row, method
    command.downgrade(alembic_config(url), "0006")
    with get_engine(url).connect() as connection:
        assert _explanations_0006(connection) == before
    assert "run_settings" not in inspect(get_engine(url)).get_table_names()
