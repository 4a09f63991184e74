"""A running chunk's heartbeat: its RUNNING documents stay fresh while it runs, so the
sweeper does not re-send them; nothing is touched once it ends."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from db.models import Batch, Document, utcnow
from db.ownership import claim, unfinished
from db.session import migrate, session_scope
from workers.heartbeat import heartbeat

STALE_AFTER = 0.3  # seconds: beats every 0.1 s


def _documents(url: str) -> tuple[int, int]:
    """(running, pending) document ids, both last changed an hour ago."""
    migrate(url)
    with session_scope(url) as session:
        batch = Batch(id=str(uuid.uuid4()), source="s", model="m", methods=["lig"], params={})
        docs = [Document(batch_id=batch.id, external_id=str(i), line=i, text="t", meta={})
                for i in (1, 2)]  # fmt: skip
        session.add_all([batch, *docs])
        session.flush()
        running, pending = (doc.id for doc in docs)
        claim(session, [running], max_attempts=3, task_id="t")
    with session_scope(url) as session:
        for doc in session.query(Document):
            doc.updated_at = utcnow() - timedelta(hours=1)
    return running, pending


def _stale(url: str, older_than: float) -> set[int]:
    with session_scope(url) as session:
        return {doc_id for _, doc_id, _ in unfinished(session, None, older_than)}


def test_running_documents_stay_fresh_while_the_chunk_runs(fresh_database_url):
    url = fresh_database_url
    running, pending = _documents(url)
    assert _stale(url, 60) == {running, pending}
    with heartbeat(url, [running, pending], STALE_AFTER):
        time.sleep(4 * STALE_AFTER)
        assert _stale(url, STALE_AFTER) == {pending}  # a queued document is not ours to touch
    with session_scope(url) as session:
        last = session.get(Document, running).updated_at
    time.sleep(2 * STALE_AFTER)
    with session_scope(url) as session:
        assert session.get(Document, running).updated_at == last  # no beat after the block
    assert running in _stale(url, STALE_AFTER)  # a dead worker's documents go stale again


def test_a_missed_beat_is_logged_and_the_chunk_goes_on(tmp_path, caplog):
    missing = f"sqlite:///{tmp_path}/empty.db"  # no explainq tables: every beat fails
    with (
        caplog.at_level(logging.WARNING, logger="workers.heartbeat"),
        heartbeat(missing, [1], STALE_AFTER),
    ):
        time.sleep(2 * STALE_AFTER)
    assert "heartbeat for 1 documents failed" in caplog.text
