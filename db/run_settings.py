"""What the rows of a run repeat, stored once (``run_settings``): an explanation row
carries the id of its set of parameters, execution settings, worker and device.

A set is found by its key, the SHA-256 of its canonical JSON, and inserted with ON
CONFLICT DO NOTHING, so concurrent writers of the same set share one row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from db.models import SETTINGS, RunSettings


def settings_key(settings: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        [settings[name] for name in SETTINGS], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def attach_settings(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Replaces each row's ``params``, ``execution``, ``worker`` and ``device`` by the id
    of their set (``settings_id``), storing the sets not stored yet."""
    if not rows:
        return
    keyed: dict[str, dict[str, Any]] = {}
    keys = []
    for row in rows:
        settings = {name: row.pop(name) for name in SETTINGS}
        key = settings_key(settings)
        keyed.setdefault(key, {"key": key, **settings})
        keys.append(key)
    ids = settings_ids(connection, list(keyed.values()))
    for row, key in zip(rows, keys, strict=True):
        row["settings_id"] = ids[key]


def settings_ids(connection: Connection, sets: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The ids of ``sets`` (each with its ``key``), inserting the new ones."""
    from db.writes import dialect_insert  # db.writes imports this module

    insert = dialect_insert(connection)(RunSettings.__table__)
    connection.execute(insert.on_conflict_do_nothing(index_elements=["key"]), list(sets))
    query = select(RunSettings.key, RunSettings.id).where(
        RunSettings.key.in_([s["key"] for s in sets])
    )
    return {key: id_ for key, id_ in connection.execute(query)}
