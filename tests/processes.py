"""Starting the real processes of explainq from tests: workers, the producer CLI, Flower."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contract.settings import Settings
from producer.submit import broker_app

BIN = Path(sys.executable).parent


@dataclass
class Deployment:
    """One configuration of the system (broker, database, queue, model) as environment."""

    env: dict[str, str]
    home: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings(
            **{k[9:].lower(): v for k, v in self.env.items() if k.startswith("EXPLAINQ_")}
        )

    @property
    def url(self) -> str:
        return self.settings.sqlalchemy_url

    def producer(
        self, *args: str, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "producer"), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, path: Path, *args: str) -> dict:
        """``producer submit PATH --wait --json``; returns the parsed summary."""
        done = self.producer("submit", str(path), "--wait", "--timeout", "240", "--json", *args)
        assert done.returncode in (0, 3, 4), done.stderr
        return json.loads(done.stdout) | {"returncode": done.returncode, "stderr": done.stderr}

    def start_worker(
        self,
        name: str,
        *extra: str,
        app: str = "workers",
        ready_timeout: float = 120,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Starts a worker; with ``wait`` (the default), returns once it answers a ping."""
        log = self.home / f"{name}.log"
        process = subprocess.Popen(
            [str(BIN / "celery"), "-A", app, "worker", "--concurrency=1", "--events",
             f"--hostname={name}@localhost", "--loglevel=INFO", "--without-mingle",
             "--without-gossip", f"--logfile={log}", *extra],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test can kill it whole
        )  # fmt: skip
        self.workers.append(process)
        if wait:
            self.wait_ready(name, process, ready_timeout)
        return process

    def wait_ready(self, name: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
        """Waits until the worker ``name`` answers a ping (it consumes from the broker)."""
        log = self.home / f"{name}.log"
        broker = broker_app(self.settings)
        deadline = time.monotonic() + timeout
        while not broker.control.ping(destination=[f"{name}@localhost"], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-3000:]}")

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children at once, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.terminate()
        for process in self.workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def explainq_env(**values: str) -> dict[str, str]:
    """The test process's environment without any EXPLAINQ_* of the developer's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINQ_")}
    env.update({f"EXPLAINQ_{k.upper()}": str(v) for k, v in values.items()})
    env["HF_HUB_OFFLINE"] = "1"
    return env


@contextlib.contextmanager
def running_flower(env: dict[str, str], auth: str, *options: str) -> Iterator[str]:
    """Flower (`celery -A workers flower`) with basic auth ``user:password`` on a free
    port, for as long as the block runs; yields its base URL once it answers."""
    from producer.embedded_redis import free_port

    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "celery"), "-A", "workers", "flower", "--address=127.0.0.1", f"--port={port}",
         f"--basic-auth={auth}", *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthcheck", timeout=1)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no flower"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
