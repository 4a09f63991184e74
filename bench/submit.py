"""A million-line submit (issue 19): `producer submit` of large JSONL files, timed.

    .venv/bin/python bench/submit.py [--lines 100000,1000000] [--url URL] [--code DIR]

For each size, writes a JSONL file of short reviews (one bad line in every 10,000), runs
`producer submit FILE --json` in a process of its own against the database at ``--url``
(default: a fresh SQLite file) and an embedded Redis (a queue nobody consumes, emptied
afterwards), and prints: wall time, documents registered and enqueued per second, the
submit process's peak RSS (its own ``ru_maxrss``, printed as it exits), the rejections
it reported, and how long
`producer status BATCH` takes (a process of its own: its start-up included) and the
status query alone. ``--code DIR`` runs another checkout's producer (e.g. main's) in the
same run, for a before/after on the same machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer

from db.batches import status_counts
from db.session import migrate, session_scope
from producer.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
# The producer's own peak RSS, printed on stderr as it exits (typer ends in sys.exit).
RUN = (
    "import atexit, resource, sys; from producer.cli import main; sys.argv[0] = 'producer'; "
    "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF)"
    ".ru_maxrss, file=sys.stderr)); main()"
)


def write_file(path: Path, lines: int) -> None:
    with path.open("w") as out:
        for n in range(1, lines + 1):
            if n % 10_000 == 5_000:
                out.write("{a bad line\n")
            else:
                text = f"review {n}: the film was {'good' if n % 3 else 'dull'} and long"
                out.write(json.dumps({"id": f"r{n}", "text": text, "gold": n % 2}) + "\n")


def producer(code: Path, env: dict[str, str], *args: str) -> tuple[float, int, str, str]:
    """Runs ``producer ARGS`` with ``code`` first on the path: seconds, peak RSS in MB
    (of this child alone: each run is a fresh process), stdout, stderr."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", RUN, *args], env={**env, "PYTHONPATH": str(code)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = child.communicate()
    seconds = time.perf_counter() - started
    peak = next(int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK_RSS"))
    return seconds, peak // 1024, out, err


def main(
    lines: str = typer.Option("100000,1000000", help="File sizes, comma-separated."),
    url: str | None = typer.Option(None, help="Database URL (default: a fresh SQLite file)."),
    code: Path = typer.Option(ROOT, help="The checkout whose producer runs."),
) -> None:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"submit bench, {machine}, code {code}")
    with tempfile.TemporaryDirectory(prefix="explainq-submit-") as tmp:
        home = Path(tmp)
        database = url or f"sqlite:///{home / 'submit.db'}"
        migrate(database)
        redis = EmbeddedRedis().start()
        model = home / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINQ_")}
        env |= {"EXPLAINQ_HOME": str(home), "EXPLAINQ_DATABASE_URL": database,
                "EXPLAINQ_BROKER_URL": redis.url, "EXPLAINQ_MODEL": str(model),
                "EXPLAINQ_QUEUE": "bench-submit"}  # fmt: skip
        try:
            for size in (int(n) for n in lines.split(",")):
                path = home / f"{size}.jsonl"
                write_file(path, size)
                seconds, peak, out, err = producer(code, env, "submit", str(path), "--json")
                summary = json.loads(out)
                accepted = summary["accepted"]
                status_s, _, status_out, _ = producer(code, env, "status", summary["batch_id"])
                started = time.perf_counter()
                with session_scope(database) as session:
                    counts = status_counts(session, summary["batch_id"])
                query_ms = (time.perf_counter() - started) * 1000
                rejected = sum(1 for line in err.splitlines() if line.startswith("rejected"))
                print(json.dumps({
                    "lines": size, "accepted": accepted, "rejected_printed": rejected,
                    "tasks": summary["tasks"], "seconds": round(seconds, 1),
                    "docs_per_second": round(accepted / seconds),
                    "peak_rss_mb": peak, "status_command_s": round(status_s, 2),
                    "status_query_ms": round(query_ms, 1),
                    "pending": sum(counts.values()), "status_out": status_out.strip()[:80],
                }))  # fmt: skip
                redis_flush(redis.url)
        finally:
            redis.stop()


def redis_flush(url: str) -> None:
    import redis as redis_client

    redis_client.Redis.from_url(url).flushdb()


if __name__ == "__main__":
    typer.run(main)
