"""What must be refused is refused: pickled task messages, and a Redis without its
password."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select

from contract.tasks import EXPLAIN_TASK
from db.batches import NewDocument, create_batch
from db.models import Document, Status
from db.session import session_scope
from producer.embedded_redis import EmbeddedRedis
from producer.submit import broker_app

pytestmark = pytest.mark.slow


def statuses(url: str, ids: list[int]) -> set[Status]:
    with session_scope(url) as session:
        return set(session.scalars(select(Document.status).where(Document.id.in_(ids))))


def test_a_pickled_task_message_is_refused_and_the_worker_goes_on(deployment):
    with session_scope(deployment.url) as session:
        batch_id, lengths = create_batch(
            session, source="s.jsonl", model=deployment.env["EXPLAINQ_MODEL"], methods=["lig"],
            params={"n_steps": 8}, rejections=[],
            documents=[NewDocument("p", 1, "sent as pickle", {})],
        )  # fmt: skip
    ids = [doc_id for doc_id, _ in lengths]
    deployment.start_worker("strict")
    app = broker_app(deployment.settings)
    app.send_task(EXPLAIN_TASK, args=[batch_id, ids], serializer="pickle")
    time.sleep(5)
    assert statuses(deployment.url, ids) == {Status.PENDING}  # not executed
    log = (deployment.home / "strict.log").read_text()
    assert "ContentDisallowed" in log or "disallowed" in log.lower()
    app.send_task(EXPLAIN_TASK, args=[batch_id, ids])  # the same task as JSON runs
    deadline = time.monotonic() + 60
    while statuses(deployment.url, ids) != {Status.DONE}:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_redis_with_a_password_refuses_an_unauthenticated_client():
    server = EmbeddedRedis(password="a-long-test-secret").start()
    try:
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("explainq", "x")
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
