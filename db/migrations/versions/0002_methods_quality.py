"""methods and their quality: quality, extra and windows on explanations; the
representations and agreements tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quality", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("extra", sa.JSON(), nullable=True))
        # Existing rows were explained in one piece.
        batch_op.add_column(sa.Column("windows", sa.Integer(), server_default="1", nullable=False))

    op.create_table(
        "representations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("vector", sa.JSON(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("document_id", "model_id", name="uq_representations_identity"),
    )
    with op.batch_alter_table("representations", schema=None) as batch_op:
        batch_op.create_index("ix_representations_model", ["model_id"], unique=False)

    op.create_table(
        "agreements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("method_a", sa.String(length=64), nullable=False),
        sa.Column("method_b", sa.String(length=64), nullable=False),
        sa.Column("spearman", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "document_id", "model_id", "method_a", "method_b", name="uq_agreements_identity"
        ),
    )
    with op.batch_alter_table("agreements", schema=None) as batch_op:
        batch_op.create_index("ix_agreements_methods", ["method_a", "method_b"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agreements", schema=None) as batch_op:
        batch_op.drop_index("ix_agreements_methods")
    op.drop_table("agreements")
    with op.batch_alter_table("representations", schema=None) as batch_op:
        batch_op.drop_index("ix_representations_model")
    op.drop_table("representations")
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.drop_column("windows")
        batch_op.drop_column("extra")
        batch_op.drop_column("quality")
