"""Queues by model: two models, two workers, batches interleaved. Each worker consumes
only its model's queue, loads its model once, and writes every row of that model."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from contract.tasks import EXPLAIN_TASK, queue_for_model
from db.batches import NewDocument, create_batch
from db.models import Document, Explanation, Model, Status
from db.session import migrate, session_scope
from producer.submit import broker_app
from tests.conftest import build_tiny_model
from tests.processes import BIN, Deployment, explainq_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("other-bert")
    return build_tiny_model(directory, seed=1, labels=("bad", "good"))


@pytest.fixture
def fleet(fresh_database_url, broker_url, tiny_model, other_model, tmp_path):
    """One worker per model on one private queue prefix; yields the two deployments."""
    migrate(fresh_database_url)
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    deployments = [
        Deployment(
            env=explainq_env(
                home=tmp_path,
                database_url=fresh_database_url,
                broker_url=broker_url,
                queue=prefix,
                model=model,
                n_steps=8,
            ),
            home=tmp_path,
        )
        for model in (tiny_model, other_model)
    ]
    try:
        yield deployments
    finally:
        for deployment in deployments:
            deployment.stop()


def wait_done(url: str, batch_ids: list[str], total: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    terminal = Document.status.in_([Status.DONE, Status.FAILED])
    finished = select(Document.id).where(Document.batch_id.in_(batch_ids), terminal)
    while True:
        with session_scope(url) as session:
            if len(session.scalars(finished).all()) == total:
                return
        assert time.monotonic() < deadline, "batches did not finish"
        time.sleep(0.3)


def test_queue_names_are_safe_and_one_per_model():
    assert queue_for_model("/models/minilm-sentiment/", "explainq") == "explainq.minilm-sentiment"
    assert queue_for_model("my model (v2)", "q") == "q.my-model-v2"
    assert queue_for_model("/", "q") == "q.model"
    assert re.fullmatch(r"[\w.-]+", queue_for_model("ünï cødé/../x y", "explainq"))


def test_each_worker_serves_only_its_models_queue(fleet, write, tiny_model, other_model):
    first, second = fleet
    prefix = first.env["EXPLAINQ_QUEUE"]
    lines = "".join(f"review number {i} is fine\n" for i in range(6))
    # No worker yet: the producer says so, and the batch waits in its model's queue.
    early = first.producer("submit", str(write("a0.txt", lines)), "--chunk-size", "2")
    assert early.returncode == 0, early.stderr
    queue = queue_for_model(str(tiny_model), prefix)
    assert f"warning: no live worker consumes queue {queue}" in early.stderr
    names = {}
    for deployment in fleet:
        names[deployment.env["EXPLAINQ_MODEL"]] = name = f"m{uuid.uuid4().hex[:6]}"
        deployment.start_worker(name)
    batches = [early.stdout.strip()]
    for round_ in range(2):  # interleaved: A, B, A, B
        for deployment in fleet:
            done = deployment.producer("submit", str(write(f"b{round_}.txt", lines)),
                                       "--chunk-size", "2")  # fmt: skip
            assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
            batches.append(done.stdout.strip())
    # A chunk on another model's queue (or on the shared one, sent without a route) is
    # forwarded to its model's queue, under the same task id, and run by that model's worker.
    with session_scope(first.url) as session:
        batch_id, made = create_batch(
            session, source="c.txt", model=second.env["EXPLAINQ_MODEL"], methods=["lig"],
            params={"n_steps": 8}, rejections=[],
            documents=[NewDocument(str(i), i, f"unrouted review {i}", {}) for i in range(6)],
        )  # fmt: skip
    batches.append(batch_id)
    ids = [i for i, _ in made]
    broker_app(second.settings).send_task(EXPLAIN_TASK, args=[batch_id, ids], queue=queue)
    wait_done(first.url, batches, 6 * len(batches))

    with session_scope(first.url) as session:
        rows = session.execute(
            select(Model.path, Explanation.worker, Explanation.batch_id).join(
                Explanation, Explanation.model_id == Model.id
            )
        ).all()
    assert len(rows) == 6 * len(batches)
    by_model = Counter(Path(path).name for path, _, _ in rows)
    assert {batch for _, _, batch in rows} == set(batches)
    assert by_model == {tiny_model.name: 18, other_model.name: 18}
    for path, worker, _ in rows:
        model = str(tiny_model if Path(path).name == tiny_model.name else other_model)
        assert worker.startswith(f"{names[model]}@localhost pid "), (path, worker)
    assert len({worker for _, worker, _ in rows}) == 2  # one process per model, throughout
    for deployment in fleet:  # each loaded its own model once, and no other
        log = (deployment.home / f"{names[deployment.env['EXPLAINQ_MODEL']]}.log").read_text()
        assert len(re.findall(r"model \S+ loaded from", log)) == 1, log[-2000:]
        assert f"loaded from {deployment.env['EXPLAINQ_MODEL']}" in log
    first_log = (first.home / f"{names[first.env['EXPLAINQ_MODEL']]}.log").read_text()
    assert f"'forwarded_to': '{queue_for_model(str(other_model), prefix)}'" in first_log
    # A replay goes where the rows' model is held: each model's batch is verified by
    # its own worker (the other would refuse, naming the model it holds).
    for deployment, batch in zip(fleet, batches[1:3], strict=True):
        done = subprocess.run(
            [str(BIN / "results"), "verify", "--batch", batch, "--all", "--json",
             "--timeout", "120"],
            env=deployment.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["summary"]["reproduced"] == 6, done.stdout
