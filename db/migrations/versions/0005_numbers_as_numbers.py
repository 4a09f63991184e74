"""the store at corpus scale: scores and vectors as float32 bytes, token offsets and
words, JSONB on PostgreSQL, the batch on each explanation, keyset indexes, a vector
index and the aggregates behind top tokens, quality and agreement

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:00:00.000000

Existing rows are converted in place, in slices, and the aggregates are computed from
them (``db.aggregates.rebuild``); the downgrade converts the numbers back to JSON.
"""

import json
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.arrays import Float32Array, Int32Array, pack, unpack

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SLICE = 2000
# JSON columns that become JSONB on PostgreSQL. Not documents.meta: JSONB cannot hold
# \u0000, and the producer keeps a document's metadata verbatim.
JSON_COLUMNS = {
    "batches": ("methods", "params"),
    "models": ("labels", "info"),
    "explanations": (
        "params",
        "probabilities",
        "tokens",
        "timings",
        "quality",
        "extra",
        "execution",
    ),
}


def _convert(table: str, column: str, new: str, encode: Callable[[object], object]) -> None:
    """Fills ``new`` from ``column`` row by row, in slices of ids."""
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.text(f"SELECT id, {column} FROM {table} WHERE id > :last ORDER BY id LIMIT :n"),
            {"last": last, "n": SLICE},
        ).all()
        if not rows:
            return
        connection.execute(
            sa.text(f"UPDATE {table} SET {new} = :value WHERE id = :id"),
            [{"id": row[0], "value": encode(row[1])} for row in rows],
        )
        last = rows[-1][0]


def _floats(value: object) -> bytes:
    values = json.loads(value) if isinstance(value, str) else value
    return pack([float(x) for x in values or []], "f")


def _json_floats(value: object) -> str:
    return json.dumps(unpack(bytes(value), "f"))  # type: ignore[arg-type]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for table, columns in JSON_COLUMNS.items():
            for column in columns:
                op.alter_column(table, column, type_=postgresql.JSONB(),
                                postgresql_using=f"{column}::jsonb")  # fmt: skip
    # numbers as float32 bytes: a new column, filled, then renamed over the old one
    for table, column in (("explanations", "attributions"), ("representations", "vector")):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column(f"{column}_f32", sa.LargeBinary(), nullable=True))
        _convert(table, column, f"{column}_f32", _floats)
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column(column)
            batch_op.alter_column(f"{column}_f32", new_column_name=column, nullable=False)

    with op.batch_alter_table("explanations") as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("offsets", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("words", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE explanations SET batch_id = "
        "(SELECT batch_id FROM documents WHERE documents.id = explanations.document_id)"
    )
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.create_index(
            "ix_explanations_batch_order", ["batch_id", "method", "confidence", "document_id"]
        )
        batch_op.create_index("ix_explanations_batch_document", ["batch_id", "document_id"])
        # top tokens read the aggregates now; the batch indexes cover label filters
        batch_op.drop_index("ix_explanations_label")
    with op.batch_alter_table("documents") as batch_op:
        batch_op.create_index("ix_documents_batch_id", ["batch_id", "id"])

    with op.batch_alter_table("representations") as batch_op:
        batch_op.add_column(sa.Column("list_id", sa.Integer(), nullable=True))
        batch_op.drop_index("ix_representations_model")
        batch_op.create_index("ix_representations_model", ["model_id", "list_id"])
    op.create_table(
        "vector_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("centroid", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "list_id", name="uq_vector_lists_identity"),
    )
    _create_aggregates()
    from db.aggregates import rebuild  # the same counting as the workers' writes

    rebuild(op.get_bind(), EXPLANATIONS)


# The columns the aggregates count, typed as this migration leaves them.
EXPLANATIONS = sa.table(
    "explanations",
    *(sa.column(name, sa.Integer()) for name in ("id", "document_id", "model_id")),
    *(sa.column(name, sa.String()) for name in ("method", "label")),
    sa.column("confidence", sa.Float()),
    sa.column("tokens", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("attributions", Float32Array()),
    sa.column("quality", sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql")),
    sa.column("offsets", Int32Array()),
    sa.column("words", Int32Array()),
)  # fmt: skip


def _create_aggregates() -> None:
    def keys() -> list[sa.Column]:
        return [
            sa.Column("scope", sa.String(length=36), nullable=False),
            sa.Column("model_id", sa.Integer(), nullable=False),
        ]

    op.create_table(
        "token_stats",
        *keys(),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("word", sa.String(length=200), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("scope", "model_id", "method", "label", "word"),
    )
    op.create_table(
        "quality_stats",
        *keys(),
        sa.Column("method", sa.String(length=64), nullable=False),
        *[sa.Column(name, sa.Integer(), nullable=False) for name in ("rows", "measured")],
        *[
            sa.Column(f"{short}_{part}", kind, nullable=False)
            for short in ("comp", "suff", "rcomp", "rsuff")
            for part, kind in (("n", sa.Integer()), ("sum", sa.Float()), ("sq", sa.Float()))
        ],
        *[
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("beats_comp", "beats_comp_known", "beats_suff", "beats_suff_known")
        ],
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("scope", "model_id", "method"),
    )
    op.create_table(
        "agreement_stats",
        *keys(),
        sa.Column("method_a", sa.String(length=64), nullable=False),
        sa.Column("method_b", sa.String(length=64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("total_sq", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("scope", "model_id", "method_a", "method_b"),
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in ("agreement_stats", "quality_stats", "token_stats", "vector_lists"):
        op.drop_table(table)
    with op.batch_alter_table("representations") as batch_op:
        batch_op.drop_index("ix_representations_model")
        batch_op.create_index("ix_representations_model", ["model_id"])
        batch_op.drop_column("list_id")
    with op.batch_alter_table("documents") as batch_op:
        batch_op.drop_index("ix_documents_batch_id")
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.create_index("ix_explanations_label", ["label"])
        batch_op.drop_index("ix_explanations_batch_document")
        batch_op.drop_index("ix_explanations_batch_order")
        batch_op.drop_column("words")
        batch_op.drop_column("offsets")
        batch_op.drop_column("batch_id")
    for table, column in (("explanations", "attributions"), ("representations", "vector")):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column(f"{column}_json", sa.JSON(), nullable=True))
        _convert(table, column, f"{column}_json", _json_floats)
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column(column)
            batch_op.alter_column(f"{column}_json", new_column_name=column, nullable=False)
    if postgres:
        for table, columns in JSON_COLUMNS.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.JSON(), postgresql_using=f"{column}::json")
