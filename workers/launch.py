"""One worker per GPU, started for you: ``python -m workers.launch --gpus all``.

Each worker is ``celery -A workers worker --concurrency=1`` with ``CUDA_VISIBLE_DEVICES``
set to its one GPU (so it sees it as ``cuda:0``) and a node name of its own
(``<model>-gpu<N>@<host>``); on a machine without GPUs (``--gpus cpu``, or ``all`` where
none is visible) it starts one CPU worker. SIGTERM, SIGINT and SIGQUIT are forwarded to
every worker (SIGTERM: Celery's warm shutdown, the task in hand finishes first). When
one worker exits on its own, the others are stopped too and the launcher exits with
its status, so that whatever supervises the launcher (systemd, compose) restarts the
set. With EXPLAINQ_METRICS_PORT=P the launcher serves the metrics of all its workers on
P, added up (one multiprocess directory for the set, emptied at start, removed at
exit): one scrape target per host however many GPUs it has.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from contract.settings import Settings, settings_or_exit
from contract.tasks import model_name, queue_for_model
from workers import metrics

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclass(frozen=True)
class Plan:
    """One worker to start: its node name, its GPU (None: the CPU) and its environment."""

    name: str
    gpu: str | None
    env: dict[str, str]
    argv: list[str]


def visible_gpus() -> list[str]:
    """The GPUs this machine shows: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list
    (no torch, so the launcher never touches CUDA itself); none without a driver."""
    if (visible := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def parse_gpus(spec: str) -> list[str]:
    """``all``, ``cpu`` or a comma-separated list of GPU indices (or UUIDs)."""
    if spec == "cpu":
        return []
    if spec == "all":
        return visible_gpus()
    gpus = [gpu.strip() for gpu in spec.split(",") if gpu.strip()]
    if not gpus:
        raise SystemExit(f"error: --gpus {spec!r}: give all, cpu or indices such as 0,1")
    return gpus


def plan(
    gpus: list[str], model: str, host: str, extra: list[str], metrics_dir: str | None = None
) -> list[Plan]:
    """The workers to start, with their environments; ``extra`` goes to each celery.
    ``metrics_dir``: they record there, and serve nothing themselves."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("PROMETHEUS_MULTIPROC_DIR", "EXPLAINQ_METRICS_PORT")}  # fmt: skip
    base["EXPLAINQ_MODEL"] = model
    if metrics_dir is not None:
        base |= metrics.recording_env(metrics_dir)
    plans = []
    for gpu in gpus or [None]:
        name = f"{model_name(model)}-{'cpu' if gpu is None else f'gpu{gpu}'}@{host}"
        env = dict(base)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency=1",
                "--events", f"--hostname={name}", "--loglevel=INFO", *extra]  # fmt: skip
        plans.append(Plan(name, gpu, env, argv))
    return plans


def describe(item: Plan) -> str:
    shown = {k: item.env[k] for k in ("CUDA_VISIBLE_DEVICES", "EXPLAINQ_MODEL")
             if k in item.env}  # fmt: skip
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in shown.items()),
                     *map(shlex.quote, item.argv)])  # fmt: skip


def run(plans: list[Plan]) -> int:
    """Starts the workers, forwards signals, and returns once all have exited."""
    processes = [subprocess.Popen(p.argv, env=p.env, start_new_session=True) for p in plans]
    stopping = False

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    status = 0
    while any(process.poll() is None for process in processes):
        for item, process in zip(plans, processes, strict=True):
            code = process.poll()
            if code is not None and not stopping:  # one died on its own: stop the set
                print(f"launch: worker {item.name} exited with status {code}; stopping the "
                      "others", file=sys.stderr, flush=True)  # fmt: skip
                status = code or 1
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    for item, process in zip(plans, processes, strict=True):
        print(f"launch: worker {item.name} stopped, status {process.returncode}",
              file=sys.stderr, flush=True)  # fmt: skip
    return status or max((abs(p.returncode) for p in processes), default=0)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.launch",
        description="Start one pinned Celery worker per GPU (one CPU worker without GPUs). "
        "Arguments after -- go to every `celery worker`.",
    )
    parser.add_argument("--gpus", default="all", help="all, cpu, or indices such as 0,1")
    parser.add_argument("--model", help="the model the workers serve [EXPLAINQ_MODEL]")
    parser.add_argument("--host", default=socket.gethostname(),
                        help="host part of the node names [this host's name]")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    ours, _, extra = _split(args)
    options = parser.parse_args(ours)
    gpus = parse_gpus(options.gpus)
    if options.gpus == "all" and not gpus:
        print("launch: no GPU visible: one CPU worker", file=sys.stderr)
    settings = settings_or_exit()
    model = options.model or settings.model
    with metrics_served(settings, model, options.dry_run) as directory:
        plans = plan(gpus, model, options.host, extra, directory)
        for item in plans:
            print(f"launch: {describe(item)}", file=sys.stderr, flush=True)
        return 0 if options.dry_run else run(plans)


@contextmanager
def metrics_served(settings: Settings, model: str, dry_run: bool) -> Iterator[str | None]:
    """With EXPLAINQ_METRICS_PORT: a fresh multiprocess directory for the workers, served
    on that port (their value files added up, and the depth of the model's queue)."""
    if settings.metrics_port is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="explainq-metrics-") as directory:
        if not dry_run:
            queues = [queue_for_model(model, settings.queue), settings.queue]
            metrics.serve(settings, directory, queues)
            print(f"launch: metrics of every worker on http://{settings.metrics_host}:"
                  f"{settings.metrics_port}/metrics", file=sys.stderr, flush=True)  # fmt: skip
        yield directory


def _split(args: list[str] | None) -> tuple[list[str], str, list[str]]:
    """The launcher's own arguments, and those after ``--`` for celery."""
    args = list(sys.argv[1:] if args is None else args)
    if "--" in args:
        at = args.index("--")
        return args[:at], "--", args[at + 1 :]
    return args, "", []


if __name__ == "__main__":
    sys.exit(main())
