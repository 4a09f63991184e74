"""the lig row within 1 KB: parameters, execution, worker and device stored once per set
(run_settings), probabilities, timings and quality as packed numbers, tokens as one
string, offsets and word ids as narrow differences; an index for all batches' rows by
confidence, and none for a batch's rows by document (read along the identity index)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 05:30:00.000000

Existing rows are converted in place, in slices of ids; their digests are of the values
they assert, which read back the same, so they stay valid and seals still verify. On
PostgreSQL the append-only triggers are dropped for the conversion and created again
(0006's SQL, copied: a migration keeps the SQL of its time). The downgrade converts back.
PostgreSQL keeps the old row versions until a VACUUM FULL (or pg_repack) rewrites the table.
"""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from db.arrays import Int32Array
from db.compact import CompactDict, DeltaIntArray, TokenList
from db.models import Json, NullableJson

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SLICE = 2000
APPEND_ONLY = ("explanations", "seals", "seal_rows")
SETTINGS = ("params", "execution", "worker", "device")
# explanation column -> (its type at 0006, its type at 0007)
PACKED = {
    "probabilities": (Json, CompactDict()),
    "tokens": (Json, TokenList()),
    "timings": (Json, CompactDict()),
    "quality": (NullableJson, CompactDict()),
    "offsets": (Int32Array(), DeltaIntArray()),
    "words": (Int32Array(), DeltaIntArray()),
}
NOT_NULL_0006 = {"params", "worker", "device", "timings", "probabilities", "tokens"}

run_settings = sa.table(
    "run_settings",
    sa.column("id", sa.Integer()),
    sa.column("key", sa.String()),
    sa.column("params", Json),
    sa.column("execution", NullableJson),
    sa.column("worker", sa.String()),
    sa.column("device", sa.String()),
)


def _table(columns: dict[str, Any]) -> sa.TableClause:
    return sa.table("explanations", sa.column("id", sa.Integer()),
                    *(sa.column(name, kind) for name, kind in columns.items()))  # fmt: skip


def settings_key(settings: dict[str, Any]) -> str:
    canonical = json.dumps(
        [settings[name] for name in SETTINGS], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


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
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION explainq_append_only()"
        )


def drop_append_only() -> None:
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS explainq_append_only()")


def _slices(query: sa.Select[Any], id_column: Any) -> Any:
    """The rows of ``query`` in slices of ids."""
    connection, last = op.get_bind(), 0
    while True:
        rows = (
            connection.execute(query.where(id_column > last).order_by(id_column).limit(SLICE))
            .mappings()
            .all()
        )
        if not rows:
            return
        yield rows
        last = rows[-1]["id"]


def _settings_ids(sets: dict[str, dict[str, Any]], known: dict[str, int]) -> None:
    """Stores the sets not in ``known`` and adds their ids to it."""
    new = [{"key": key, **values} for key, values in sets.items() if key not in known]
    if not new:
        return
    connection = op.get_bind()
    connection.execute(run_settings.insert(), new)
    query = sa.select(run_settings.c.key, run_settings.c.id).where(
        run_settings.c.key.in_([s["key"] for s in new])
    )
    known.update({key: id_ for key, id_ in connection.execute(query)})


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        drop_append_only()
    op.create_table(
        "run_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("execution", NullableJson, nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key", name="uq_run_settings_key"),
    )
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.add_column(sa.Column("settings_id", sa.Integer(), nullable=True))
        for name in PACKED:
            batch_op.add_column(sa.Column(f"{name}_packed", sa.LargeBinary(), nullable=True))
    settings = {"params": Json, "execution": NullableJson, "worker": sa.String(),
                "device": sa.String()}  # fmt: skip
    old = _table({**settings, **{n: kinds[0] for n, kinds in PACKED.items()}})
    new = _table({"settings_id": sa.Integer(), **{f"{n}_packed": k[1] for n, k in PACKED.items()}})
    update = (
        new.update()
        .where(new.c.id == sa.bindparam("row_id"))
        .values(settings_id=sa.bindparam("s"), **{f"{n}_packed": sa.bindparam(n) for n in PACKED})
    )
    known: dict[str, int] = {}
    for rows in _slices(sa.select(old), old.c.id):
        sets, keys = {}, []
        for row in rows:
            values = {name: row[name] for name in SETTINGS}
            keys.append(key := settings_key(values))
            sets.setdefault(key, values)
        _settings_ids(sets, known)
        op.get_bind().execute(update, [
            {"row_id": row["id"], "s": known[key], **{name: row[name] for name in PACKED}}
            for row, key in zip(rows, keys, strict=True)
        ])  # fmt: skip
    with op.batch_alter_table("explanations") as batch_op:
        for name in (*SETTINGS, *PACKED):
            batch_op.drop_column(name)
        for name in PACKED:
            batch_op.alter_column(f"{name}_packed", new_column_name=name,
                                  nullable=name not in NOT_NULL_0006)  # fmt: skip
        batch_op.alter_column("settings_id", nullable=False)
        batch_op.create_foreign_key(
            "fk_explanations_settings_id", "run_settings", ["settings_id"], ["id"]
        )
        batch_op.create_index("ix_explanations_confidence", ["confidence", "document_id"])
        # a batch's rows in document order are read along the identity index instead: this
        # one, by a random batch id then ascending ids, stood at half-full pages
        batch_op.drop_index("ix_explanations_batch_document")
    if postgres:
        create_append_only()


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        drop_append_only()
    settings = {"params": Json, "execution": NullableJson, "worker": sa.String(length=255),
                "device": sa.String(length=64)}  # fmt: skip
    kinds_0006 = {**settings, **{n: k[0] for n, k in PACKED.items()}}
    with op.batch_alter_table("explanations") as batch_op:
        for name, kind in kinds_0006.items():
            batch_op.add_column(sa.Column(f"{name}_old", kind, nullable=True))
    now = _table({"settings_id": sa.Integer(), **{n: k[1] for n, k in PACKED.items()}})
    old = _table({f"{n}_old": kind for n, kind in kinds_0006.items()})
    update = (
        old.update()
        .where(old.c.id == sa.bindparam("row_id"))
        .values(**{f"{n}_old": sa.bindparam(n) for n in kinds_0006})
    )
    query = sa.select(now, *(run_settings.c[name] for name in SETTINGS)).join(
        run_settings, run_settings.c.id == now.c.settings_id
    )
    for rows in _slices(query, now.c.id):
        op.get_bind().execute(update, [
            {"row_id": row["id"], **{name: row[name] for name in kinds_0006}} for row in rows
        ])  # fmt: skip
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.drop_index("ix_explanations_confidence")
        batch_op.create_index("ix_explanations_batch_document", ["batch_id", "document_id"])
        batch_op.drop_constraint("fk_explanations_settings_id", type_="foreignkey")
        batch_op.drop_column("settings_id")
        for name in PACKED:
            batch_op.drop_column(name)
        for name in kinds_0006:
            batch_op.alter_column(f"{name}_old", new_column_name=name,
                                  nullable=name not in NOT_NULL_0006)  # fmt: skip
    op.drop_table("run_settings")
    if postgres:
        create_append_only()
