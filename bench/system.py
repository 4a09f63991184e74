"""The whole system for benchmarks: embedded Redis, a fresh SQLite database and a real
worker process, started and warmed before the clock starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import select

from contract.settings import Settings
from db.models import Document, Explanation
from db.session import migrate, session_scope
from producer.embedded_redis import EmbeddedRedis
from producer.progress import counts
from producer.submit import broker_app, submit


class RunningSystem:
    """``with RunningSystem(model) as system: system.explain(texts)``."""

    # Faithfulness is off unless asked (``quality``: EXPLAINQ_QUALITY's true, false or
    # sample:F): most benchmarks compare attribution alone, as the peers compute none.
    def __init__(
        self,
        model: Path,
        n_steps: str = "auto",
        worker_args: tuple[str, ...] = (),
        quality: str = "false",
    ):
        self.model, self.n_steps, self.worker_args = model, n_steps, worker_args
        self.quality = quality
        self.stack = ExitStack()

    def __enter__(self) -> RunningSystem:
        home = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="explainq-bench-")))
        redis = EmbeddedRedis().start()
        self.stack.callback(redis.stop)
        self.settings = Settings(home=home, broker_url=redis.url, model=str(self.model), n_steps=50)
        migrate(self.settings.sqlalchemy_url)
        env = {**os.environ, "EXPLAINQ_HOME": str(home), "EXPLAINQ_BROKER_URL": redis.url,
               "EXPLAINQ_MODEL": str(self.model), "EXPLAINQ_QUALITY": self.quality}  # fmt: skip
        self.log = home / "worker.log"
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency=1",
             "--hostname=bench@localhost", "--loglevel=WARNING", f"--logfile={self.log}",
             "--without-mingle", "--without-gossip", *self.worker_args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.stack.callback(self._stop_worker)
        app = broker_app(self.settings)
        deadline = time.monotonic() + 180
        while not app.control.ping(destination=["bench@localhost"], timeout=0.5):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench worker did not start: {self.log.read_text()[-2000:]}")
        self.explain(["warm up the worker process"])  # model loaded, first pass done
        return self

    def explain(self, texts: list[str], poll: float = 0.1) -> list[Explanation]:
        """Submits ``texts`` and returns their explanations once the last row is written."""
        path = Path(self.settings.home_dir) / f"batch-{time.monotonic_ns()}.jsonl"
        path.write_text(
            "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
        )
        params = {"n_steps": self.n_steps}
        batch = submit(path, self.settings, params=params).batch_id
        url = self.settings.sqlalchemy_url
        while sum(n for status, n in counts(url, batch).items() if status.terminal) < len(texts):
            time.sleep(poll)
        with session_scope(url) as session:
            rows = session.execute(
                select(Document.external_id, Explanation)
                .join(Explanation, Explanation.document_id == Document.id)
                .where(Document.batch_id == batch)
            ).all()
        by_id = {int(external_id): explanation for external_id, explanation in rows}
        return [by_id[i] for i in range(len(texts))]

    def _stop_worker(self) -> None:
        self.worker.terminate()
        try:
            self.worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.worker.kill()

    def __exit__(self, *_: object) -> None:
        self.stack.close()
