"""Keeps a chunk's documents fresh while a worker explains them.

The sweeper (and ``producer resume``) re-sends documents unchanged for
EXPLAINQ_STALE_AFTER seconds. A chunk that takes longer than that (long documents,
many methods, a slow device) would be re-sent while it still runs: another worker would
claim it again, spend its attempts and compute it twice. While a chunk runs, a thread
restarts its documents' staleness clock every third of EXPLAINQ_STALE_AFTER; a worker
that dies stops beating, and its documents go stale and are re-sent as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from db.ownership import touch_running
from db.session import session_scope

log = logging.getLogger(__name__)
MIN_INTERVAL = 0.1  # seconds: a tiny EXPLAINQ_STALE_AFTER must not spin the database


@contextmanager
def heartbeat(url: str, document_ids: list[int], stale_after: float) -> Iterator[None]:
    """Within the block, ``document_ids`` (those still RUNNING) are touched every
    ``stale_after / 3`` seconds from a background thread."""
    interval = max(MIN_INTERVAL, stale_after / 3)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with session_scope(url) as session:
                    touch_running(session, document_ids)
            except Exception as error:  # a missed beat only risks a re-send, never a loss
                log.warning("heartbeat for %d documents failed: %s", len(document_ids), error)

    thread = threading.Thread(target=beat, name="explainq-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
