"""tamper evidence: a digest on every explanation, seals of finished batches, and on
PostgreSQL triggers that make explanations and seals append-only

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 03:00:00.000000

``explanations.digest`` is back-filled for the rows already there (db.digest, as the
writes compute it). ``seals`` and ``seal_rows`` hold each sealed batch's Merkle root and
its rows in seal order. On PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE on
``explanations``, ``seals`` and ``seal_rows``; they are created last. A later migration
that must change those tables' rows drops them first and creates them again after
(``drop_append_only`` and ``create_append_only`` below, copied into it: a migration keeps
the SQL of its time). The downgrade drops them before anything else.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.arrays import Float32Array, Int32Array
from db.models import Json, NullableJson

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SLICE = 2000
APPEND_ONLY = ("explanations", "seals", "seal_rows")

# The columns a digest reads, typed as 0005 left them.
explanations = sa.table(
    "explanations",
    sa.column("id", sa.Integer()),
    sa.column("document_id", sa.Integer()),
    sa.column("batch_id", sa.String()),
    sa.column("model_id", sa.Integer()),
    sa.column("method", sa.String()),
    sa.column("params_key", sa.String()),
    sa.column("params", Json),
    sa.column("label", sa.String()),
    sa.column("confidence", sa.Float()),
    sa.column("probabilities", Json),
    sa.column("tokens", Json),
    sa.column("attributions", Float32Array()),
    sa.column("offsets", Int32Array()),
    sa.column("words", Int32Array()),
    sa.column("quality", NullableJson),
    sa.column("extra", NullableJson),
    sa.column("convergence_delta", sa.Float()),
    sa.column("relative_gap", sa.Float()),
    sa.column("steps", sa.Integer()),
    sa.column("windows", sa.Integer()),
    sa.column("execution", NullableJson),
    sa.column("worker", sa.String()),
    sa.column("device", sa.String()),
    sa.column("digest", sa.String()),
)
documents = sa.table(
    "documents", sa.column("id", sa.Integer()), sa.column("external_id", sa.String()),
    sa.column("text", sa.Text()),
)  # fmt: skip
models = sa.table("models", sa.column("id", sa.Integer()), sa.column("sha256", sa.String()))


def create_append_only() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION explainq_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'explainq: % is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION explainq_append_only()"
        )
        # TRUNCATE fires no row trigger: a statement trigger refuses it
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION explainq_append_only()"
        )


def drop_append_only() -> None:
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS explainq_append_only()")


def _backfill() -> None:
    """Every existing row's digest, in slices of ids."""
    from db.records import explanation_digest  # the writes' own computation

    connection = op.get_bind()
    update = (
        explanations.update()
        .where(explanations.c.id == sa.bindparam("row_id"))
        .values(digest=sa.bindparam("row_digest"))
    )
    last = 0
    while True:
        query = (
            sa.select(explanations, documents.c.external_id, documents.c.text, models.c.sha256)
            .join(documents, documents.c.id == explanations.c.document_id)
            .join(models, models.c.id == explanations.c.model_id)
            .where(explanations.c.id > last)
            .order_by(explanations.c.id)
            .limit(SLICE)
        )
        rows = connection.execute(query).mappings().all()
        if not rows:
            return
        digests = [
            {"row_id": row["id"], "row_digest": explanation_digest(
                row, external_id=row["external_id"], text=row["text"], model_sha256=row["sha256"]
            )}
            for row in rows
        ]  # fmt: skip
        connection.execute(update, digests)
        last = rows[-1]["id"]


def upgrade() -> None:
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_explanations_model_created", ["model_id", "created_at"])
    op.create_table(
        "seals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", name="uq_seals_batch"),
    )
    op.create_table(
        "seal_rows",
        sa.Column("seal_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("explanation_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["seal_id"], ["seals.id"]),
        sa.PrimaryKeyConstraint("seal_id", "position"),
        sa.UniqueConstraint("seal_id", "explanation_id", name="uq_seal_rows_explanation"),
    )
    _backfill()
    if op.get_bind().dialect.name == "postgresql":
        create_append_only()  # last: the back-fill above updates explanations


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        drop_append_only()
    op.drop_table("seal_rows")
    op.drop_table("seals")
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.drop_index("ix_explanations_model_created")
        batch_op.drop_column("digest")
