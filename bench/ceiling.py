"""The orchestration ceiling (issue 19): the whole system with a trivially cheap model.

    .venv/bin/python bench/ceiling.py [--documents 5000] [--workers 1,2,4] [--url URL]
        [--broker redis://127.0.0.1:6379/8] [--method saliency] [--chunk-size 16]
        [--gpu-rate 59.7,82.6] [--profile FILE] [--fresh]

A random one-layer BERT (hidden 32, MiniLM's tokenizer, on the CPU, one thread), so that
what is measured is everything but the model: for each worker count, that many real
workers (``celery -A workers worker --concurrency=1`` each, as ``workers.launch`` starts
one per GPU), each warmed (it answers a ping and has stored rows: model loaded, first pass
done), then ``producer submit FILE --json`` of ``--documents`` Rotten Tomatoes sentences
(real words, so the top-token aggregates see a real vocabulary), timed from the
producer's start to the last document terminal in PostgreSQL. Faithfulness is off
(EXPLAINQ_QUALITY=false); the method is saliency (one forward and one backward pass, a
lig-shaped row: a score per token).

CPU per document (``bench.cpu``, from /proc, in 10 ms ticks: run thousands of documents):
the producer (its own rusage, start-up included; and the marginal cost, the median of
three one-document submits taken out as start-up), the workers (their process trees:
consumer and pool child), of which the model (the CPU time of the stages that the rows
time, ``predict`` and the method, measured afterwards in this process on the same
documents on one thread: ``bench.cheap_model``; the rows' own wall-clock figure beside
it, which contention for the CPU inflates), PostgreSQL (this database's backends; the
shared background processes; the whole server, other databases' load included) and Redis
(the server process, whatever else uses it); and how often this database's active
backends were seen waiting on a lock (pg_stat_activity, sampled). The database
(``--url``) is created when missing (``--fresh``: dropped first) and migrated; the
broker's Redis database is flushed first. Prints a table and the ceiling at each
``--gpu-rate`` (documents/s of one GPU worker's model work; default: issue 4's BERT-base
engine at 50 steps on an H100, fp32 and bf16) from the last worker count, and writes
bench/results/ceiling-<date>.json. ``--profile FILE`` adds one run of a solo-pool worker
under a CPU-time cProfile over the timed batch (not in the table).
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from bench.cheap_model import model_cpu_seconds, model_wall_seconds, tiny_model
from bench.cpu import ServerCPU, tree_seconds
from bench.processes import ROOT, Workers, run_producer
from bench.readside import ensure_database
from db.session import migrate
from workers.rt_data import load_sentences

RESULTS = Path(__file__).with_name("results")
console = Console(width=160)


@dataclass
class Row:
    workers: int
    documents: int
    seconds: float
    docs_per_second: float
    producer_ms: float  # per document, start-up included
    producer_marginal_ms: float  # start-up (one-document submits) taken out
    worker_ms: float  # the workers' process trees
    model_ms: float  # of which the model: its stages' CPU time (model_cpu_seconds)
    model_wall_ms: float  # the same stages' wall clock, as the workers' rows record it
    nonmodel_ms: float
    postgres_ms: float  # this database's backends
    postgres_shared_ms: float  # background processes (WAL writer, checkpointer, ...)
    postgres_server_ms: float  # every postgres process: other databases' load included
    redis_ms: float
    lock_waits: float  # share of this database's active backends seen waiting on a lock
    failed: int
    load_average: float


@cache
def sentences() -> tuple[str, ...]:
    return tuple(s.text for s in load_sentences())


def write_documents(path: Path, count: int, seed: int) -> Path:
    """``count`` sentences (about 19 words each), shuffled by ``seed``, repeated if need be."""
    texts = list(sentences())
    random.Random(seed).shuffle(texts)
    with path.open("w") as out:
        for n in range(count):
            out.write(json.dumps({"id": f"d{seed}-{n}", "text": texts[n % len(texts)]}) + "\n")
    return path


def wait_done(
    poll: psycopg.Connection,
    batch: str,
    count: int,
    timeout: float,
    tick: Callable[[], None] = lambda: None,
) -> int:
    """Waits until every document of ``batch`` is DONE or FAILED; returns how many FAILED."""
    deadline = time.monotonic() + timeout
    query = "SELECT status, count(*) FROM documents WHERE batch_id = %s GROUP BY status"
    while True:
        counts = dict(poll.execute(query, [batch]).fetchall())
        if counts.get("DONE", 0) + counts.get("FAILED", 0) >= count:
            return counts.get("FAILED", 0)
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch}: not finished after {timeout} s: {counts}")
        tick()
        time.sleep(0.2)


def warm(env: dict, home: Path, workers: Workers, poll: psycopg.Connection, method: str,
         chunk: int) -> float:  # fmt: skip
    """Until every worker has stored rows; returns the producer's start-up CPU seconds
    (the median of three one-document submits)."""
    startups = []
    for seed in (-1, -2, -3):
        batch, _, seconds = run_producer(env, write_documents(home / "one.jsonl", 1, seed), method)
        wait_done(poll, batch, 1, 300)
        startups.append(seconds)
    batches = []
    query = ("SELECT DISTINCT r.worker FROM explanations e JOIN run_settings r "
             "ON r.id = e.settings_id WHERE e.batch_id = ANY(%s)")  # fmt: skip
    for attempt in range(8):
        path = write_documents(home / "warm.jsonl", 2 * chunk * len(workers.names), attempt)
        batch, accepted, _ = run_producer(env, path, method)
        wait_done(poll, batch, accepted, 300)
        batches.append(batch)
        seen = {worker.split()[0] for (worker,) in poll.execute(query, [batches]).fetchall()}
        if seen >= set(workers.names):
            return statistics.median(startups)
    raise RuntimeError("not every worker took a chunk in 8 warm-up batches")


def redis_process(broker: str) -> psutil.Process:
    import redis

    pid = int(redis.Redis.from_url(broker).info("server")["process_id"])
    if not psutil.pid_exists(pid):
        raise RuntimeError(f"{broker}: redis-server (pid {pid}) is not on this machine")
    return psutil.Process(pid)


class LockWaits:
    """Samples of pg_stat_activity: how often this database's active backends (not the
    caller's) wait on a lock, such as concurrent upserts of the same aggregate rows."""

    QUERY = ("SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) "
             "FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
             "AND pid <> pg_backend_pid()")  # fmt: skip

    def __init__(self, poll: psycopg.Connection, database: str) -> None:
        self.poll, self.database, self.waiting, self.active = poll, database, 0, 0

    def sample(self) -> None:
        waiting, active = self.poll.execute(self.QUERY, [self.database]).fetchone()
        self.waiting, self.active = self.waiting + waiting, self.active + active

    @property
    def share(self) -> float:
        return self.waiting / self.active if self.active else 0.0


@dataclass(frozen=True)
class Setup:
    """What every run shares."""

    env: dict[str, str]
    home: Path
    url: str
    broker: str
    documents: int
    method: str
    chunk: int
    timeout: float


def measure(count: int, run: Setup, profile: Path | None = None) -> Row:
    """One timed batch through ``count`` fresh, warmed workers."""
    env, home, url, method = run.env, run.home, run.url, run.method
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    workers = Workers(count, env, home, profile)
    try:
        workers.wait_ready(run.broker)
        with psycopg.connect(conninfo, autocommit=True) as poll:
            startup = warm(env, home, workers, poll, method, run.chunk)
            path = write_documents(home / "timed.jsonl", run.documents, seed=count)
            own = poll.execute("SELECT pg_backend_pid()").fetchone()[0]
            server = ServerCPU(make_url(url).database or "", exclude=[own])
            redis, load = redis_process(run.broker), os.getloadavg()[0]
            if profile:
                workers.signal(signal.SIGUSR2)
            before = tree_seconds(workers.pids), tree_seconds([redis.pid])
            server.start()
            started = time.perf_counter()
            waits = LockWaits(poll, make_url(url).database or "")

            def tick() -> None:
                server.sample()
                waits.sample()

            batch, accepted, producer = run_producer(env, path, method, tick)
            failed = wait_done(poll, batch, accepted, run.timeout, tick)
            seconds = time.perf_counter() - started
            server.stop()
            worker = tree_seconds(workers.pids) - before[0]
            redis_seconds = tree_seconds([redis.pid]) - before[1]
            if profile:
                workers.signal(signal.SIGUSR2)
                time.sleep(2)  # written by the signal handler, between two bytecodes
    finally:
        workers.stop()
    wall, ms = model_wall_seconds(url, batch), 1000 / accepted
    model = model_cpu_seconds(Path(env["EXPLAINQ_MODEL"]), path, method.split(","), run.chunk)
    values = [producer * ms, (producer - startup) * 1000 / max(accepted - 1, 1), worker * ms,
              model * ms, wall * ms, (worker - model) * ms, server.ours * ms,
              server.shared * ms, server.total * ms, redis_seconds * ms]  # fmt: skip
    return Row(count, accepted, round(seconds, 2), round(accepted / seconds, 1),
               *(round(v, 4) for v in values), round(waits.share, 3), failed,
               round(max(load, os.getloadavg()[0]), 2))  # fmt: skip


def ceiling(r: Row, gpu_rates: list[float]) -> list[str]:
    """What the per-document CPU costs of run ``r`` allow (CPU times tick at 10 ms: a cost
    below a tick over the whole run reads as zero, so run enough documents)."""

    def rate(ms: float) -> str:
        return f"{1000 / ms:,.0f}" if ms > 0 else "unmeasured (run more documents)"

    pg = r.postgres_ms + r.postgres_shared_ms
    lines = [
        f"producer: {rate(r.producer_marginal_ms)} documents/s registered and sent per core "
        f"({r.producer_marginal_ms:.3f} ms/doc marginal; target 0.2)",
        f"worker outside the model: {r.nonmodel_ms:.3f} ms/doc (target 1.0)",
        f"PostgreSQL: {rate(pg)} documents/s per core it spends ({pg:.3f} ms/doc: "
        f"backends {r.postgres_ms:.3f}, background {r.postgres_shared_ms:.3f})",
        f"Redis: {rate(r.redis_ms)} documents/s on its one thread ({r.redis_ms:.3f} ms/doc)",
    ]
    for gpu in gpu_rates:
        fed = 1 / (1 / gpu + r.nonmodel_ms / 1000)  # a worker's CPU work runs between passes
        lines.append(
            f"at {gpu:g} docs/s of model work per GPU worker: {fed:.1f} docs/s each; one "
            f"Redis feeds {rate(r.redis_ms * fed)} GPU workers, each PostgreSQL core "
            f"{rate(pg * fed)}"
        )
    return lines


def show(rows: list[Row]) -> None:
    table = Table(
        title="orchestration ceiling: CPU ms per document (PG db: this database's "
        "backends, bg: background, all: the whole server; locks: backends waiting)"
    )
    for column in ("workers", "docs", "s", "docs/s", "producer", "(marg.)", "workers",
                   "model", "(wall)", "non-model", "PG db", "PG bg", "PG all", "Redis", "locks",
                   "failed", "load"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        costs = (r.producer_ms, r.producer_marginal_ms, r.worker_ms, r.model_ms,
                 r.model_wall_ms, r.nonmodel_ms,
                 r.postgres_ms, r.postgres_shared_ms, r.postgres_server_ms, r.redis_ms)  # fmt: skip
        table.add_row(str(r.workers), str(r.documents), f"{r.seconds:.1f}",
                      f"{r.docs_per_second:.1f}", *(f"{v:.3f}" for v in costs),
                      f"{r.lock_waits:.0%}", str(r.failed), f"{r.load_average:.1f}")  # fmt: skip
    console.print(table)


def top_functions(profile: Path, count: int = 25) -> None:
    import pstats

    console.print(f"[bold]profile[/] {profile} (CPU time, one solo worker, the timed batch)")
    pstats.Stats(str(profile)).sort_stats("tottime").print_stats(count)


def main(
    documents: int = typer.Option(5000, help="Documents per timed submit."),
    workers: str = typer.Option("1,2,4", help="Worker counts, comma-separated."),
    url: str = typer.Option(
        "postgresql+psycopg://127.0.0.1:5432/explainq_ceiling",
        help="PostgreSQL URL (created when missing).",
    ),
    broker: str = typer.Option("redis://127.0.0.1:6379/8", help="Redis URL (flushed first)."),
    method: str = typer.Option("saliency", help="Attribution method(s)."),
    chunk_size: int = typer.Option(16, help="Documents per task (EXPLAINQ_CHUNK_SIZE)."),
    gpu_rate: str = typer.Option("59.7,82.6", help="GPU docs/s per worker, comma-separated."),
    timeout: float = typer.Option(1800, help="Seconds to wait for one timed batch."),
    profile: Path | None = typer.Option(None, help="Also profile one solo worker into FILE."),
    fresh: bool = typer.Option(False, help="Drop and recreate the database first."),
) -> None:
    import redis

    ensure_database(url, fresh)
    migrate(url)
    redis.Redis.from_url(broker).flushdb()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    console.print(f"[bold]ceiling[/] {machine}; {url}; {broker}; {method}, chunks of {chunk_size}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="explainq-ceiling-") as tmp:
        home = Path(tmp)
        model = tiny_model(home / "tiny-bert")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINQ_")}
        env |= {"EXPLAINQ_HOME": str(home), "EXPLAINQ_DATABASE_URL": url,
                "EXPLAINQ_BROKER_URL": broker, "EXPLAINQ_MODEL": str(model),
                "EXPLAINQ_QUEUE": "ceiling", "EXPLAINQ_QUALITY": "false",
                "EXPLAINQ_CHUNK_SIZE": str(chunk_size), "PYTHONPATH": str(ROOT),
                "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
        run = Setup(env, home, url, broker, documents, method, chunk_size, timeout)
        for count in (int(n) for n in workers.split(",")):
            rows.append(measure(count, run))
            console.print(f"  {count} worker(s): {rows[-1].docs_per_second} docs/s")
        if profile:
            profiled = measure(1, run, profile.resolve())
            console.print(f"  profiled solo worker: {profiled.worker_ms:.3f} ms/doc (inflated)")
    show(rows)
    lines = ceiling(rows[-1], [float(r) for r in gpu_rate.split(",")])
    for line in lines:
        console.print(line)
    if profile:
        top_functions(profile)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ceiling-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine,
              "url": url, "broker": broker, "method": method, "chunk_size": chunk_size,
              "rows": [asdict(r) for r in rows], "ceiling": lines}  # fmt: skip
    out.write_text(json.dumps(report, indent=2))
    console.print(f"written {out}")


if __name__ == "__main__":
    typer.run(main)
