"""The bookkeeping every fault scenario ends with: documents per state, result rows
missing or duplicated, the time to drain, and the figures appended to a report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sqlalchemy import func, select

from db.models import Document, Explanation, Status
from db.session import session_scope
from tests.processes import Deployment

REPORT = os.environ.get("EXPLAINQ_FAULT_REPORT")  # where to append the figures (JSONL)


def accounting(deployment: Deployment, batch_id: str) -> dict[str, int]:
    """Documents per status, and explanation rows missing or duplicated."""
    with session_scope(deployment.url) as session:
        statuses = dict(session.execute(
            select(Document.status, func.count()).where(Document.batch_id == batch_id)
            .group_by(Document.status)
        ).all())  # fmt: skip
        rows = dict(session.execute(
            select(Document.id, func.count(Explanation.id))
            .outerjoin(Explanation, Explanation.document_id == Document.id)
            .where(Document.batch_id == batch_id).group_by(Document.id)
        ).all())  # fmt: skip
        done = set(session.scalars(
            select(Document.id).where(Document.batch_id == batch_id, Document.status == Status.DONE)
        ))  # fmt: skip
    return {
        **{status.value.lower(): statuses.get(status, 0) for status in Status},
        "missing_rows": sum(1 for doc in done if rows[doc] == 0),
        "duplicate_rows": sum(count - 1 for count in rows.values() if count > 1),
    }


def assert_complete(counts: dict[str, int], documents: int, failed: int = 0) -> None:
    """Every document terminal, exactly one result row per DONE document."""
    assert counts["pending"] + counts["running"] == 0, counts
    assert (counts["done"], counts["failed"]) == (documents - failed, failed), counts
    assert counts["missing_rows"] == 0 and counts["duplicate_rows"] == 0, counts


def submit(deployment: Deployment, path: Path) -> str:
    done = deployment.producer("submit", str(path), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["batch_id"]


def drain(
    deployment: Deployment, batch_id: str, timeout: float = 240, stale_after: float = 8
) -> float:
    """Waits until every document is terminal, re-sending what stays unfinished
    (`producer resume`: the database is the source of truth). Returns the seconds."""
    started = time.monotonic()
    while True:
        counts = accounting(deployment, batch_id)
        if counts["pending"] + counts["running"] == 0:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, counts
        deployment.producer("resume", batch_id, "--stale-after", str(stale_after))
        time.sleep(4)


def wait_for(
    deployment: Deployment, batch_id: str, done: int, timeout: float = 120, poll: float = 0.3
) -> None:
    """Waits (without re-sending anything) until ``done`` documents are terminal."""
    deadline = time.monotonic() + timeout
    while (counts := accounting(deployment, batch_id))["done"] + counts["failed"] < done:
        assert time.monotonic() < deadline, counts
        time.sleep(poll)


def database_kind(deployment: Deployment) -> str:
    return deployment.url.split(":", 1)[0].split("+", 1)[0]


def record(scenario: str, **figures: object) -> None:
    """Prints the figures (shown with -s or on failure) and appends them to the report."""
    line = json.dumps({"scenario": scenario, **figures})
    print(line)
    if REPORT:
        with open(REPORT, "a") as handle:
            handle.write(line + "\n")
