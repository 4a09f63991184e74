"""explainq's real processes for benches: workers as ``workers.launch`` starts them (or one
under a CPU-time profile), and ``producer submit`` with its own CPU time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN_PRODUCER = "import sys; from producer.cli import main; sys.argv[0] = 'producer'; main()"
# celery under a CPU-time profile that SIGUSR2 turns on, then off and written to argv[1]
PROFILED = """import cProfile, runpy, signal, sys, time
out, profile, on = sys.argv.pop(1), cProfile.Profile(time.process_time), []
def toggle(*_):
    if on:
        profile.disable()
        profile.dump_stats(out)
        on.clear()
    else:
        on.append(1)
        profile.enable()
signal.signal(signal.SIGUSR2, toggle)
sys.argv[0] = "celery"
runpy.run_module("celery", run_name="__main__", alter_sys=True)
"""


class Workers:
    """``count`` workers, each started as workers.launch starts one, stopped on exit;
    with ``profile``, a solo-pool worker under PROFILED instead."""

    def __init__(self, count: int, env: dict, home: Path, profile: Path | None = None) -> None:
        self.names = [f"ceiling{i}@localhost" for i in range(count)]
        start = [sys.executable, "-m", "celery"]
        if profile:
            start = [sys.executable, "-c", PROFILED, str(profile)]
        self.processes = [
            subprocess.Popen(
                [*start, "-A", "workers", "worker", "--concurrency=1", "--events",
                 f"--hostname={name}", "--loglevel=WARNING", f"--logfile={home / name}.log",
                 *(["--pool=solo"] if profile else [])],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for name in self.names
        ]  # fmt: skip

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def wait_ready(self, broker: str, timeout: float = 300) -> None:
        from celery import Celery

        app = Celery("ceiling", broker=broker)
        deadline = time.monotonic() + timeout
        while len(app.control.ping(destination=self.names, timeout=1.0)) < len(self.names):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"workers did not start; see the logs of {self.names}")

    def signal(self, signum: int) -> None:
        for process in self.processes:
            process.send_signal(signum)

    def stop(self) -> None:
        for process in self.processes:
            with suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
            with suppress(ProcessLookupError):  # the pool child too, whatever happened
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_producer(
    env: dict[str, str], path: Path, method: str, tick: Callable[[], None] = lambda: None
) -> tuple[str, int, float]:
    """``producer submit PATH --json``: the batch id, documents accepted and the process's
    CPU seconds; ``tick`` is called every 0.1 s while it runs."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        argv = [sys.executable, "-c", RUN_PRODUCER, "submit", str(path), "--method", method,
                "--json"]  # fmt: skip
        child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err, text=True)
        while True:  # its own rusage as it is reaped, not the workers'
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            tick()
            time.sleep(0.1)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        summary, errors = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"producer submit {path} exited {child.returncode}: {errors[-2000:]}")
    parsed = json.loads(summary)
    return parsed["batch_id"], parsed["accepted"], usage.ru_utime + usage.ru_stime
