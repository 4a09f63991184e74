"""The invariants of docs/ARCHITECTURE.md that hold by absence: each checked in a fresh
interpreter, since an import anywhere in the test process would hide a missing one."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_after(statement: str) -> set[str]:
    """Top-level packages in sys.modules after running ``statement`` in a new Python."""
    show = "import sys; print(' '.join({m.split('.')[0] for m in sys.modules}))"
    code = f"{statement}; {show}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        # the contract: nothing of ours, and none of the heavy libraries
        ("import contract.settings, contract.tasks, contract.caps, contract.model_path, "
         "contract.replay",
         {"producer", "workers", "db", "results", "torch", "celery", "sqlalchemy"}),
        # the data layer: only the contract below it
        ("import db.models, db.writes, db.ownership, db.batches, db.queries, db.quality, "
         "db.similar, db.session, db.records, db.errors, db.audit, db.seals, db.model_usage, "
         "db.bundle, db.digest, db.listing, db.export, db.aggregates, db.vector_index, "
         "db.replay_rows",
         {"producer", "workers", "results", "torch", "celery"}),
        # the read side never needs the workers
        ("import results.cli, results.render, results.render_methods, results.views, "
         "results.replay_cli",
         {"producer", "workers", "torch", "celery"}),
        # the web app: the read side for browsers, never the workers or the producer
        ("import web.app, web.report, web.reads, web.api, web.pages",
         {"producer", "workers", "torch", "celery"}),
        # `--help` of either command line imports neither the database nor the broker,
        # nor the web stack (`results serve` and `report` import it inside)
        ("import results.cli",
         {"sqlalchemy", "celery", "pydantic_settings", "fastapi", "uvicorn", "jinja2", "web"}),
        ("import producer.cli", {"sqlalchemy", "celery", "pydantic_settings", "torch"}),
    ],
)  # fmt: skip
def test_a_layer_imports_nothing_above_it(statement: str, forbidden: set[str]) -> None:
    assert not imported_after(statement) & forbidden
