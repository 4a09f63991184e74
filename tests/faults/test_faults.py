"""Fault injection with counts: every submitted document ends in exactly one terminal
state with exactly one result row, whatever happened to the workers on the way."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from contract.tasks import EXPLAIN_TASK
from db.models import Document, Status
from db.session import session_scope
from producer.submit import broker_app
from tests.faults.counting import accounting, drain, record, submit, wait_for
from tests.faults.poison_app import BROKEN, POISON_PILL
from tests.processes import Deployment

pytestmark = pytest.mark.slow


def test_workers_killed_mid_batch_lose_nothing_and_write_nothing_twice(deployment, write):
    texts = [f"document number {i} about a {'good' if i % 2 else 'bad'} film" for i in range(500)]
    batch_id = submit(deployment, write("many.txt", "\n".join(texts) + "\n"))
    started = time.monotonic()
    steady = deployment.start_worker("steady")
    victim = deployment.start_worker("victim-0")
    kills = 0
    while kills < 5:
        time.sleep(1.5)  # let the victim take and start a chunk
        Deployment.kill(victim)
        kills += 1
        victim = deployment.start_worker(f"victim-{kills}")
    drain(deployment, batch_id)
    drained = time.monotonic() - started
    counts = accounting(deployment, batch_id)
    record("SIGKILL a worker mid-batch", documents=500, kills=kills, **counts,
           seconds_to_drain=round(drained, 1))  # fmt: skip
    assert counts["done"] == 500 and counts["failed"] == 0
    assert counts["missing_rows"] == 0 and counts["duplicate_rows"] == 0
    assert steady.poll() is None


def test_a_poison_document_fails_after_its_attempts_and_the_rest_finish(deployment, write):
    texts = [f"harmless review {i}" for i in range(40)]
    texts[13] = f"this one carries the {POISON_PILL}"
    batch_id = submit(deployment, write("poison.txt", "\n".join(texts) + "\n"))
    started = time.monotonic()
    deployment.start_worker("poisoned", app="tests.faults.poison_app")
    drained = drain(deployment, batch_id)
    counts = accounting(deployment, batch_id)
    record("poison document", documents=40, **counts, seconds_to_drain=round(drained, 1))
    assert counts["done"] == 39 and counts["failed"] == 1
    assert counts["missing_rows"] == 0 and counts["duplicate_rows"] == 0
    with session_scope(deployment.url) as session:
        poison = session.scalars(select(Document).where(Document.status == Status.FAILED)).one()
    assert POISON_PILL in poison.text
    assert poison.attempts == 3 and "gave up after 3 attempts" in poison.error
    assert time.monotonic() - started < 240


def test_a_document_the_engine_fails_on_is_failed_and_its_chunk_completes(deployment, write):
    texts = [f"ordinary review {i}" for i in range(8)]
    texts[3] = f"a {BROKEN} here"
    batch_id = submit(deployment, write("broken.txt", "\n".join(texts) + "\n"))
    deployment.start_worker("fragile", app="tests.faults.poison_app")
    drain(deployment, batch_id)
    counts = accounting(deployment, batch_id)
    assert (counts["done"], counts["failed"], counts["duplicate_rows"]) == (7, 1, 0)
    with session_scope(deployment.url) as session:
        failed = select(Document).where(
            Document.batch_id == batch_id, Document.status == Status.FAILED
        )
        broken = session.scalars(failed).one()
    assert BROKEN in broken.text and "injected engine failure" in broken.error
    assert broken.attempts == 1  # failed by the engine, not by a crash: no retry loop


def test_the_periodic_sweeper_sends_documents_that_were_never_enqueued(deployment, write):
    """Documents registered but never sent (as if Redis lost the messages) are found by
    the sweeper that celery beat runs inside the worker (-B), and finish."""
    from db.batches import NewDocument, create_batch

    with session_scope(deployment.url) as session:
        batch_id, _ = create_batch(
            session, source="lost.jsonl", model=deployment.env["EXPLAINQ_MODEL"],
            methods=["lig"], params={"n_steps": 8}, rejections=[],
            documents=[NewDocument(str(i), i, f"lost document {i}", {}) for i in range(1, 6)],
        )  # fmt: skip
    deployment.env |= {"EXPLAINQ_SWEEP_INTERVAL": "1", "EXPLAINQ_STALE_AFTER": "1"}
    schedule = deployment.home / "beat-schedule"
    deployment.start_worker("sweeping", "--beat", f"--schedule={schedule}")
    deadline = time.monotonic() + 90
    while (counts := accounting(deployment, batch_id))["done"] < 5:
        assert time.monotonic() < deadline, counts
        time.sleep(1)
    assert counts["duplicate_rows"] == 0 and counts["failed"] == 0


# One chunk of SLOW long documents at 1024 fixed steps: about 9 s each on a 2-core
# machine (16 took 140 s in CI), so the chunk runs many times EXPLAINQ_STALE_AFTER.
SLOW = 4


def test_the_sweeper_leaves_a_chunk_that_is_still_running_alone(deployment, write):
    """A chunk that runs for several EXPLAINQ_STALE_AFTER is kept fresh by its worker's
    heartbeat: the sweeper does not re-send it, so the idle second worker never claims it
    and every document is attempted once (without the heartbeat, both would be false)."""
    stale_after = 3  # seconds; the queue's own latency stays well under it
    deployment.env |= {"EXPLAINQ_SWEEP_INTERVAL": "1", "EXPLAINQ_STALE_AFTER": str(stale_after),
                       "EXPLAINQ_N_STEPS": "1024", "EXPLAINQ_CHUNK_SIZE": str(SLOW)}  # fmt: skip
    deployment.start_worker("busy", "--beat", f"--schedule={deployment.home / 'beat'}")
    deployment.start_worker("idle")
    time.sleep(stale_after)  # both pools have loaded the model and swept once
    text = "the film is strictly routine and the actors seem bored by it . " * 16
    path = write("slow.txt", "".join(f"{i} {text}\n" for i in range(SLOW)))
    started = time.monotonic()
    summary = deployment.submit(path)  # one chunk: one worker runs it, one idles
    seconds = time.monotonic() - started
    assert seconds > 2 * stale_after, f"the chunk took {seconds:.1f} s: too short a test"
    counts = accounting(deployment, summary["batch_id"])
    assert (counts["done"], counts["duplicate_rows"]) == (SLOW, 0), counts
    with session_scope(deployment.url) as session:
        attempts = session.scalars(
            select(Document.attempts).where(Document.batch_id == summary["batch_id"])
        ).all()
    assert attempts == [1] * SLOW
    logs = "".join((deployment.home / f"{name}.log").read_text() for name in ("busy", "idle"))
    assert "sweeper re-sent" not in logs


def test_a_copy_of_a_running_chunk_is_skipped_not_computed_twice(deployment, write):
    """A second message for a chunk that a worker is running (the sweeper's copy of a
    message that waited in the queue past EXPLAINQ_STALE_AFTER, say) reaches the idle
    second worker, which skips the documents the first run owns: every document is
    attempted and computed once (before task owners, the copy ran them all again)."""
    deployment.env |= {"EXPLAINQ_N_STEPS": "1024", "EXPLAINQ_CHUNK_SIZE": str(SLOW)}
    deployment.start_worker("first")
    deployment.start_worker("second")
    text = "the film is strictly routine and the actors seem bored by it . " * 16
    batch_id = submit(deployment, write("slow.txt", "".join(f"{i} {text}\n" for i in range(SLOW))))
    in_batch = select(Document.id).where(Document.batch_id == batch_id)
    deadline = time.monotonic() + 60
    while (counts := accounting(deployment, batch_id))["running"] < SLOW:
        assert time.monotonic() < deadline and counts["done"] == 0, counts
        time.sleep(0.2)
    with session_scope(deployment.url) as session:
        ids = sorted(session.scalars(in_batch))
    broker_app(deployment.settings).send_task(EXPLAIN_TASK, args=[batch_id, ids])
    wait_for(deployment, batch_id, SLOW, timeout=240)
    counts = accounting(deployment, batch_id)
    assert (counts["done"], counts["duplicate_rows"]) == (SLOW, 0), counts
    with session_scope(deployment.url) as session:
        attempts = session.scalars(select(Document.attempts).where(Document.id.in_(ids))).all()
    assert attempts == [1] * SLOW
    logs = [(deployment.home / f"{name}.log").read_text() for name in ("first", "second")]
    assert sum(log.count("'done': 0, 'failed': 0, 'skipped': ") for log in logs) == 1, "not skipped"
