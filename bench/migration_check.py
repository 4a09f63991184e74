"""An existing database converted in place (issue 16, migration 0007), checked.

    .venv/bin/python bench/migration_check.py dump URL OUT   # the 5th batch's export
    .venv/bin/python bench/migration_check.py migrate URL    # seal it, migrate, verify

``dump`` writes the export of the fifth batch (by creation) as JSON lines with sorted
keys, with whichever code runs it: run it with main's code before and this code after,
and compare the files byte for byte. ``migrate`` seals that batch, migrates the database
to the head (timed), then verifies the seal and every row's digest.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from db.audit import verify_integrity
from db.export import export_rows
from db.models import Batch
from db.seals import seal_batch
from db.session import migrate, session_scope


def fifth_batch(url: str) -> str:
    with session_scope(url) as session:
        return session.scalars(select(Batch.id).order_by(Batch.created_at)).all()[4]


def dump(url: str, out: str) -> None:
    batch = fifth_batch(url)
    with session_scope(url) as session, open(out, "w") as handle:
        for record in export_rows(session, batch=batch):
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def migrate_and_verify(url: str) -> None:
    batch = fifth_batch(url)
    with session_scope(url) as session:
        sealed = seal_batch(session, batch)
    start = time.perf_counter()
    migrate(url)
    print(f"migrated in {time.perf_counter() - start:.1f} s")
    with session_scope(url) as session:
        for scope in (batch, None):
            start = time.perf_counter()
            line = sealed.line if scope else None
            report = verify_integrity(session, batch=scope, line=line)
            print(f"verify {scope or 'all'}: intact {report.intact}, {report.rows} rows, "
                  f"{time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    else:
        migrate_and_verify(sys.argv[2])
