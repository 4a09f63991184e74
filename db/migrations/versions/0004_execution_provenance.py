"""provenance of the run on each explanation: explanations.execution; truncated retired

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:00:00.000000

``execution`` records the settings of the run that change stored numbers (max_tokens,
window_stride, quality). ``truncated`` has been false since long documents are explained
in windows: the column goes, and an old row that was truncated keeps that fact as
``execution = {"truncated": true}`` (the downgrade puts it back).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

explanations = sa.table(
    "explanations",
    sa.column("truncated", sa.Boolean()),
    sa.column("execution", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("execution", sa.JSON(), nullable=True))
    op.execute(
        explanations.update()
        .where(explanations.c.truncated.is_(True))
        .values(execution={"truncated": True})
    )
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.drop_column("truncated")


def downgrade() -> None:
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("truncated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, execution FROM explanations WHERE execution IS NOT NULL")
    )
    truncated = [row.id for row in rows if (_as_dict(row.execution) or {}).get("truncated")]
    if truncated:
        connection.execute(
            sa.text("UPDATE explanations SET truncated = :yes WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"yes": True, "ids": truncated},
        )
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.drop_column("execution")


def _as_dict(value: object) -> dict | None:
    import json

    return json.loads(value) if isinstance(value, str) else value  # type: ignore[return-value]
